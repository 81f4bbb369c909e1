"""Creating files inside an output folder: the one helper every writer uses, and the sweep of stale temporaries.

Every file ettin-data writes in an output (shards, indexes, ``.done``, metadata, settings, the unit record,
``tokenizer.json``, dataset state, run logs, flat numpy files) is created here, and never through a link:

- :func:`atomic_file` writes a temporary sibling created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (a name
  planted in advance is never opened, whatever it points to), then renames it over the final name. A rename
  replaces a link instead of writing through it; a final name that *is* a symbolic link is refused
  (:class:`LinkRefused`, one line) before anything is written.
- :func:`new_file` creates a file (a shard) the same way; an existing one is unlinked first, never written into
  (it may be a hard link shared with another dataset).

Temporary names end in ``.ettin-tmp`` (``.<name>.<pid>-<random>.ettin-tmp``), so that :func:`scan` can remove
the ones a killed run left behind — and only those, plus the names older versions used and unfinished unit
folders (``.<unit>.partial``) — when a run starts and holds its output alone.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .dataset import LOG_DIR
from .errors import ConfigError

__all__ = ["LinkRefused", "TMP_SUFFIX", "refuse_link", "atomic_file", "write_bytes", "copy_file", "new_file",
           "is_temporary", "scan"]

TMP_SUFFIX = ".ettin-tmp"
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# names earlier versions gave their temporaries: .index.json.tmp, ..done.tmp, .tokenizer.json.1234.tmp,
# .tokens.npy.tmp; and unit folders under construction: .split_00003.partial
_LEGACY = re.compile(r"^\.(\.done|[\w.-]+\.(json|jsonl|npy|gz))(\.\d+)?\.tmp$")
_PARTIAL = re.compile(r"^\..+\.partial$")


class LinkRefused(ConfigError):
    """A file ettin-data would create in an output is a symbolic link (planted there): refused, exit 2."""


def refuse_link(path: Path) -> None:
    """Raise :class:`LinkRefused` when ``path`` is a symbolic link (it is never followed, nor replaced)."""
    if path.is_symlink():
        raise LinkRefused(f"{path} is a symbolic link; ettin-data never writes through links in an output "
                          "(it could change a file outside it): remove the link, or choose another output folder")


def _tmp(path: Path) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}"


def _open_new(path: Path, mode: str) -> IO[Any]:
    try:
        fd = os.open(path, _NEW, 0o666)
    except FileExistsError:
        refuse_link(path)
        raise
    except OSError as e:
        if path.is_symlink():  # ELOOP: O_NOFOLLOW met a link
            refuse_link(path)
        raise e
    return os.fdopen(fd, mode)


def new_file(path: str | Path, mode: str = "wb") -> IO[Any]:
    """Create ``path`` for writing, never through a link and never into an existing file: an existing file's
    name is removed first (it may be a hard link that another dataset shares)."""
    path = Path(path)
    try:
        return _open_new(path, mode)
    except FileExistsError:
        path.unlink()
        return _open_new(path, mode)


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb", *, fsync: bool = True) -> Iterator[IO[Any]]:
    """Yield a new temporary file beside ``path``; on success it is flushed (``fsync``: to disk) and renamed
    to ``path``, so readers see the old file or the whole new one; on error it is removed."""
    path = Path(path)
    refuse_link(path)
    tmp = _tmp(path)
    f = _open_new(tmp, mode)
    try:
        with f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        refuse_link(path)  # planted while we wrote: still not replaced
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is None:  # a failed write (disk full, file too large) names the file being written
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> None:
    with atomic_file(path, fsync=fsync) as f:
        f.write(data)


def copy_file(src: str | Path, dst: str | Path) -> None:
    """Copy ``src``'s bytes to ``dst`` atomically (``dst`` never followed if it is a link)."""
    with open(src, "rb") as fin, atomic_file(dst) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def is_temporary(name: str) -> bool:
    """A temporary file name of this tool (current or earlier versions)."""
    return (name.startswith(".") and name.endswith(TMP_SUFFIX)) or bool(_LEGACY.match(name))


def scan(root: str | Path, remove: bool) -> tuple[list[str], list[str]]:
    """Walk an output once (links never followed): the symbolic links under ``root`` (an output holds none), and
    with ``remove`` the temporaries and unfinished unit folders (``.*.partial``) stopped runs left, removed
    (only for a run that holds the output alone; run logs are left alone). Returns (links, removed)."""
    root = Path(root)
    links: list[str] = []
    removed: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        links += [str(d / n) for n in (*dirnames, *filenames) if (d / n).is_symlink()]
        partial = [n for n in dirnames if _PARTIAL.match(n) and not (d / n).is_symlink()]
        dirnames[:] = [n for n in dirnames if n != LOG_DIR and n not in partial]
        if not remove:
            continue
        for name in partial:
            shutil.rmtree(d / name, ignore_errors=True)
            removed.append((d / name).relative_to(root).as_posix())
        for name in filenames:
            if is_temporary(name) and stat.S_ISREG(os.lstat(d / name).st_mode):
                (d / name).unlink(missing_ok=True)
                removed.append((d / name).relative_to(root).as_posix())
    return links, removed
