"""Output safety, the checks behind the workspace's operations (``workspace.py``; ``remote.py`` for object storage).

- An output folder must not be an input, lie inside one, or hold one (refused even with --overwrite:
  rewriting it would destroy the input); an output that is a file is refused; the folders a stage writes
  (``-o`` and its extra outputs, e.g. prepare's ``--keep-text``) must be separate.
- A stage deletes or replaces only units its own runs wrote here: their names are recorded in
  ``OUTPUT/.ettin_units.json`` before they are written; MDS units found under the output that are not
  recorded (another dataset) stop the run with one line naming them.
- One lock per output: an advisory ``fcntl.flock`` on ``OUTPUT/.ettin_lock``, exclusive for a plain run and
  shared by the ranks of a ``--rank/--world`` run, so a plain run and a rank run exclude each other while the
  ranks of one run share the output. Each rank also holds ``.ettin_lock.rank<R>`` (the same rank twice is
  refused) and ``.ettin_lock.world<W>`` (ranks of another ``--world`` are refused). The kernel releases them
  when the process ends, so a crash never leaves a stale lock; a process forked from the holder (a pool
  worker) closes its copies at once and so never holds it. A run learns whether it holds the output alone
  (a plain run always; a rank when no other rank runs): only then may it sweep stale temporaries.
  Lock files are opened without following links and must be plain files with one name (a planted link or
  hard link is refused: the lock writes its holder into the file).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

from .dataset import SETTINGS
from .errors import ConfigError
from .safefile import LinkRefused, write_bytes
from .storage import is_remote

__all__ = ["check_overlap", "owned_units", "record_units", "output_lock", "units_under", "UNITS_FILE", "LOCK_FILE"]

UNITS_FILE = ".ettin_units.json"
LOCK_FILE = ".ettin_lock"
_HELD: set[int] = set()  # the lock files' descriptors this process holds


def _forget_locks() -> None:
    """In a forked child: close the inherited lock descriptors (a lock lives until its last descriptor is
    closed, so a worker that kept them would hold the output after its driver released it)."""
    for fd in _HELD:
        with suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_forget_locks)


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def _inside(a: str, b: str) -> bool:
    """Is ``a`` the folder ``b`` or inside it (local paths after resolving links, or URLs by prefix)?"""
    if is_remote(a) != is_remote(b):
        return False
    if is_remote(a):
        return (a.rstrip("/") + "/").startswith(b.rstrip("/") + "/")
    return Path(a).resolve().is_relative_to(Path(b).resolve())


def check_overlap(outputs: dict[str, str], inputs: list[str]) -> None:
    """ConfigError (exit 2) when an output is a file, overlaps an input (even with --overwrite), or two outputs
    of the run overlap. Folders are local paths or object-store URLs, as the user gave them."""
    for opt, out in outputs.items():
        if not is_remote(out) and Path(out).exists() and not Path(out).is_dir():
            raise ConfigError(f"output {out} is a file, not a folder; choose a folder for {_flag(opt)}")
        for i in inputs:
            if _inside(i, out) and _inside(out, i):
                raise ConfigError(f"output {out} is the input {i}: writing it would destroy the input; "
                                  "choose a new output folder")
            if _inside(i, out) or _inside(out, i):
                inner, outer = (i, out) if _inside(i, out) else (out, i)
                raise ConfigError(f"output {out} and input {i} overlap ({inner} lies inside {outer}); "
                                  "choose an output folder outside the input")
    opts = list(outputs)
    for k, a in enumerate(opts):
        for b in opts[k + 1:]:
            if _inside(outputs[a], outputs[b]) or _inside(outputs[b], outputs[a]):
                raise ConfigError(f"{_flag(a)} and {_flag(b)} must be separate folders ({outputs[a]} and "
                                  f"{outputs[b]} overlap); choose distinct folders")


def _mine(unit: str, names: set[str]) -> bool:
    return unit in names or any(unit.startswith(n + "/") or n.startswith(unit + "/") for n in names)


def _same_dataset(out: Path, stage: str, inputs: list[str]) -> bool:
    """An output of an earlier version (no record): its units are this dataset's when its recorded
    settings name the same stage and inputs."""
    try:
        old = json.loads((out / SETTINGS).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(old, dict) and old.get("stage") == stage and old.get("inputs") == inputs


def owned_units(out: Path, shown: str, existing: list[str], stage: str, inputs: list[str]) -> set[str]:
    """The units this dataset's runs wrote into an output (``out``: where its record and settings are, ``shown``:
    its name for messages). ConfigError when ``existing`` (the MDS units under it) holds others: another
    dataset's, never replaced nor deleted."""
    rec = out / UNITS_FILE
    recorded: set[str] | None = None
    if rec.is_file():
        try:
            recorded = set(json.loads(rec.read_text())["units"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"{shown}/{UNITS_FILE} is damaged; delete it only if every unit under {shown} was "
                              "written by ettin-data runs into this folder") from None
    if recorded is None:
        recorded = set(existing) if _same_dataset(out, stage, inputs) else set()
    foreign = [u or "." for u in existing if not _mine(u, recorded)]
    if foreign:
        listed = ", ".join(foreign[:5]) + (f" (+{len(foreign) - 5} more)" if len(foreign) > 5 else "")
        raise ConfigError(f"{shown} holds MDS units this dataset did not write ({listed}); they are not "
                          "deleted: choose an empty or new output folder")
    return recorded


def record_units(out: Path, names: set[str]) -> None:
    """Record ``names`` as this dataset's units (before any of them is written)."""
    out.mkdir(parents=True, exist_ok=True)
    write_bytes(out / UNITS_FILE, json.dumps({"units": sorted(names)}, indent=1).encode(), fsync=False)


# ---------------------------------------------------------------- the lock

def _busy(out: Path, path: Path) -> ConfigError:
    holder = ""
    with suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
        finally:
            os.close(fd)
    return ConfigError(f"{out} is in use by another run ({holder or 'a run that just finished'}; lock {path}); "
                       "wait for it to finish or choose another output folder")


def _open(path: Path) -> int:
    """Open (create) a lock file without following a link; refuse anything but a plain file with one name."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP or path.is_symlink():
            raise LinkRefused(f"{path} is a symbolic link; ettin-data never writes through links in an output "
                              "(it could change a file outside it): remove the link") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        what = "a hard link to another file" if stat.S_ISREG(st.st_mode) else "not a plain file"
        raise LinkRefused(f"{path} is {what}; the lock writes its holder into it: remove it")
    return fd


def _take(path: Path, op: int) -> int | None:
    """The fd of ``path`` locked with ``op`` (blocking unless ``op`` has LOCK_NB), or None when it is held."""
    import fcntl

    for _ in range(20):  # its last holder may remove the file between our open and our lock: open it again
        fd = _open(path)
        try:
            fcntl.flock(fd, op)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.fstat(fd).st_ino == os.lstat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            _HELD.add(fd)
            return fd
        os.close(fd)
    return None


def _note(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{text} on {socket.gethostname()}\n".encode(), 0)


def _release(fd: int, path: Path) -> None:
    """Unlock; the last holder removes the file (no debris), the others leave it to the next one."""
    import fcntl

    with suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino == os.lstat(path).st_ino:
            path.unlink()
    _HELD.discard(fd)
    os.close(fd)


@contextmanager
def output_lock(out: Path, rank: int = 0, world: int = 1, alone: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Hold the lock of the output folder ``out`` for the run (see the module docstring); a second run fails at
    once naming the holder. ``alone()`` runs first when no other run or rank uses the output (a plain run
    always; a rank when it is the only one running): the sweep of stale temporaries."""
    import fcntl

    nb = fcntl.LOCK_NB
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as held:
        if created:  # a run refused before it wrote anything leaves no folder behind
            held.callback(lambda: out.rmdir() if not any(out.iterdir()) else None)
        def take(path: Path, op: int) -> int | None:
            fd = _take(path, op)
            if fd is not None:
                held.callback(_release, fd, path)
            return fd

        main = out / LOCK_FILE
        who = f"pid {os.getpid()}" + (f" (rank {rank} of {world})" if world > 1 else "")
        fd = take(main, (fcntl.LOCK_EX if world == 1 else fcntl.LOCK_SH) | nb)  # ranks share it, a plain run not
        if fd is None:
            raise _busy(out, main)
        _note(fd, who)
        if world == 1:
            alone()
            yield
            return
        mine = out / f"{LOCK_FILE}.rank{rank}"
        fd = take(mine, fcntl.LOCK_EX | nb)
        if fd is None:
            raise _busy(out, mine)
        _note(fd, who)
        ours = out / f"{LOCK_FILE}.world{world}"
        wfd = take(ours, fcntl.LOCK_EX | nb)  # exclusive: no other rank of this --world runs
        first = wfd is not None
        if wfd is None:
            wfd = take(ours, fcntl.LOCK_SH)  # waits only while a rank that found itself alone sweeps
        for other in sorted(out.glob(f"{LOCK_FILE}.world*")):
            w = other.name[len(LOCK_FILE) + len(".world"):]
            if other == ours or not w.isdigit():
                continue
            probe = _take(other, fcntl.LOCK_EX | nb)
            if probe is None:
                raise ConfigError(f"{out} is in use by the ranks of a --world {w} run (this one has --world {world}; "
                                  f"lock {other}); let them finish, or give every rank the same --world")
            _release(probe, other)
        if first:
            alone()
            fcntl.flock(wfd, fcntl.LOCK_SH)  # the other ranks of this run may come in now
        yield


def units_under(out: Path) -> list[str]:
    """The MDS units under a local output folder (none when it does not exist)."""
    from .mds import find_units  # local: mds is heavy-ish and not needed for the overlap checks

    return find_units(out) if out.is_dir() else []
