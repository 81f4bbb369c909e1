"""Zero-copy placement of shard files: hard links on the same filesystem, a byte copy only across
filesystems (or where the filesystem refuses links).

Sampling stages place whole input units into their output this way, so selecting, repeating
(upsampling) or re-arranging units costs no shard bytes. Shard files are never modified in place by
any stage (outputs are always new files), so sharing inodes between datasets is safe.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .mds import INDEX, read_index
from .safefile import copy_file

__all__ = ["Placed", "link_or_copy", "link_unit"]

# errors that mean "cannot hard-link here", not "something is broken"
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES}


@dataclass
class Placed:
    """What a placement did: files and bytes hard-linked vs copied."""

    linked_files: int = 0
    linked_bytes: int = 0
    copied_files: int = 0
    copied_bytes: int = 0

    def __iadd__(self, other: Placed) -> Placed:
        self.linked_files += other.linked_files
        self.linked_bytes += other.linked_bytes
        self.copied_files += other.copied_files
        self.copied_bytes += other.copied_bytes
        return self


def link_or_copy(src: str | Path, dst: str | Path) -> Placed:
    """Hard-link ``src`` to ``dst`` (replacing ``dst``); copy when linking is impossible."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    size = src.stat().st_size
    try:
        os.link(src, dst)
        return Placed(linked_files=1, linked_bytes=size)
    except OSError as e:
        if e.errno not in _NO_LINK:
            raise
    copy_file(src, dst)
    return Placed(copied_files=1, copied_bytes=size)


def link_unit(src: str | Path, dst: str | Path, extra_files: tuple[str, ...] = ()) -> Placed:
    """Place the MDS folder ``src`` at ``dst``: shard files hard-linked, ``index.json`` and the small
    ``extra_files`` (when present) copied, so editing them later never touches the input."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    placed = Placed()
    for shard in read_index(src).shards:
        present = shard.present(src)
        if not present:
            raise InputError(f"{src / shard.files[-1].basename} is missing (named in {src / INDEX})")
        for f in present:
            placed += link_or_copy(src / f.basename, dst / f.basename)
    for name in (INDEX, *extra_files):
        if (src / name).is_file():
            copy_file(src / name, dst / name)
    return placed
