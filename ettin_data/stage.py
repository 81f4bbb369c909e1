"""What a command and a stage are. Read this file to learn the contract; ``driver.py`` is how a run goes.

A **command** is one ``ettin-data`` subcommand: a name, an options model (``Config``, a frozen pydantic model
declared in ``config.py``), ``run(cfg)`` returning a summary dict, and ``render(summary)`` for people
(``--json`` prints the dict instead). ``stats`` and ``export`` are plain commands.

A **stage** is a command that writes a dataset unit by unit; the driver runs it:

1. ``plan(cfg)`` lists every :class:`~ettin_data.units.Task` in a deterministic order (never dependent on
   the worker count). Bad inputs raise here, before anything is written. The driver plans once.
2. ``prepare(cfg)`` (optional) runs once in the driver after the output checks and before any unit:
   files every unit needs (``tokenize`` writes the output's ``tokenizer.json``).
3. ``process_unit(task, cfg)`` runs in a worker (a local process, or a Ray task): it writes
   ``OUTPUT/<task.name>`` with :func:`units.atomic_dir` and returns its :class:`Stats`. It must be
   deterministic and must not depend on other units; the driver marks the unit done.
4. ``finish(cfg, stats, tasks)`` runs once every unit of every rank is done: dataset-level files (root
   ``index.json`` last). It returns summary fields; ``meta`` replaces the recorded ``ettin_meta.json``,
   ``upstream`` its upstream list, ``tokenizer``/``engine`` are recorded in it.

Stages see local folders only: for object storage the driver's workspace maps URLs to local folders.
Two class attributes tell a remote workspace what a stage reads (see ``remote.py``):
``lazy_inputs`` (each unit reads only ``task.source``, so shards are fetched per unit) and
``finish_reads_shards`` (``finish`` reads the output's shards, so they stay local).
"""

from __future__ import annotations

from typing import Any, ClassVar

from .stats import Stats
from .units import Task

__all__ = ["Command", "Stage"]


class Command:
    """One ``ettin-data`` subcommand (see the module docstring)."""

    name: ClassVar[str]  # as typed: "stats", "sample split"
    Config: ClassVar[type]  # its options model (config.py)

    def run(self, cfg: Any) -> dict[str, Any]:
        raise NotImplementedError

    def dry_run(self, cfg: Any) -> dict[str, Any]:
        """What ``run`` would do, writing nothing (``--dry-run``; a stage's is its plan: ``driver.dry_run``)."""
        return {}

    def render(self, summary: dict[str, Any]) -> None:
        from .report import print_summary

        print_summary(summary)


class Stage(Command):
    """A command that writes units; run by :func:`ettin_data.driver.run` (see the module docstring)."""

    lazy_inputs: ClassVar[bool] = False
    finish_reads_shards: ClassVar[bool] = False

    def plan(self, cfg: Any) -> list[Task]:
        raise NotImplementedError

    def prepare(self, cfg: Any) -> None:
        """Driver-side set-up before the units run (default: none)."""

    def process_unit(self, task: Task, cfg: Any) -> Stats:
        raise NotImplementedError

    def finish(self, cfg: Any, stats: Stats, tasks: list[Task]) -> dict[str, Any]:
        raise NotImplementedError
