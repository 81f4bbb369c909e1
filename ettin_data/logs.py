"""A log file per run, next to the output: ``OUTPUT/.ettin_logs/<stage>-<UTC time>[-rank<R>].jsonl``.

One JSON object per line: ``start`` (command line, version, resolved options with where each value came
from), one ``unit`` line per planned unit (``done`` this run, ``skipped`` already done, ``failed`` with
its error, ``unfinished`` when the run was interrupted, or ``pending`` for another rank), then ``end``
(exit code, error, summary, seconds).
The folder is hidden: MDS readers and ``find_units`` never see it, and shards/indexes are unchanged.
``ETTIN_DATA_LOGS=0`` turns logging off. Logging never fails a run: the CLI turns a log that cannot be
written into a warning.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__
from .dataset import LOG_DIR
from .jsonio import jsonable
from .safefile import write_bytes
from .storage import is_remote

__all__ = ["LOG_DIR", "RunLog"]


class RunLog:
    """Collects one run's events; the driver hands it the run's plan (:meth:`planned`); :meth:`write` puts
    them in the output's log folder at the end."""

    def __init__(self, stage: str, cfg: Any, origin: dict[str, str]):
        self.stage, self.cfg = stage, cfg
        self.started = datetime.now(UTC)
        self.t0 = time.monotonic()
        self.plan: Any = None
        self.enabled = os.environ.get("ETTIN_DATA_LOGS", "1") != "0" and self._local_output() is not None
        self.argv = ["ettin-data", *sys.argv[1:]]  # the command line (what to rerun to finish the output)
        self.events: list[dict[str, Any]] = [{
            "event": "start", "time": self.started.isoformat(timespec="seconds"), "stage": stage,
            "version": __version__, "argv": self.argv, "pid": os.getpid(),
            "config": {k: {"value": getattr(cfg, k), "from": origin.get(k, "default")}
                       for k in type(cfg).model_fields},
        }]

    def planned(self, plan: Any) -> None:
        """The run's :class:`driver.Plan` (tasks, this rank's share, those already done)."""
        self.plan = plan

    def workers_started(self, count: int, start: str) -> None:
        """The prestarted pool: how many workers, and how they started (``fork`` or ``spawn``)."""
        self.events.append({"event": "workers", "count": count, "start": start})

    def _local_output(self) -> Path | None:
        out = getattr(self.cfg, "output", None)
        if not out or is_remote(out):
            return None
        return Path(out)

    def path(self) -> Path | None:
        out = self._local_output()
        if out is None:
            return None
        stamp = self.started.strftime("%Y%m%dT%H%M%S.%fZ")
        rank = f"-rank{self.cfg.rank}" if getattr(self.cfg, "world", 1) > 1 else ""
        return out / LOG_DIR / f"{self.stage.replace(' ', '-')}-{stamp}{rank}.jsonl"

    def _units(self, failures: dict[str, str]) -> list[dict[str, Any]]:
        from . import units as U

        out = self._local_output()
        p = self.plan
        mine = {t.name for t in p.mine}
        already_done = {t.name for t in p.done}
        rows = []
        for t in p.tasks:
            row: dict[str, Any] = {"event": "unit", "unit": t.name, "source": t.source}
            if t.name in failures:
                row.update(status="failed", error=failures[t.name])
            elif U.is_done(out / t.name):
                row["status"] = "skipped" if t.name in already_done else "done"
                row["counts"] = dict(sorted(U.read_done(out / t.name).counts.items()))
            else:
                row["status"] = "pending" if t.name not in mine else "unfinished"
            rows.append(row)
        return rows

    def write(self, exit_code: int, summary: dict[str, Any] | None = None, error: str | None = None,
              failures: list[tuple[str, str]] | None = None) -> Path | None:
        """Write the log (only when the output folder exists: a run rejected up front leaves nothing).
        Raises OSError when the log cannot be written (the caller warns)."""
        path = self.path()
        if not self.enabled or path is None or not path.parent.parent.is_dir():
            return None
        events = list(self.events)
        if self.plan is not None:  # a run stopped before planning (bad options or inputs) has no units
            try:
                events += self._units(dict(failures or []))
            except Exception as e:  # noqa: BLE001 - a log is best effort
                events.append({"event": "units_unavailable", "error": f"{type(e).__name__}: {e}"})
        events.append({"event": "end", "time": datetime.now(UTC).isoformat(timespec="seconds"),
                       "exit_code": exit_code, "error": error, "summary": summary,
                       "seconds": round(time.monotonic() - self.t0, 3)})
        if path.parent.is_symlink():  # never written through a link (the run itself refuses such an output)
            return None
        path.parent.mkdir(exist_ok=True)
        text = "".join(json.dumps(jsonable(e), sort_keys=True) + "\n" for e in events)
        write_bytes(path, text.encode(), fsync=False)
        return path
