"""Executors run a stage's tasks in parallel: ``local`` (a process pool, the default) or ``ray`` (a local Ray
instance or a cluster). Both call ``fn(task, cfg) -> Stats`` for every task and return an :class:`Outcome`:
the stats of the tasks that finished and ``(task name, error)`` for those that failed, so one failing task
never stops the others and the output bytes do not depend on what ran the tasks."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..stats import Stats
from ..units import Task
from .base import WORKER_DIED, Outcome, worker_env

__all__ = ["run_tasks", "prestart", "Outcome", "worker_env", "WORKER_DIED"]


@contextmanager
def prestart(cfg: Any, warm: str | None = None, on_launch: Callable[[str], None] = lambda m: None) -> Iterator[Any]:
    """The local pool (None for Ray or one worker), to pass to :func:`run_tasks`: spawned workers start now
    (their start-up overlaps the driver's planning; ``warm``: a module they import), forked ones at
    ``pool.launch()``, once the driver has loaded what they inherit (``executors/local.py``); ``on_launch(start
    method)`` is told when they start."""
    if getattr(cfg, "executor", "local") != "local" or getattr(cfg, "workers", 1) <= 1:
        yield None
        return
    from .local import prestart as local_prestart

    with local_prestart(cfg, warm, on_launch) as pool:
        yield pool


def run_tasks(
    fn: Callable[[Task, Any], Stats],
    tasks: Sequence[Task],
    cfg: Any,
    *,
    workers: int,
    executor: str = "local",
    on_progress: Callable[[int, int], None] | None = None,
    on_done: Callable[[], None] = lambda: None,
    ray_address: str | None = None,
    max_retries: int = 1,
    pool: Any = None,
) -> Outcome:
    """Run ``fn(task, cfg)`` for every task with the chosen executor (``pool``: from :func:`prestart`)."""
    if executor == "ray":
        from .ray import run_ray

        return run_ray(fn, tasks, cfg, workers=workers, address=ray_address, max_retries=max_retries,
                       on_progress=on_progress, on_done=on_done)
    from .local import run_local

    return run_local(fn, tasks, cfg, workers=workers, on_progress=on_progress, on_done=on_done, pool=pool)
