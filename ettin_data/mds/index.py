"""MDS indexes: the typed entries of ``index.json`` (:class:`ShardEntry`, its files as :class:`FileInfo`, like
streaming's reader config), reading a checked index, finding the units of a dataset and merging their indexes
into a root index. The only code that reads ``raw_data``/``zip_data``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..dataset import INDEX
from ..errors import InputError
from ..jsonio import write_json_atomic
from .indexcheck import UnsafePath, check_index

__all__ = ["INDEX", "FileInfo", "ShardEntry", "Index", "read_index", "is_root_index", "find_units",
           "write_root_index"]

@dataclass(frozen=True)
class FileInfo:
    """One file of a shard as its index records it: name (relative to the index's folder), size, hashes."""

    basename: str
    bytes: int
    hashes: dict[str, str]

    @classmethod
    def of(cls, d: dict[str, Any] | None) -> FileInfo | None:
        return None if d is None else cls(d["basename"], d["bytes"], d.get("hashes") or {})

    def size_matches(self, folder: Path) -> bool:
        """The file is in ``folder`` with its recorded size (a stat, not a read)."""
        try:
            return os.stat(os.path.join(folder, self.basename)).st_size == self.bytes
        except OSError:
            return False


@dataclass(frozen=True)
class ShardEntry:
    """One shard of an index: its sample count, columns and compression, the raw file (``raw``) and, when
    compressed, the compressed one (``zip``); ``data`` is the entry as stored (written back unchanged)."""

    samples: int
    column_names: list[str]
    column_encodings: list[str]
    column_sizes: list[int | None]
    compression: str | None
    raw: FileInfo
    zip: FileInfo | None
    data: dict[str, Any]

    @classmethod
    def of(cls, d: dict[str, Any]) -> ShardEntry:
        return cls(int(d["samples"]), d["column_names"], d["column_encodings"], d["column_sizes"],
                   d.get("compression"), FileInfo.of(d["raw_data"]), FileInfo.of(d.get("zip_data")), d)

    @property
    def columns(self) -> dict[str, str]:
        """Column name -> encoding."""
        return dict(zip(self.column_names, self.column_encodings, strict=True))

    @property
    def files(self) -> list[FileInfo]:
        """The files that may hold the shard: raw, then compressed."""
        return [self.raw] if self.zip is None else [self.raw, self.zip]

    @property
    def stored(self) -> FileInfo:
        """The file a writer of this entry leaves on disk (the compressed one when compressed)."""
        return self.zip or self.raw

    def present(self, folder: str | Path) -> list[FileInfo]:
        """The files of this shard that exist in ``folder`` (raw first)."""
        return [f for f in self.files if os.path.exists(os.path.join(folder, f.basename))]

    def on_disk(self, folder: str | Path) -> bool:
        """Some file of this shard is in ``folder`` with its recorded size."""
        return any(f.size_matches(Path(folder)) for f in (self.zip, self.raw) if f is not None)

    def under(self, prefix: str) -> dict[str, Any]:
        """The stored entry with its files named from ``prefix``'s parent (a root index over units)."""
        d = json.loads(json.dumps(self.data))
        for key in ("raw_data", "zip_data"):
            if d.get(key):
                d[key]["basename"] = f"{prefix}/{d[key]['basename']}"
        return d

    @property
    def unit(self) -> str:
        """The folder of the shard's files relative to the index ("" in a unit's own index)."""
        return self.raw.basename.rpartition("/")[0]


@dataclass(frozen=True)
class Index:
    """A checked ``index.json``: its shards, typed; ``data`` is the file's content."""

    shards: list[ShardEntry]
    data: dict[str, Any]

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def is_root(self) -> bool:
        return any("/" in s.raw.basename for s in self.shards)


def is_root_index(index: Any) -> bool:
    """Whether a loaded (not yet checked) index is a root index: it names its shards by nested paths
    (``unit/shard.00000.mds``); a unit's index names them by file name."""
    shards = index.get("shards") if isinstance(index, dict) else None
    return isinstance(shards, list) and any(
        "/" in str((s.get("raw_data") or {}).get("basename", "")) for s in shards if isinstance(s, dict))


def read_index(dirname: str | Path) -> Index:
    """Read and check an ``index.json``; errors name the file and what is wrong."""
    path = Path(dirname) / INDEX
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path} does not exist (not an MDS folder?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid JSON ({e}); rerun the stage that wrote it") from None
    except RecursionError:
        raise InputError(f"{path} is nested too deeply to be an MDS index; rerun the stage that wrote it") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not an MDS index file") from None
    check_index(index, dirname, path)
    return Index([ShardEntry.of(s) for s in index["shards"]], index)


def find_units(root: str | Path) -> list[str]:
    """Relative paths (posix, sorted) of the unit folders under ``root``: folders whose index.json lists
    shards by plain file names. Root indexes (nested basenames) and hidden/temporary folders are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder")
    found = []
    seen: set[str] = set()
    # symlinked unit folders are followed (never skipped silently); a symlink loop is walked once
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if INDEX in filenames:
            try:
                index = read_index(dirpath)
            except UnsafePath:  # names files outside the dataset: nothing may run on it
                raise
            except InputError:  # a broken index: a leaf folder is a (broken) unit that fails on its own
                if not dirnames:  # when the folder has units below, it was a root index: look below
                    rel = Path(dirpath).relative_to(root).as_posix()
                    found.append("" if rel == "." else rel)
                continue
            if not index.is_root:
                rel = Path(dirpath).relative_to(root).as_posix()
                found.append("" if rel == "." else rel)
                dirnames[:] = []
    return sorted(found)


def write_root_index(root: str | Path, units: list[str]) -> dict[str, Any]:
    """Merge the unit indexes into ``root/index.json`` with nested basenames (any depth)."""
    root = Path(root)
    shards = [s.under(unit) for unit in units for s in read_index(root / unit).shards]
    index = {"shards": shards, "version": 2}
    write_json_atomic(root / INDEX, index, indent=None)
    return index
