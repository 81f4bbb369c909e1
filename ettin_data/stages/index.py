"""``index FOLDER``: rebuild the root ``index.json`` over every MDS unit below a folder, after datasets were added
or removed (the seed's ``make_recursive_root.py``; mosaicml-streaming's ``merge_index`` handles one level only).

Every ``index.json`` below FOLDER is read and checked first (``mds/indexcheck.py``: shard names inside their folder,
sizes and counts sane) and every unit must have the same columns (one root index is one dataset), so nothing
is written when one is unsafe, broken or different. Then, deepest first, each folder
below FOLDER that already holds a root index (a dataset inside the collection) gets it rebuilt over its own units
(removed when none is left), and FOLDER's root index is written last, every file atomically. A ``stats.json``
next to a rebuilt root index whose sample or token count no longer holds is rewritten with the new counts
(``samples``, ``total_tokens_written``, ``units``). Units of an ettin-data output (a folder with its recorded
settings) must be finished (``.done``); units another tool wrote are taken as they are. FOLDER's run lock is held
while it writes, so a stage writing into FOLDER and ``index`` never run at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..config import IndexConfig
from ..dataset import DONE, INDEX, SETTINGS, SPLITS, STATS_FILE
from ..errors import InputError
from ..mds import find_units, read_index, write_root_index
from ..stage import Command
from ..storage import is_url
from ..tokenstats import dataset_totals, write_dataset_stats

__all__ = ["Index", "rebuild", "plan_folder"]


def _folder(path: str) -> Path:
    if is_url(path):
        raise InputError(f"{path}: index rebuilds local folders; download the dataset (or mount it) first")
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    return folder


def _nested_roots(folder: Path) -> list[str]:
    """Folders strictly below ``folder`` that hold a root index (relative, posix), deepest first."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if dirpath == str(folder) or INDEX not in filenames:
            continue
        if read_index(dirpath).is_root:
            found.append(Path(dirpath).relative_to(folder).as_posix())
        else:
            dirnames[:] = []  # a unit: nothing below it
    return sorted(found, key=lambda r: (-r.count("/"), r))


def _check_finished(folder: Path, units: list[str]) -> None:
    """A unit of an ettin-data output (an ancestor up to ``folder`` holds its recorded settings) must be done."""
    owned: dict[Path, bool] = {}

    def in_output(d: Path) -> bool:
        if d not in owned:
            owned[d] = (d / SETTINGS).is_file() or (d != folder and d.parent != d and in_output(d.parent))
        return owned[d]

    for u in units:
        unit = folder / u
        if in_output(unit.parent) and not (unit / DONE).is_file():
            raise InputError(f"{unit} is not finished (no {DONE}; it belongs to an ettin-data output that a run is "
                             "writing or that was interrupted): rerun that stage, or remove the unit, then index again")


def plan_folder(path: str) -> dict[str, Any]:
    """What ``index`` would do for one folder (every index checked; nothing written)."""
    folder = _folder(path)
    units = find_units(folder)  # reads and checks every index below (unsafe names stop here)
    if not units:
        raise InputError(f"{folder}: no MDS units below it (no index.json naming shard files)")
    if units == [""]:
        raise InputError(f"{folder / INDEX} lists its shards directly: {folder} is one MDS unit, there is nothing "
                         "to index (run index on the folder that holds it)")
    tops = {u.split("/", 1)[0] for u in units}
    if set(SPLITS) <= tops and all((folder / s / INDEX).is_file() for s in SPLITS):
        raise InputError(f"{folder} holds the splits train/ and validation/: one root index over both would mix "
                         f"them; run index on {folder / 'train'} and {folder / 'validation'}")
    _check_finished(folder, units)
    nested = _nested_roots(folder)
    shards = samples = 0
    first: tuple[str, dict[str, str]] | None = None
    for u in units:
        for s in read_index(folder / u).shards:
            shards += 1
            samples += s.samples
            cols = s.columns
            if first is None:
                first = (u, cols)
            elif cols != first[1]:
                raise InputError(f"{folder}: units {first[0]} and {u} have different columns ({first[1]} vs {cols}); "
                                 "a root index makes them one dataset: give them the same columns (ettin-data chunk "
                                 "--tokenizer T writes another tool's token data as id, input_ids, len)")
    return {"folder": str(folder), "units": len(units), "shards": shards, "samples": samples,
            "nested_root_indexes": nested, "_units": units}


def rebuild(path: str) -> dict[str, Any]:
    """Rebuild the root index of ``path`` and of the datasets below it (see the module docstring)."""
    from ..outputs import output_lock

    planned = plan_folder(path)
    folder = Path(planned["folder"])
    rebuilt, removed, stats = [], [], []
    with output_lock(folder):  # a plain run's lock: no stage writes into the folder meanwhile
        for rel in planned["nested_root_indexes"]:
            d = folder / rel
            units = find_units(d)
            if not units or units == [""]:
                (d / INDEX).unlink()
                removed.append(rel)
                continue
            write_root_index(d, units)
            rebuilt.append(rel)
            if _refresh_stats(d, units):
                stats.append(rel)
        write_root_index(folder, planned["_units"])
        if _refresh_stats(folder, planned["_units"]):
            stats.append(".")
    summary = {k: v for k, v in planned.items() if not k.startswith("_")}
    summary.update(nested_root_indexes=rebuilt, root_indexes_removed=removed, stats_rewritten=stats)
    return summary


def _refresh_stats(root: Path, units: list[str]) -> bool:
    """Rewrite ``root/stats.json`` (only when one exists) when its sample or token count no longer holds."""
    from ..sampling import dataset_units

    f = root / STATS_FILE
    if not f.is_file():
        return False
    try:
        old = json.loads(f.read_text())
    except (OSError, ValueError):
        old = None
    infos = dataset_units(root)
    new = dataset_totals(sum(u.samples for u in infos), sum(u.tokens for u in infos), len(units))
    if isinstance(old, dict) and all(old.get(k) == new[k] for k in ("samples", "total_tokens_written")):
        return False
    write_dataset_stats(root, new)
    return True


class Index(Command):
    name = "index"
    Config = IndexConfig

    def run(self, cfg: IndexConfig) -> dict[str, Any]:
        for p in cfg.inputs:  # every folder is checked before any is written
            plan_folder(p)
        done = [rebuild(p) for p in cfg.inputs]
        return {"stage": "index", **done[0]} if len(done) == 1 else {"stage": "index", "folders": done}

    def dry_run(self, cfg: IndexConfig) -> dict[str, Any]:
        return {"index": [{k: v for k, v in plan_folder(p).items() if not k.startswith("_")} for p in cfg.inputs]}

    def render(self, summary: dict[str, Any]) -> None:
        from ..report import print_summary

        for one in summary.get("folders", [summary]):
            print_summary({"stage": "index", **one})
