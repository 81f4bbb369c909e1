"""A dataset's state: complete, or being written.

A run that is about to change units first marks its output incomplete (:func:`mark_incomplete`: the marker
``.ettin_incomplete`` is created, holding the stage and command line, then the root ``index.json`` files and
``ettin_meta.json`` of the root and its split folders are withdrawn, so that neither ettin-data nor another MDS
reader takes the old description for the units being rewritten); the marker is removed last, once the dataset
files are written again (:func:`mark_complete`). Every reader of a dataset calls :func:`require_complete`,
which refuses a dataset (or a split folder or unit inside one) that carries the marker, with one line saying how
to finish it. Datasets written before the marker existed count as complete.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from .dataset import INCOMPLETE, INDEX, META
from .errors import InputError
from .mds import is_root_index
from .safefile import write_bytes

__all__ = ["mark_incomplete", "mark_complete", "incomplete", "require_complete", "dataset_folders"]


def dataset_folders(out: Path) -> list[Path]:
    """The folders of a dataset that hold dataset files: the root and its split/source folders (one level)."""
    if not out.is_dir():
        return []
    return [out, *sorted(c for c in out.iterdir() if c.is_dir() and not c.is_symlink() and not c.name.startswith("."))]


def mark_incomplete(out: Path, note: dict[str, Any]) -> list[str]:
    """Mark ``out`` incomplete (``note``: stage and command of the run), then withdraw the files that describe
    it as a whole: root ``index.json`` files and ``ettin_meta.json``, at the root and in its split folders.
    Returns what was withdrawn (relative names)."""
    write_bytes(out / INCOMPLETE, (json.dumps(note, sort_keys=True, indent=1) + "\n").encode())
    gone = []
    for d in dataset_folders(out):
        f = d / INDEX
        try:
            index = json.loads(f.read_text()) if f.is_file() else None
        except (OSError, ValueError):
            index = None
        if isinstance(index, dict) and is_root_index(index):
            f.unlink()
            gone.append(f.relative_to(out).as_posix())
        if (d / META).is_file():
            (d / META).unlink()
            gone.append((d / META).relative_to(out).as_posix())
    return gone


def mark_complete(out: Path) -> None:
    """The dataset files of ``out`` are written again: remove the marker (last)."""
    (out / INCOMPLETE).unlink(missing_ok=True)


def incomplete(path: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """``(dataset root, note)`` when ``path`` or a dataset it lies in (a split folder, a unit) is marked
    incomplete."""
    path = Path(path)
    for root in (path, *path.resolve().parents):
        marker = root / INCOMPLETE
        if marker.is_symlink():  # present, but never read through a link
            return root, {}
        if marker.is_file():
            try:
                note = json.loads(marker.read_text())
            except (OSError, ValueError):
                note = {}
            return root, note if isinstance(note, dict) else {}
    return None


def require_complete(path: str | Path, shown: str | None = None) -> None:
    """Refuse (InputError, one line) a dataset that a run has not finished writing."""
    found = incomplete(path)
    if found is None:
        return
    root, note = found
    where = shown or str(path)
    stage = f"ettin-data {note['stage']}" if note.get("stage") else "ettin-data"
    argv = [a for a in note.get("argv") or [] if a != "--overwrite"]
    how = f"rerun {shlex.join(argv)} (it resumes)" if argv else f"rerun that {stage} command (it resumes)"
    inside = "" if root == Path(path) else f" (it lies in {root}, which is being written)"
    raise InputError(f"{where} is incomplete{inside}: the {stage} run writing it has not finished "
                     f"(it is still running, or it was stopped); to finish it, {how}")
