"""Builders of hostile or unlucky datasets (issue 14): indexes that name files outside the dataset,
broken entries, foreign units under an output, a canary file outside every folder a command is given."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from helpers_chunks import make_chunks


def load(p: Path) -> Any:
    return json.loads(p.read_text())


def save(p: Path, obj: Any) -> None:
    p.write_text(json.dumps(obj))


def first_unit(root: Path) -> Path:
    """The first unit folder (sorted) under ``root``."""
    return sorted(p.parent for p in root.rglob("index.json") if p.parent != root and "shards" in load(p)
                  and "/" not in load(p)["shards"][0]["raw_data"]["basename"])[0]


class Canary:
    """A file outside the input and output folders; :meth:`intact` says whether it is unchanged."""

    def __init__(self, path: Path, data: bytes):
        self.path = path
        path.write_bytes(data)
        st = path.stat()
        self.state = (hashlib.sha1(data).hexdigest(), st.st_ino, st.st_nlink, st.st_mtime_ns)

    def intact(self) -> bool:
        if not self.path.is_file():
            return False
        st = self.path.stat()
        return (hashlib.sha1(self.path.read_bytes()).hexdigest(), st.st_ino, st.st_nlink, st.st_mtime_ns) == self.state


def point_outside(unit: Path, canary: Canary, absolute: bool) -> None:
    """Make the first shard of ``unit`` name the canary (absolute path or ``../`` relative), with the
    canary holding exactly that shard's bytes, so size and hash checks alone would pass."""
    idx = load(unit / "index.json")
    s = idx["shards"][0]
    key = "zip_data" if s.get("zip_data") else "raw_data"
    own = unit / s[key]["basename"]
    canary.__init__(canary.path, own.read_bytes())
    own.unlink()
    name = str(canary.path) if absolute else os.path.relpath(canary.path, unit)
    s[key]["basename"] = name
    if key == "zip_data":
        s["raw_data"]["basename"] = name.removesuffix(".zstd") if name.endswith(".zstd") else name
    save(unit / "index.json", idx)
    _drop_root_index(unit)


def _drop_root_index(unit: Path) -> None:
    for parent in unit.parents:
        f = parent / "index.json"
        if f.is_file():
            f.unlink()  # readers of the edited unit must go through the unit's own index
            break


def edit_shard(unit: Path, **changes: Any) -> None:
    """Change keys of the first shard entry of ``unit``'s index (``None`` deletes a key); dotted keys
    (``raw_data.bytes``) reach into sub-objects."""
    idx = load(unit / "index.json")
    s = idx["shards"][0]
    for key, value in changes.items():
        *path, last = key.split(".")
        d = s
        for p in path:
            d = d[p]
        if value is None:
            d.pop(last, None)
        else:
            d[last] = value
    save(unit / "index.json", idx)


def chunk_dataset(root: Path, **kw: Any) -> Path:
    make_chunks(root, n_units=kw.pop("n_units", 3), docs_per_unit=kw.pop("docs_per_unit", 8), **kw)
    return root


def copy_dataset(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
