"""How a run goes. One function, :func:`run`, owns it for every command; read top to bottom.

For a stage (``stage.py``) with options ``cfg``:

1. open the workspace (local folders, or object storage mapped to local folders: ``workspace.py``) with the
   folders the stage writes (``-o`` and its extra outputs);
2. refuse an input dataset that is incomplete; plan once (:func:`plan`): every task, this rank's share, which
   are done. The same :class:`Plan` goes to the run log, to ``--dry-run`` and to execution;
3. refuse an output that overlaps an input or is a file; lock every output (before anything is written; a run
   alone on its output sweeps the temporaries stopped runs left);
4. refuse foreign units and a resume with other settings (``stage.check`` adds what the settings do not say);
   record the units;
5. when units are about to change, mark the output incomplete (root index and metadata withdrawn); with
   ``--overwrite`` and other settings, withdraw every finished unit (they are never resumed into the new
   dataset); record the settings; ``stage.prepare``;
6. run the units left (``executors``), each in a worker wrapped by ``worker.UnitJob`` (the framework makes each
   unit folder atomic and marks it done), failures collected (one failing unit never stops the others);
7. when every unit of every rank is done: ``stage.finish``, then ``ettin_meta.json`` of each output; the
   workspace publishes dataset-level files, the root ``index.json`` last; the output is marked complete.

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
from .progress import Display
from .stage import Stage
from .stats import Stats
from .storage import is_remote
from .worker import UnitJob
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
            ws.require_inputs_complete()  # stats, export: a dataset that a run has not finished is never read
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
        ws.require_inputs_complete()
        p = plan(command, ws.cfg, ws)
        out = {"units": len(p.tasks), "mine": len(p.mine), "to_do": [t.name for t in p.todo],
               "already_done": [t.name for t in p.done]}
        ws.pull_run_files((SETTINGS,))
        conflict = [] if cfg.overwrite else _settings_conflict(command, ws)
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
    folders = command.outputs(cfg) if isinstance(command, Stage) else {}
    if not (any(is_remote(f) for f in folders.values()) or any(is_remote(i) for i in getattr(cfg, "inputs", ()))):
        yield Workspace(cfg, outputs=folders)
        return
    from .remote import open_remote

    with open_remote(cfg, command) as ws:
        yield ws


@handle_signals()  # SIGTERM/SIGHUP stop the run like Ctrl-C: workers stopped, finished units kept, no root index
def _run_stage(stage: Stage, ws: Workspace, quiet: bool, log: Any) -> dict[str, Any]:
    t0 = time.monotonic()
    # spawned workers start now (their start-up overlaps the planning, checks and stage.prepare below); forked
    # ones when the units start, inheriting what check and prepare loaded (executors/local.py)
    started = (lambda method: log.workers_started(ws.cfg.workers, method)) if log is not None else (lambda m: None)
    with prestart(ws.cfg, type(stage).__module__, started) as pool:
        summary = _run_stage_with(stage, ws, quiet, log, pool)
    summary["seconds"] = round(time.monotonic() - t0, 3)
    return summary


def _run_stage_with(stage: Stage, ws: Workspace, quiet: bool, log: Any, pool: Any) -> dict[str, Any]:
    cfg, given = ws.cfg, ws.given
    ws.refresh()
    ws.require_inputs_complete()  # a dataset that a run has not finished is never read
    p = plan(stage, cfg, ws)  # first: bad inputs are reported before anything is written
    if log is not None:
        log.planned(p)
    ws.check_overlap()  # output == input / overlapping / a file: refused before anything is written
    with ws.lock():  # one lock per output (ranks of one run share it); released on exit
        ws.pull_run_files((SETTINGS, outputs.UNITS_FILE))
        # only units this dataset's runs wrote may be replaced or removed (remote: those in the bucket)
        ws.check_units(stage.name)
        diff = _settings_conflict(stage, ws)
        if diff and not cfg.overwrite:  # a resume with other settings would mix two datasets
            raise ConfigError(f"{given.output} was written with other settings ({'; '.join(diff)}); "
                              "pass --overwrite to redo it, or choose a new output folder")
        changes = stage.check(cfg)  # refuses what the settings do not say (another tokenizer.json, mix file)
        ws.record_units([t.name for t in p.tasks])  # the first write (after the lock file)
        if p.todo or diff or changes:  # units are about to change: the dataset is incomplete until finished
            ws.mark_incomplete({"stage": stage.name, "argv": getattr(log, "argv", None)})
        if diff or changes:  # --overwrite with other settings: no unit written under the old ones is resumed
            ws.withdraw_done()
        write_json_atomic(ws.output / SETTINGS, _settings(stage, ws))
        stage.prepare(cfg)  # e.g. tokenize writes OUTPUT/tokenizer.json
        ws.push_run_files()
        ran = _run_units(stage, ws, p, quiet, pool)
        summary: dict[str, Any] = {"stage": stage.name, "output": str(given.output), "units": len(p.tasks),
                                   "units_run": len(p.todo), "units_skipped": len(p.done)}
        swept = sum(len(v) for v in ws.swept.values())
        if swept:  # temporaries and unfinished unit folders that stopped runs had left
            summary["swept"] = swept
        ws.refresh()
        pending = [t for t in p.tasks if not ws.is_done(t.name)]
        if pending:  # other ranks still at work: the last one to finish writes the dataset files
            summary.update(complete=False, units_pending=len(pending))
        else:
            summary.update(_finish(stage, ws, p, ran))
    return summary


def _run_units(stage: Stage, ws: Workspace, p: Plan, quiet: bool, pool: Any = None) -> dict[str, Stats]:
    """Run the plan's units left to do; the stats of each (what its ``.done`` records)."""
    cfg = ws.cfg
    if pool is not None and pool.serves(len(p.todo), cfg.workers):
        pool.launch()  # before the progress display's thread: a single-threaded driver forks its workers
    with Display(stage.name, len(p.mine), quiet=quiet) as display:
        for _ in p.done:
            display.unit_done()
        outcome = run_tasks(
            ws.unit_fn(UnitJob(stage)), p.todo, cfg, workers=cfg.workers, executor=cfg.executor,
            on_progress=display.update, on_done=display.unit_done, ray_address=cfg.ray_address,
            max_retries=cfg.max_retries, pool=pool,
        )
    if outcome.failures:
        raise UnitFailure(outcome.failures, len(p.mine), outcome.tracebacks)
    return outcome.stats


def _finish(stage: Stage, ws: Workspace, p: Plan, ran: dict[str, Stats]) -> dict[str, Any]:
    """``ran``: the stats of the units this run wrote; the others' (done before, or by other ranks) are read
    from their ``.done``."""
    cfg, names = ws.cfg, [t.name for t in p.tasks]
    ws.pull_units(names)  # remote: the units' small files (index.json, .done, stats) come back for finish()
    stats = Stats.total(ran[n] if n in ran else U.read_done(ws.output / n) for n in names)
    done = stage.finish(cfg, stats, p.tasks)
    meta = {
        "stage": stage.name,
        "settings": jsonable(recorded_settings(cfg)),
        "inputs": list(ws.given.inputs),
        "upstream": [m for m in (read_meta(i) for i in cfg.inputs) if m],
        **done.meta,  # a stage may describe its output itself (prepare: a chain of three)
    }
    for opt, folder in ws.outputs.items():
        record = meta if opt == "output" else done.outputs_meta.get(opt)
        if record is not None:
            write_json_atomic(Path(folder) / META, jsonable(record))
    ws.push_finished(names, last=(META, INDEX))  # dataset-level files last, the root index.json very last
    ws.mark_complete()
    return {"complete": True, "counts": dict(sorted(stats.counts.items())), **done.summary}


def _settings(stage: Stage, ws: Workspace) -> dict[str, Any]:
    return jsonable({"stage": stage.name, "inputs": list(ws.given.inputs), **recorded_settings(ws.cfg)})


def _settings_conflict(stage: Stage, ws: Workspace) -> list[str]:
    """What changed since the output was written (a resume with other settings would mix two datasets)."""
    path = ws.output / SETTINGS
    if not path.is_file():
        return []
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return settings_diff(old, _settings(stage, ws), type(ws.cfg))
