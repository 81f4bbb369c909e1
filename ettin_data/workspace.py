"""Where a run reads and writes, as the driver sees it, and the safety of its outputs: local folders.

The driver (``driver.py``) receives a :class:`Workspace` and calls every operation below at its place in the
run. The outputs are the folders the stage declares (``Stage.output_options``: ``-o``, and e.g. prepare's
``--keep-text``), each handled alike:

- ``check_overlap``: no output is a file, overlaps an input or another output (``outputs.py``);
- ``lock``: one lock per output, taken before anything is written (``outputs.output_lock``); a run that holds
  an output alone first sweeps the temporaries stopped runs left there (``safefile.scan``). Links anywhere
  in an output are refused: ettin-data writes only real files and folders there;
- ``check_units`` / ``record_units``: MDS units this dataset did not write are refused, the plan's units
  recorded before any is written;
- ``mark_incomplete`` / ``mark_complete``: the dataset state (``state.py``); ``withdraw_done``: every
  finished unit made unfinished (a settings change with ``--overwrite``: units written under other settings
  are never resumed into the new dataset);
- the storage hooks (pull/push of run files, the per-unit wrapper, publishing): no-ops for local folders.

Object storage (``s3://``, ``gs://``, ...) is the same interface over local staging folders and mirrors
(``remote.RemoteWorkspace``): its lock is an object in the bucket, and it sees the bucket's units. Which one a
run gets is decided once, where it starts (``driver.run``); stages and the driver's steps never ask whether
storage is remote.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from . import outputs as O
from . import units as U
from .dataset import LOG_DIR
from .safefile import LinkRefused, scan
from .state import mark_complete, mark_incomplete, require_complete

__all__ = ["Workspace"]


class Workspace:
    """A run on local folders: ``given`` is the config as the user gave it, ``cfg`` what stages see (the same
    here), ``outputs`` the folders the stage writes by option name (local paths)."""

    def __init__(self, given: Any, cfg: Any = None, outputs: dict[str, str] | None = None):
        self.given = given  # the config as the user gave it (URLs for remote folders)
        self.cfg = cfg if cfg is not None else given  # the same with local folders: what stages see
        self.outputs = dict(outputs or {})
        self.swept: dict[str, list[str]] = {}  # what the sweep removed, per output
        self.owned: dict[str, set[str]] = {}  # the units this dataset's runs wrote, per output (check_units)

    @property
    def output(self) -> Path:
        return Path(self.cfg.output)

    def shown(self, opt: str) -> str:
        """An output as the user named it."""
        return str(getattr(self.given, opt))

    # ---------------------------------------------------------------- inputs and units

    def require_inputs_complete(self) -> None:
        """Refuse an input dataset that a run has not finished writing (one line naming it as given)."""
        for local, given in zip(getattr(self.cfg, "inputs", ()), getattr(self.given, "inputs", ()), strict=False):
            matches = sorted(glob.glob(local)) if any(c in local for c in "*?[") else [local]  # tokenize's globs
            for m in matches:
                if Path(m).is_dir():
                    require_complete(m, shown=str(given) if m == local else m)

    def is_done(self, name: str) -> bool:
        """Has unit ``name`` been finished (by this run, an earlier one, or another rank)?"""
        return U.is_done(self.output / name)

    def refresh(self) -> None:
        """Re-read which units are done (before planning, and before deciding whether to finish)."""

    # ---------------------------------------------------------------- output safety

    def check_overlap(self) -> None:
        O.check_overlap({o: self.shown(o) for o in self.outputs}, [str(i) for i in getattr(self.given, "inputs", ())])

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold every output for the run (one lock each); sweep the outputs this run holds alone."""
        with ExitStack() as stack:
            for opt, folder in self.outputs.items():
                self._lock_one(stack, opt, Path(folder))
            yield

    def _lock_one(self, stack: ExitStack, opt: str, folder: Path) -> None:
        swept: list[bool] = []

        def alone() -> None:  # in the lock, before any other run or rank may come in
            self.swept[opt] = _scan(folder, remove=True)
            swept.append(True)

        stack.enter_context(O.output_lock(folder, self.cfg.rank, self.cfg.world, alone))
        if not swept:
            _scan(folder, remove=False)

    def check_units(self, stage: str) -> None:
        """Refuse MDS units under an output that this dataset's runs did not write (read-only)."""
        for opt, folder in self.outputs.items():
            out = Path(folder)
            self.owned[opt] = O.owned_units(out, self.shown(opt), self.units_of(opt), stage, list(self.given.inputs))

    def units_of(self, opt: str) -> list[str]:
        """The MDS units under an output now."""
        return O.units_under(Path(self.outputs[opt]))

    def record_units(self, names: list[str]) -> None:
        """Record ``names`` (the plan's units) as this dataset's in each output, before any is written."""
        for opt, folder in self.outputs.items():
            O.record_units(Path(folder), self.owned.get(opt, set()) | set(names))

    def mark_incomplete(self, note: dict[str, Any]) -> None:
        for folder in self.outputs.values():
            mark_incomplete(Path(folder), note)

    def withdraw_done(self) -> None:
        """Every finished unit of every output becomes unfinished (``.done`` removed)."""
        for folder in self.outputs.values():
            for marker in sorted(Path(folder).rglob(U.DONE)):
                if LOG_DIR not in marker.parts:
                    marker.unlink()

    def mark_complete(self) -> None:
        for folder in self.outputs.values():
            mark_complete(Path(folder))

    # ---------------------------------------------------------------- storage hooks (remote.py)

    def pull_run_files(self, names: tuple[str, ...]) -> None:
        """Bring the output's run files (recorded settings, unit record) here before they are checked."""

    def push_run_files(self) -> None:
        """Publish the output's root files written so far (settings, tokenizer.json) for other machines."""

    def unit_fn(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """What a worker calls for one task: ``fn`` itself here (remote: fetch inputs, run, upload)."""
        return fn

    def pull_units(self, names: list[str]) -> None:
        """Before ``finish``: every unit's small files (index.json, .done, stats) present here."""

    def push_finished(self, names: list[str], last: tuple[str, ...]) -> None:
        """After ``finish``: publish the dataset-level files (those outside the unit folders), ``last`` last."""


def _scan(folder: Path, remove: bool) -> list[str]:
    """Refuse a link anywhere in an output folder; with ``remove``, sweep its stale temporaries (returned)."""
    links, removed = scan(folder, remove)
    if links:
        raise LinkRefused(f"{links[0]} is a symbolic link inside the output {folder}; ettin-data writes only real "
                          "files and folders in an output (a link could send its writes elsewhere): remove it")
    return removed
