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
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from . import outputs, remote
from . import units as U
from .config import recorded_settings, settings_diff
from .dataset import META, SETTINGS, is_root_index, read_meta
from .errors import ConfigError, UnitFailure
from .executor import run_tasks
from .interrupt import handle_signals
from .mds import INDEX, write_json_atomic
from .progress import Display
from .stats import Stats

__all__ = ["run_stage", "plan_stage", "Plan"]



@dataclass
class Plan:
    tasks: list[U.Task]
    mine: list[U.Task]
    done: list[U.Task] = field(default_factory=list)
    todo: list[U.Task] = field(default_factory=list)


def plan_stage(stage: ModuleType, cfg: Any, is_done: Callable[[str], bool] | None = None) -> Plan:
    tasks = stage.plan(cfg)
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError("two inputs map to the same output unit name; give inputs distinct names")
    mine = tasks[cfg.rank :: cfg.world]
    out = Path(cfg.output)
    p = Plan(tasks, mine)
    done = is_done or (lambda name: U.is_done(out / name))
    for t in mine:
        (p.done if not cfg.overwrite and done(t.name) else p.todo).append(t)
    return p


def _check_settings(stage: ModuleType, cfg: Any, inputs: list[str] | None = None) -> None:
    """Refuse to resume into an output written with other settings (which would mix two datasets)."""
    out = Path(cfg.output)
    settings = {"stage": stage.NAME, "inputs": list(inputs or cfg.inputs), **_jsonable(recorded_settings(cfg))}
    path = out / SETTINGS
    if path.is_file() and not cfg.overwrite:
        old = json.loads(path.read_text())
        diff = settings_diff(old, settings, type(cfg))
        if diff:
            raise ConfigError(
                f"{out} was written with other settings ({'; '.join(diff)}); "
                "pass --overwrite to redo it, or choose a new output folder"
            )
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, settings)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _drop_root_indexes(out: Path) -> None:
    """Remove the root ``index.json`` files (shards named by nested paths) of OUTPUT and its split folders,
    e.g. left by an earlier complete run that --overwrite now redoes: a reader must never see a root index
    over units that are being rewritten."""
    for d in (out, *(c for c in out.iterdir() if c.is_dir() and not c.name.startswith("."))):
        f = d / INDEX
        try:
            index = json.loads(f.read_text()) if f.is_file() else None
        except (OSError, ValueError):
            continue
        if isinstance(index, dict) and is_root_index(index):
            f.unlink()


@handle_signals()  # SIGTERM/SIGHUP stop the run like Ctrl-C: workers stopped, finished units kept, no root index
def run_stage(stage: ModuleType, cfg: Any, *, quiet: bool = False) -> dict[str, Any]:
    """Run a stage to completion (or raise :class:`UnitFailure` naming each failed unit; an interrupt
    raises ``KeyboardInterrupt``, or :class:`interrupt.Terminated` for SIGTERM/SIGHUP)."""
    if remote.involved(cfg):  # object storage: the stage sees local folders (see remote.py)
        with remote.localize(cfg, stage) as local_cfg:
            summary = run_stage(stage, local_cfg, quiet=quiet)
        return {**summary, "output": cfg.output}
    outputs.check_outputs(cfg)  # output == input / overlapping / a file: refused before anything is written
    with ExitStack() as stack:
        return _run(stage, cfg, quiet, stack)


def _run(stage: ModuleType, cfg: Any, quiet: bool, stack: ExitStack) -> dict[str, Any]:
    sess = remote.session(cfg)  # set when remote.localize mapped this run's folders
    orig = sess.orig if sess else cfg
    t0 = time.monotonic()
    if sess:
        sess.refresh()
    out = Path(cfg.output)
    is_done = sess.is_done if sess else (lambda name: U.is_done(out / name))
    p = plan_stage(stage, cfg, is_done)  # first: bad inputs are reported before anything is written
    stack.enter_context(outputs.output_lock(cfg))  # one run per output (per rank); released on exit
    if sess:
        sess.pull_settings(SETTINGS)
        sess.pull_settings(outputs.UNITS_FILE)
    # only units this dataset's runs wrote may be replaced or removed (remote: those in the local mirror)
    outputs.claim_units(cfg, [t.name for t in p.tasks], stage.NAME, list(orig.inputs))
    _check_settings(stage, cfg, list(orig.inputs))
    if sess:
        sess.push_root_files(exclude=("index.json", META))
    if p.todo:  # units are about to change: no root index may describe them until finish() rewrites it
        _drop_root_indexes(out)
    display = Display(stage.NAME, len(p.mine), quiet=quiet)
    with display:
        for _ in p.done:
            display.unit_done()
        fn = sess.wrap(stage.process_unit) if sess else stage.process_unit  # remote: fetch inputs, upload unit
        outcome = run_tasks(
            fn, p.todo, cfg, workers=cfg.workers, executor=cfg.executor,
            on_progress=display.update, on_done=display.unit_done, ray_address=cfg.ray_address,
            max_retries=cfg.max_retries,
        )
    if outcome.failures:
        err = UnitFailure(outcome.failures, len(p.mine))
        err.tracebacks = outcome.tracebacks
        raise err
    summary: dict[str, Any] = {
        "stage": stage.NAME, "output": str(orig.output), "units": len(p.tasks), "units_run": len(p.todo),
        "units_skipped": len(p.done),
    }
    if sess:
        sess.refresh()
    pending = [t for t in p.tasks if not is_done(t.name)]
    if pending:  # other ranks still at work: the last one to finish writes the dataset files
        summary.update(complete=False, units_pending=len(pending))
        summary["seconds"] = round(time.monotonic() - t0, 3)
        return summary
    before = {}
    if sess:  # the units' small files (index.json, .done, stats) come back for finish()
        sess.pull_unit_files([t.name for t in p.tasks])
        before = sess.snapshot()
    stats = sum((U.read_done(out / t.name) for t in p.tasks), Stats())
    extra = stage.finish(cfg, stats, p.tasks) or {}
    meta = extra.pop("meta", None) or {  # a stage may describe its output itself (prepare: a chain of three)
        "stage": stage.NAME,
        "settings": _jsonable(recorded_settings(cfg)),
        "inputs": list(orig.inputs),
        "upstream": [m for m in (read_meta(i) for i in cfg.inputs) if m],
        **{k: v for k, v in extra.items() if k in ("tokenizer", "engine")},
    }
    write_json_atomic(out / META, _jsonable(meta))
    if sess:  # dataset-level files last, the root index.json very last
        sess.push_finished([t.name for t in p.tasks], before, last=[META, "index.json"])
    summary.update(complete=True, counts=dict(sorted(stats.counts.items())), **extra)
    summary["seconds"] = round(time.monotonic() - t0, 3)
    return summary
