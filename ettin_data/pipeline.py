"""The one driver every stage runs through: plan tasks, skip finished ones, run the rest in parallel,
then (once every task of every rank is finished) write the dataset-level files.

A stage is a module with:
  NAME                          its name ("tokenize")
  plan(cfg) -> list[Task]       every task, in a deterministic order (never depends on workers)
  process_unit(task, cfg)       writes OUTPUT/<task.name> with units.atomic_dir + mark_done; -> Stats
  finish(cfg, stats, tasks)     writes root index and dataset files; returns extra summary fields
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from . import units as U
from .config import recorded_settings
from .errors import ConfigError, UnitFailure
from .executor import run_tasks
from .mds import write_json_atomic
from .progress import Display
from .stats import Stats

__all__ = ["run_stage", "plan_stage", "Plan", "META", "read_meta", "SETTINGS"]

META = "ettin_meta.json"
SETTINGS = ".ettin_settings.json"


@dataclass
class Plan:
    tasks: list[U.Task]
    mine: list[U.Task]
    done: list[U.Task] = field(default_factory=list)
    todo: list[U.Task] = field(default_factory=list)


def read_meta(path: str | Path) -> dict[str, Any] | None:
    p = Path(path) / META
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None


def plan_stage(stage: ModuleType, cfg: Any) -> Plan:
    tasks = stage.plan(cfg)
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError("two inputs map to the same output unit name; give inputs distinct names")
    mine = tasks[cfg.rank :: cfg.world]
    out = Path(cfg.output)
    p = Plan(tasks, mine)
    for t in mine:
        (p.done if not cfg.overwrite and U.is_done(out / t.name) else p.todo).append(t)
    return p


def _check_settings(stage: ModuleType, cfg: Any) -> None:
    """Refuse to resume into an output written with other settings (which would mix two datasets)."""
    out = Path(cfg.output)
    settings = {"stage": stage.NAME, "inputs": list(cfg.inputs), **_jsonable(recorded_settings(cfg))}
    path = out / SETTINGS
    if path.is_file() and not cfg.overwrite:
        old = json.loads(path.read_text())
        diff = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v]
        if diff:
            raise ConfigError(
                f"{out} was written with other settings ({'; '.join(diff)}); "
                "pass --overwrite to redo it, or choose a new output folder"
            )
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, settings)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def run_stage(stage: ModuleType, cfg: Any, *, quiet: bool = False) -> dict[str, Any]:
    """Run a stage to completion (or raise :class:`UnitFailure` naming each failed unit)."""
    t0 = time.monotonic()
    p = plan_stage(stage, cfg)  # first: bad inputs are reported before anything is written
    _check_settings(stage, cfg)
    out = Path(cfg.output)
    display = Display(stage.NAME, len(p.mine), quiet=quiet)
    with display:
        for _ in p.done:
            display.unit_done()
        outcome = run_tasks(
            stage.process_unit, p.todo, cfg, workers=cfg.workers, executor=cfg.executor,
            on_progress=display.update, on_done=display.unit_done, ray_address=cfg.ray_address,
            max_retries=cfg.max_retries,
        )
    if outcome.failures:
        err = UnitFailure(outcome.failures, len(p.mine))
        err.tracebacks = outcome.tracebacks
        raise err
    summary: dict[str, Any] = {
        "stage": stage.NAME, "output": str(out), "units": len(p.tasks), "units_run": len(p.todo),
        "units_skipped": len(p.done),
    }
    pending = [t for t in p.tasks if not U.is_done(out / t.name)]
    if pending:  # other ranks still at work: the last one to finish writes the dataset files
        summary.update(complete=False, units_pending=len(pending))
        summary["seconds"] = round(time.monotonic() - t0, 3)
        return summary
    stats = sum((U.read_done(out / t.name) for t in p.tasks), Stats())
    extra = stage.finish(cfg, stats, p.tasks) or {}
    meta = {
        "stage": stage.NAME,
        "settings": _jsonable(recorded_settings(cfg)),
        "inputs": list(cfg.inputs),
        "upstream": [m for m in (read_meta(i) for i in cfg.inputs) if m],
        **{k: v for k, v in extra.items() if k == "tokenizer"},
    }
    write_json_atomic(out / META, _jsonable(meta))
    summary.update(complete=True, counts=dict(sorted(stats.counts.items())), **extra)
    summary["seconds"] = round(time.monotonic() - t0, 3)
    return summary
