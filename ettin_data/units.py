"""Units of work and their crash-safe output folders.

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

from .mds import write_json_atomic
from .stats import Stats

__all__ = ["Task", "DONE", "atomic_dir", "mark_done", "is_done", "read_done", "clear"]

DONE = ".done"


@dataclass(frozen=True)
class Task:
    """One unit of work. ``name`` is its output folder relative to the output root (posix path);
    ``source`` its input (a unit folder or a file); ``params`` stage-specific, picklable extras."""

    name: str
    source: str = ""
    params: tuple[Any, ...] = ()


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


def _remove(final: Path) -> None:
    if final.is_symlink() or final.is_file():
        final.unlink()
    elif final.exists():
        shutil.rmtree(final)


def mark_done(final: str | Path, stats: Stats) -> None:
    write_json_atomic(Path(final) / DONE, stats.to_json())


def is_done(final: str | Path) -> bool:
    return (Path(final) / DONE).is_file()


def read_done(final: str | Path) -> Stats:
    import json

    return Stats.from_json(json.loads((Path(final) / DONE).read_text()))
