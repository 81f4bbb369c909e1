"""Units of work and their crash-safe output folders (used by the framework, ``worker.py``; never by a stage).

A task writes one output folder (``OUTPUT/<task.name>``). It is built in a temporary sibling
(``.<name>.partial``), renamed into place, and marked finished by a ``.done`` file written last
(holding the task's stats). A folder without ``.done`` is unfinished and is redone on the next run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dataset import DONE
from .errors import EttinError
from .jsonio import write_json_atomic
from .mds import INDEX, read_index
from .stats import Stats

__all__ = ["Task", "DONE", "output_name", "atomic_dir", "mark_done", "is_done", "read_done", "clear", "empty"]


@dataclass(frozen=True)
class Task:
    """One unit of work. ``name`` is its output folder relative to the output root (posix path);
    ``source`` its input (a unit folder or a file); ``params`` what else the stage needs for it: a small frozen
    dataclass of the stage's own (picklable), or None."""

    name: str
    source: str = ""
    params: Any = None


def output_name(root: Path, rel: str, many: bool) -> str:
    """The output unit name of input unit ``rel`` of dataset ``root``: the same relative name; with
    several inputs (``many``) prefixed by the input folder's name; a dataset that is itself one unit
    (``rel == ""``) is named after its folder."""
    name = rel or root.resolve().name
    return f"{root.resolve().name}/{name}" if many and rel else name


def _partial(final: Path) -> Path:
    return final.parent / f".{final.name}.partial"


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``final`` (on error it is removed)."""
    final = Path(final)
    tmp = _partial(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove(final)
    os.replace(tmp, final)


def clear(final: str | Path) -> None:
    """Remove an output folder (finished or not) and its temporary sibling."""
    final = Path(final)
    shutil.rmtree(_partial(final), ignore_errors=True)
    _remove(final)


def empty(folder: str | Path) -> None:
    """Remove everything inside ``folder`` (a unit folder a stage starts again, e.g. tokenize's redo)."""
    for p in Path(folder).iterdir():
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def _remove(final: Path) -> None:
    if final.is_symlink() or final.is_file():
        final.unlink()
    elif final.exists():
        shutil.rmtree(final)


def mark_done(final: str | Path, stats: Stats) -> None:
    """Write ``.done`` (the unit is finished). A unit whose ``index.json`` holds another number of samples
    than the stage counted (``samples``, or ``documents_written``) is an error, never marked done."""
    _check_samples(Path(final), stats)
    write_json_atomic(Path(final) / DONE, stats.to_json())


def _check_samples(final: Path, stats: Stats) -> None:
    key = "samples" if "samples" in stats.counts else "documents_written"
    if key not in stats.counts or not (final / INDEX).is_file():
        return
    written = read_index(final).samples
    if written != stats[key]:
        raise EttinError(f"{final}: accounting does not close: index.json holds {written} samples, the stage "
                         f"counted {stats[key]} ({key}); this is a bug, the unit is not marked done")


def is_done(final: str | Path) -> bool:
    """A unit is finished when ``.done`` exists and every shard file its index names is present with the
    recorded size (a cheap stat, not a rehash): a deleted or truncated shard makes the unit run again."""
    final = Path(final)
    if not (final / DONE).is_file():
        return False
    if not (final / INDEX).is_file():
        return True
    try:
        shards = read_index(final).shards
    except EttinError:
        return False
    return all(s.on_disk(final) for s in shards)


def read_done(final: str | Path) -> Stats:
    import json

    return Stats.from_json(json.loads((Path(final) / DONE).read_text()))
