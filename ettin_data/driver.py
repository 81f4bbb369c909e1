"""How a run goes. One function, :func:`run`, owns it for every command; read top to bottom.

For a stage (``stage.py``) with options ``cfg``:

1. open the workspace (local folders, or object storage mapped to local folders: ``workspace.py``);
2. plan once (:func:`plan`): every task, this rank's share, which are done. The same :class:`Plan` goes to
   the run log, to ``--dry-run`` and to execution;
3. refuse an output that overlaps an input or is a file; ``stage.prepare``; lock the output;
4. refuse foreign units and a resume with other settings; record the settings;
5. drop a root index that would describe units about to change, run the units left (``executors``), each
   in a worker, failures collected (one failing unit never stops the others);
6. when every unit of every rank is done: ``stage.finish``, then ``ettin_meta.json``; the workspace
   publishes dataset-level files, the root ``index.json`` last.

SIGTERM/SIGHUP stop a run like Ctrl-C: workers stopped, finished units kept, no root index (``interrupt.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import outputs
from . import units as U
from .config import recorded_settings, settings_diff
from .dataset import INDEX, META, SETTINGS, read_meta
from .errors import ConfigError, UnitFailure
from .executors import prestart, run_tasks
from .interrupt import handle_signals
from .jsonio import jsonable, write_json_atomic
from .mds import is_root_index
from .progress import Display
from .stage import Stage
from .stats import Stats
from .storage import is_remote
from .workspace import Workspace

__all__ = ["run", "plan", "dry_run", "Plan"]


@dataclass
class Plan:
    """A stage's work for one run: every task, this rank's share, and that share split into done / to do."""

    tasks: list[U.Task]
    mine: list[U.Task]
    done: list[U.Task] = field(default_factory=list)
    todo: list[U.Task] = field(default_factory=list)


def plan(stage: Stage, cfg: Any, ws: Workspace | None = None) -> Plan:
    """Plan a run of ``stage``: bad inputs raise here, before anything is written."""
    ws = ws or Workspace(cfg)
    tasks = stage.plan(cfg)
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError("two inputs map to the same output unit name; give inputs distinct names")
    mine = tasks[cfg.rank :: cfg.world]
    p = Plan(tasks, mine)
    for t in mine:
        (p.done if not cfg.overwrite and ws.is_done(t.name) else p.todo).append(t)
    return p


def run(cfg: Any, *, quiet: bool = True, log: Any = None, command: Any = None) -> dict[str, Any]:
    """Run the command whose options are ``cfg`` (``command`` defaults to the registry's) and return its
    summary. A stage raises :class:`UnitFailure` naming each failed unit; an interrupt raises
    ``KeyboardInterrupt`` (:class:`interrupt.Terminated` for SIGTERM/SIGHUP). ``log`` (a ``logs.RunLog``)
    receives the plan."""
    command = command or _registered(cfg)
    with open_workspace(cfg, command) as ws:
        if not isinstance(command, Stage):
            return command.run(ws.cfg)
        summary = _run_stage(command, ws, quiet, log)
    return summary


def dry_run(cfg: Any, command: Any = None) -> dict[str, Any]:
    """What a run would do, writing nothing: the planned units and a settings conflict it would refuse."""
    command = command or _registered(cfg)
    if not isinstance(command, Stage):
        return command.dry_run(cfg)
    with open_workspace(cfg, command) as ws:
        ws.refresh()
        p = plan(command, ws.cfg, ws)
        out = {"units": len(p.tasks), "mine": len(p.mine), "to_do": [t.name for t in p.todo],
               "already_done": [t.name for t in p.done]}
        ws.pull_run_files((SETTINGS,))
        conflict = _settings_conflict(command, ws)
        if conflict:
            out["settings_conflict"] = conflict
    return out


def _registered(cfg: Any) -> Any:
    from .stages import command_for  # the registry imports every options model: only when asked

    return command_for(cfg)


@contextmanager
def open_workspace(cfg: Any, command: Any) -> Iterator[Workspace]:
    """The run's workspace: its folders as given, or object storage (any INPUT or OUTPUT a URL) mapped to
    local folders for the duration of the run (``remote.py``). The only place a run's storage is chosen."""
    if not (is_remote(getattr(cfg, "output", "") or "") or any(is_remote(i) for i in getattr(cfg, "inputs", ()))):
        yield Workspace(cfg)
        return
    from .remote import open_remote

    with open_remote(cfg, command) as ws:
        yield ws


@handle_signals()  # SIGTERM/SIGHUP stop the run like Ctrl-C: workers stopped, finished units kept, no root index
def _run_stage(stage: Stage, ws: Workspace, quiet: bool, log: Any) -> dict[str, Any]:
    t0 = time.monotonic()
    # the workers start now: their start-up overlaps the planning, checks and stage.prepare below
    with prestart(ws.cfg, type(stage).__module__) as pool:
        summary = _run_stage_with(stage, ws, quiet, log, pool)
    summary["seconds"] = round(time.monotonic() - t0, 3)
    return summary


def _run_stage_with(stage: Stage, ws: Workspace, quiet: bool, log: Any, pool: Any) -> dict[str, Any]:
    cfg, given = ws.cfg, ws.given
    ws.refresh()
    p = plan(stage, cfg, ws)  # first: bad inputs are reported before anything is written
    if log is not None:
        log.planned(p)
    outputs.check_outputs(cfg)  # output == input / overlapping / a file: refused before anything is written
    stage.prepare(cfg)  # e.g. tokenize checks its tokenizer, then writes OUTPUT/tokenizer.json
    with outputs.output_lock(cfg):  # one run per output (per rank); released on exit
        ws.pull_run_files((SETTINGS, outputs.UNITS_FILE))
        # only units this dataset's runs wrote may be replaced or removed (remote: those in the local mirror)
        outputs.claim_units(cfg, [t.name for t in p.tasks], stage.name, list(given.inputs))
        diff = _settings_conflict(stage, ws)
        if diff:  # a resume with other settings would mix two datasets
            raise ConfigError(f"{ws.output} was written with other settings ({'; '.join(diff)}); "
                              "pass --overwrite to redo it, or choose a new output folder")
        write_json_atomic(ws.output / SETTINGS, _settings(stage, ws))
        ws.push_run_files()
        if p.todo:  # units are about to change: no root index may describe them until finish() rewrites it
            _drop_root_indexes(ws.output)
        _run_units(stage, ws, p, quiet, pool)
        summary: dict[str, Any] = {"stage": stage.name, "output": str(given.output), "units": len(p.tasks),
                                   "units_run": len(p.todo), "units_skipped": len(p.done)}
        ws.refresh()
        pending = [t for t in p.tasks if not ws.is_done(t.name)]
        if pending:  # other ranks still at work: the last one to finish writes the dataset files
            summary.update(complete=False, units_pending=len(pending))
        else:
            summary.update(_finish(stage, ws, p))
    return summary


def _run_units(stage: Stage, ws: Workspace, p: Plan, quiet: bool, pool: Any = None) -> None:
    cfg = ws.cfg
    with Display(stage.name, len(p.mine), quiet=quiet) as display:
        for _ in p.done:
            display.unit_done()
        outcome = run_tasks(
            ws.unit_fn(stage.process_unit), p.todo, cfg, workers=cfg.workers, executor=cfg.executor,
            on_progress=display.update, on_done=display.unit_done, ray_address=cfg.ray_address,
            max_retries=cfg.max_retries, pool=pool,
        )
    if outcome.failures:
        err = UnitFailure(outcome.failures, len(p.mine))
        err.tracebacks = outcome.tracebacks
        raise err


def _finish(stage: Stage, ws: Workspace, p: Plan) -> dict[str, Any]:
    cfg, names = ws.cfg, [t.name for t in p.tasks]
    ws.pull_units(names)  # remote: the units' small files (index.json, .done, stats) come back for finish()
    stats = sum((U.read_done(ws.output / n) for n in names), Stats())
    extra = stage.finish(cfg, stats, p.tasks) or {}
    upstream, record = extra.pop("upstream", None), extra.pop("record", {})
    meta = extra.pop("meta", None) or {  # a stage may describe its output itself (prepare: a chain of three)
        "stage": stage.name,
        "settings": jsonable(recorded_settings(cfg)),
        "inputs": list(ws.given.inputs),
        "upstream": upstream if upstream is not None else [m for m in (read_meta(i) for i in cfg.inputs) if m],
        **{k: v for k, v in extra.items() if k in ("tokenizer", "engine")}, **record,
    }
    write_json_atomic(ws.output / META, jsonable(meta))
    ws.push_finished(names, last=(META, INDEX))  # dataset-level files last, the root index.json very last
    return {"complete": True, "counts": dict(sorted(stats.counts.items())), **extra}


def _settings(stage: Stage, ws: Workspace) -> dict[str, Any]:
    return jsonable({"stage": stage.name, "inputs": list(ws.given.inputs), **recorded_settings(ws.cfg)})


def _settings_conflict(stage: Stage, ws: Workspace) -> list[str]:
    """What changed since the output was written (a resume with other settings would mix two datasets)."""
    path = ws.output / SETTINGS
    if ws.cfg.overwrite or not path.is_file():
        return []
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return settings_diff(old, _settings(stage, ws), type(ws.cfg))


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
