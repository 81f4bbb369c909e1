"""What a command and a stage are. Read this file to learn the contract; ``driver.py`` is how a run goes.

A **command** is one ``ettin-data`` subcommand: a name, an options model (``Config``, a frozen pydantic model
declared in ``config.py``), ``run(cfg)`` returning a summary dict, and ``render(summary)`` for people
(``--json`` prints the dict instead). ``stats`` and ``export`` are plain commands.

A **stage** is a command that writes a dataset unit by unit; the driver runs it and owns each unit's life:

1. ``plan(cfg)`` lists every :class:`~ettin_data.units.Task` in a deterministic order (never dependent on
   the worker count). Bad inputs raise here, before anything is written. The driver plans once.
2. ``check(cfg)`` (optional, read-only) runs once the output is locked: what makes the output as written
   differ beyond its recorded settings (``tokenize``: another tokenizer.json). Without ``--overwrite`` the
   stage refuses (ConfigError); with it, the changes it returns make every finished unit count as unfinished.
3. ``prepare(cfg)`` (optional) runs once in the driver after the output is locked and marked incomplete,
   before any unit: files every unit needs (``tokenize`` writes the output's ``tokenizer.json``).
4. ``process_unit(task, cfg, dst)`` runs in a worker (a local process, or a Ray task): it writes the files of
   unit ``task.name`` into the empty folder ``dst`` and returns its :class:`Stats`. It must be deterministic
   and must not depend on other units. The framework (``worker.py``) makes the folder appear atomically,
   marks it done and records its stats; a stage never does. A stage whose task writes several units
   (``convert``, ``prepare``: one task per source part) sets ``many_units`` and implements ``units(task, cfg)``
   instead: a generator that yields one :class:`Unit` per unit, receives each unit's stats back, and returns
   the task's stats per output.
5. ``finish(cfg, stats, tasks)`` runs once every unit of every rank is done: dataset-level files (root
   ``index.json`` last). It returns a :class:`Finished`: the summary for the user, and what the driver records
   in ``ettin_meta.json`` (of the output, and of each extra output).

A stage declares the folders it writes (``output_options``: ``output``, plus ``keep_text``/``keep_tokens`` for
``prepare``); the workspace locks, checks, stages and publishes each of them like ``-o``.
Stages see local folders only: for object storage the driver's workspace maps URLs to local folders.
Two class attributes tell a remote workspace what a stage reads (see ``remote.py``):
``lazy_inputs`` (each unit reads only ``task.source``, so shards are fetched per unit) and
``finish_reads_shards`` (``finish`` reads the output's shards, so they stay local).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .stats import Stats
from .units import Task

__all__ = ["Command", "Stage", "Unit", "Finished"]


@dataclass(frozen=True)
class Unit:
    """One unit a ``many_units`` stage yields: its name (relative to each output root), the outputs it goes to
    (``output``, and e.g. ``keep_text``), and ``write(folders) -> stats``, which writes its files into one empty
    folder per output and returns the stats of each. The framework skips it when every one is already done
    (not with ``--overwrite``); otherwise it makes the folders atomic and marks each done."""

    name: str
    write: Callable[[dict[str, Path]], dict[str, Stats]]
    outputs: tuple[str, ...] = ("output",)


@dataclass(frozen=True)
class Finished:
    """What ``finish`` returns: ``summary`` is shown to the user (``--json`` prints it); ``meta`` is recorded in
    the output's ``ettin_meta.json`` over the driver's own record (stage, settings, inputs, upstream: a key given
    here replaces the driver's); ``outputs_meta`` is the whole ``ettin_meta.json`` of each extra output."""

    summary: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    outputs_meta: dict[str, dict[str, Any]] = field(default_factory=dict)


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
    many_units: ClassVar[bool] = False
    output_options: ClassVar[tuple[str, ...]] = ("output",)

    def plan(self, cfg: Any) -> list[Task]:
        raise NotImplementedError

    def check(self, cfg: Any) -> list[str]:
        """Read-only checks of the locked output (default: none); see the module docstring."""
        return []

    def prepare(self, cfg: Any) -> None:
        """Driver-side set-up before the units run (default: none)."""

    def process_unit(self, task: Task, cfg: Any, dst: Path) -> Stats:
        raise NotImplementedError

    def units(self, task: Task, cfg: Any) -> Generator[Unit, dict[str, Stats], dict[str, Stats]]:
        raise NotImplementedError

    def finish(self, cfg: Any, stats: Stats, tasks: list[Task]) -> Finished:
        raise NotImplementedError

    def outputs(self, cfg: Any) -> dict[str, str]:
        """The folders this run writes, by option name (``output`` first; extra outputs when given)."""
        return {o: str(getattr(cfg, o)) for o in self.output_options if getattr(cfg, o, None)}
