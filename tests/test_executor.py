"""The local process pool: every progress message and every line a worker prints reaches the driver,
although workers leave with ``os._exit`` once multiprocessing is done with them (executors.local._exit_now);
every worker of a pool has its own slot (engines pin their threads by it)."""

from __future__ import annotations

import os
import sys
import time

from ettin_data import progress
from ettin_data.executors import run_tasks
from ettin_data.executors.base import WORKER_SLOT
from ettin_data.stats import Stats
from ettin_data.units import Task


def chatty(task: Task, cfg: object) -> Stats:
    for _ in range(3000):
        progress.advance(docs=1, tokens=3)
    print(f"printed by {task.name}", end="")  # no newline: still in the worker's stdout buffer at exit
    print(f"warned by {task.name}", end="", file=sys.stderr)
    st = Stats()
    st.add("calls")
    return st


def test_pool_workers_deliver_all_progress_and_output(capfd) -> None:
    seen = [0, 0]

    def on_progress(d: int, t: int) -> None:
        seen[0] += d
        seen[1] += t

    out = run_tasks(chatty, [Task(f"u{i}") for i in range(5)], None, workers=2, on_progress=on_progress)
    assert not out.failures and sum(s["calls"] for s in out.stats.values()) == 5
    assert seen == [15_000, 45_000]
    captured = capfd.readouterr()
    for i in range(5):
        assert f"printed by u{i}" in captured.out and f"warned by u{i}" in captured.err


def slot_of(task: Task, cfg: object) -> Stats:
    time.sleep(0.3)  # both workers are busy at once: each task runs in its own worker
    st = Stats()
    st.add(f"slot{os.environ[WORKER_SLOT]}.pid{os.getpid()}")
    return st


def test_pool_workers_have_distinct_slots() -> None:
    out = run_tasks(slot_of, [Task("a"), Task("b")], None, workers=2)
    keys = [k for s in out.stats.values() for k in s.counts]
    slots = sorted(k.split(".")[0] for k in keys)
    assert not out.failures and slots == ["slot0", "slot1"], keys


def test_a_stopped_pool_kills_its_workers_mid_task() -> None:
    """An interrupted run stops the pool's workers at once (SIGTERM, then SIGKILL), found through the processes
    the pool's context launched."""
    from ettin_data.executors.local import Pool

    pool = Pool(2)
    for _ in range(2):
        pool.executor.submit(time.sleep, 60)
    deadline = time.monotonic() + 30
    while sum(p.is_alive() for p in pool.ctx.launched) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = list(pool.ctx.launched)
    started = time.monotonic()
    pool.stop()
    assert len(workers) == 2 and not any(p.is_alive() for p in workers)
    assert time.monotonic() - started < 5  # not the 60 s their task would take
