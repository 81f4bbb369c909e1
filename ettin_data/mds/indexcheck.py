"""Check an MDS ``index.json`` someone else wrote before anything reads or links its files.

Every shard file an index names must lie inside the folder that holds the index: a relative path, no
``..``, no absolute path, and (after following symlinks) still inside that folder's own resolved
location, so a hostile or edited index can never make a stage read, link over or delete a file
outside the dataset. Sizes and sample counts are non-negative integers, raw/zip names agree with the
compression, column encodings are known ones and the keys readers use are present. Each problem is
one :class:`InputError` line naming the index file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..dataset import INDEX
from ..errors import InputError

__all__ = ["check_index", "check_member", "KNOWN_ENCODINGS", "UnsafePath"]


class UnsafePath(InputError):
    """An index names a file outside its folder: the whole run stops before anything is read or written."""

_NUMERIC = {"int", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
            "float16", "float32", "float64"}
# the encodings mosaicml-streaming 0.13 can decode
KNOWN_ENCODINGS = _NUMERIC | {"str", "bytes", "json", "pkl", "str_int", "str_float", "str_decimal", "pil", "jpeg",
                              "jpegarray", "png", "list[pil]", "list[jpeg]", "list[png]", "ndarray"}
_NDARRAY_DTYPES = _NUMERIC - {"int"}
_FIX = "the index was edited or not written by an MDS writer; rewrite it (rerun the stage that made it)"


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _known(enc: Any) -> bool:
    if not isinstance(enc, str):
        return False
    if not enc.startswith("ndarray:"):
        return enc in KNOWN_ENCODINGS
    parts = enc.split(":")
    if len(parts) > 3 or parts[1] not in _NDARRAY_DTYPES:
        return False
    return len(parts) == 2 or all(p.isdigit() and int(p) > 0 for p in parts[2].split(","))


def check_member(folder: Path, name: Any, where: str) -> Path:
    """The path of file ``name`` of ``folder``; :class:`UnsafePath` when it is not a relative path that stays
    inside ``folder`` (a file that is a symlink must point inside the folder it is listed in)."""
    _check_member(str(folder), name, where)
    return Path(folder) / name


def _check_member(folder: str, name: Any, where: str) -> None:
    # plain strings, no Path objects: every index read checks every file name it lists, and planning a
    # 1,000-unit dataset reads ~10 indexes per unit (Path parsing was most of read_index's time)
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise UnsafePath(f"{where}: file name {name!r} is not a relative file name; {_FIX}")
    if name.startswith("/") or os.path.isabs(name):  # (PurePosixPath(name).is_absolute() is the first test)
        raise UnsafePath(f"{where}: file name {name!r} is an absolute path (outside the dataset); {_FIX}")
    if any(p in ("..", ".", "") for p in name.split("/")):
        raise UnsafePath(f"{where}: file name {name!r} contains '..' or empty parts (leaves its folder); {_FIX}")
    path = os.path.join(folder, name)
    if not os.path.islink(path):  # a plain file (or none) in a folder of the dataset: inside by construction
        return
    try:  # a symlinked unit folder is followed; a symlinked file must stay inside the folder it is listed in
        parent, real = Path(path).parent.resolve(), Path(path).resolve()
    except (OSError, RuntimeError):
        raise UnsafePath(f"{where}: file {name!r} is a symlink loop; {_FIX}") from None
    if not real.is_relative_to(parent):
        raise UnsafePath(f"{where}: file {name!r} is a symlink to {real}, outside {parent}; "
                         "copy the file into the dataset instead of linking it")


def _file_info(folder: str, info: Any, label: str, where: str) -> str:
    if not isinstance(info, dict):
        raise InputError(f"{where}: {label} is not an object; {_FIX}")
    if "basename" not in info or "bytes" not in info:
        missing = [k for k in ("basename", "bytes") if k not in info]
        raise InputError(f"{where}: {label} has no {', '.join(missing)}; {_FIX}")
    if not _is_count(info["bytes"]):
        raise InputError(f"{where}: {label}.bytes is {info['bytes']!r}, not a non-negative integer; {_FIX}")
    hashes = info.get("hashes")
    if hashes is not None and not (isinstance(hashes, dict) and all(isinstance(v, str) for v in hashes.values())):
        raise InputError(f"{where}: {label}.hashes is not an object of hex strings; {_FIX}")
    _check_member(folder, info["basename"], f"{where}: {label}")
    return info["basename"]


_REQUIRED = ("column_encodings", "column_names", "column_sizes", "raw_data", "samples")


def check_index(index: Any, folder: str | Path, path: str | Path | None = None) -> dict[str, Any]:
    """Check a loaded index of ``folder`` (see the module doc); returns it unchanged."""
    folder = str(folder)
    path = path or os.path.join(folder, INDEX)
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
        raise InputError(f"{path} is not an MDS index (no 'shards' list)")
    seen: dict[str, int] = {}
    for i, shard in enumerate(index["shards"]):
        where = f"{path}: shard {i}"
        if not isinstance(shard, dict) or shard.get("format") != "mds":
            raise InputError(f"{path}: shard {i} is not an MDS shard entry")
        missing = [k for k in _REQUIRED if k not in shard]
        if missing:
            raise InputError(f"{where} has no {', '.join(missing)}; {_FIX}")
        if not _is_count(shard["samples"]):
            raise InputError(f"{where}: samples is {shard['samples']!r}, not a non-negative integer; {_FIX}")
        names, encs, sizes = shard["column_names"], shard["column_encodings"], shard["column_sizes"]
        if not (isinstance(names, list) and isinstance(encs, list) and isinstance(sizes, list)
                and len(names) == len(encs) == len(sizes) and all(isinstance(n, str) for n in names)):
            raise InputError(f"{where}: column_names, column_encodings and column_sizes do not match; {_FIX}")
        for n, e, s in zip(names, encs, sizes, strict=True):
            if not _known(e):
                raise InputError(f"{where}: column {n!r} has unknown encoding {e!r} (known: "
                                 f"{', '.join(sorted(KNOWN_ENCODINGS))}, ndarray:DTYPE[:SHAPE]); {_FIX}")
            if s is not None and not _is_count(s):
                raise InputError(f"{where}: column {n!r} has size {s!r}; {_FIX}")
        raw = _file_info(folder, shard["raw_data"], "raw_data", where)
        comp, zip_info = shard.get("compression"), shard.get("zip_data")
        if comp is not None and not isinstance(comp, str):
            raise InputError(f"{where}: compression {comp!r} is not a string; {_FIX}")
        if (comp is None) != (zip_info is None):
            raise InputError(f"{where}: compression is {comp!r} but zip_data is "
                             f"{'missing' if zip_info is None else 'set'}; {_FIX}")
        files = [raw]
        if zip_info is not None:
            z = _file_info(folder, zip_info, "zip_data", where)
            if not z.startswith(raw + "."):
                raise InputError(f"{where}: zip_data {z!r} is not the compressed name of raw_data {raw!r}; {_FIX}")
            files.append(z)
        for f in files:
            if f in seen:
                raise InputError(f"{where}: file {f!r} is also named by shard {seen[f]}; {_FIX}")
            seen[f] = i
    return index
