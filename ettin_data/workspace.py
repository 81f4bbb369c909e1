"""Where a run reads and writes, as the driver sees it: local folders.

The driver (``driver.py``) receives a :class:`Workspace` and calls every hook below at its place in the run;
for local folders they do nothing. Object storage (``s3://``, ``gs://``, ...) is the same interface over a
local staging folder and mirrors (``remote.RemoteWorkspace``): it pulls the run's small files, wraps each
unit so the worker fetches its input shards and uploads its output, and uploads the dataset-level files
``finish`` wrote. Which one a run gets is decided once, where it starts (``driver.run``); stages and the
driver's steps never ask whether storage is remote.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import units as U

__all__ = ["Workspace"]


class Workspace:
    """A run on local folders: ``cfg`` is the config as given, and every hook is a no-op."""

    def __init__(self, given: Any, cfg: Any = None):
        self.given = given  # the config as the user gave it (URLs for remote folders)
        self.cfg = cfg if cfg is not None else given  # the same with local folders: what stages see

    @property
    def output(self) -> Path:
        return Path(self.cfg.output)

    def is_done(self, name: str) -> bool:
        """Has unit ``name`` been finished (by this run, an earlier one, or another rank)?"""
        return U.is_done(self.output / name)

    def refresh(self) -> None:
        """Re-read which units are done (before planning, and before deciding whether to finish)."""

    def pull_run_files(self, names: tuple[str, ...]) -> None:
        """Bring the output's run files (recorded settings, unit record) here before they are checked."""

    def push_run_files(self) -> None:
        """Publish the output's root files written so far (settings, tokenizer.json) for other machines."""

    def unit_fn(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """What a worker calls for one unit: ``fn`` itself here (remote: fetch inputs, run, upload)."""
        return fn

    def pull_units(self, names: list[str]) -> None:
        """Before ``finish``: every unit's small files (index.json, .done, stats) present here."""

    def push_finished(self, names: list[str], last: tuple[str, ...]) -> None:
        """After ``finish``: publish the dataset-level files (those outside the unit folders), ``last`` last."""
