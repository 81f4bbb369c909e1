"""What every executor shares: the outcome of a run of tasks, one task's call (errors become one line), the
thread budget of a worker. Executors: ``local.py`` (a process pool, the default) and ``ray.py``."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import progress
from ..errors import EttinError, os_error_message
from ..stats import Stats
from ..units import Task

__all__ = ["Outcome", "call", "record", "worker_env", "os_threads", "WORKER_DIED"]

WORKER_DIED = "worker process died (killed, or out of memory)"


@dataclass
class Outcome:
    """What a run of tasks gave: each finished task's stats (what its ``.done`` records: the driver sums them),
    ``(task, one-line error)`` per failed task in task order, and the failed tasks' tracebacks (``--debug``)."""

    stats: dict[str, Stats] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    tracebacks: dict[str, str] = field(default_factory=dict)


WORKER_SLOT = "ETTIN_DATA_WORKER_SLOT"  # a pool worker's slot, 0..workers-1 (engines pin their threads by it)


def os_threads() -> int | None:
    """The threads of this process, native libraries' included (Linux ``/proc/self/task``); None elsewhere."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # pragma: no cover - no /proc
        return None


def worker_env(workers: int) -> dict[str, str]:
    """Thread limits so that workers x library threads never exceed the cores."""
    try:
        cores = len(os.sched_getaffinity(0))  # the cores this process may use, not the machine's
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    threads = str(max(1, cores // max(1, workers)))
    return {
        "RAYON_NUM_THREADS": threads,
        "RAYON_RS_NUM_CPUS": threads,
        "OMP_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "TOKENIZERS_PARALLELISM": "true" if threads != "1" else "false",
    }


def call(fn: Callable[[Task, Any], Stats], task: Task, cfg: Any) -> tuple[str, Any, str]:
    """Run one task; errors become (kind, one-line message, traceback) so they always pickle."""
    try:
        return "ok", fn(task, cfg), ""
    except EttinError as e:
        return "error", str(e), traceback.format_exc()
    except MemoryError:
        return "error", "out of memory", traceback.format_exc()
    except OSError as e:  # disk full, read-only or missing files: one line naming the path
        return "error", os_error_message(e, getattr(cfg, "output", None)), traceback.format_exc()
    except Exception as e:  # a bug or an unexpected library error: still only this unit fails
        return "error", f"{type(e).__name__}: {e}", traceback.format_exc()
    finally:
        progress.flush()


def record(out: Outcome, name: str, result: tuple[str, Any, str], on_done: Callable[[], None]) -> None:
    kind, value, tb = result
    if kind == "ok":
        out.stats[name] = value
    else:
        out.failures.append((name, value))
        out.tracebacks[name] = tb
    on_done()
