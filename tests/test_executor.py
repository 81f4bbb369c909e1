"""The local process pool: every progress message and every line a worker prints reaches the driver,
although workers leave with ``os._exit`` once multiprocessing is done with them (executors.local._exit_now);
every worker of a pool has its own slot (engines pin their threads by it). Each holds for forked and for spawned
workers; workers are forked only from a single-threaded process, as the CLI's driver is, and a forked run
writes the same bytes as a spawned one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_faults import tree, tree_diff

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


@pytest.fixture(params=["fork", "spawn"])
def start(request, monkeypatch) -> str:
    """Both ways a pool's workers start (the pytest process has threads, so it would always spawn)."""
    from ettin_data.executors import local

    monkeypatch.setattr(local, "start_method", lambda: request.param)
    return request.param


def test_pool_workers_deliver_all_progress_and_output(capfd, start) -> None:
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


def test_pool_workers_have_distinct_slots(start) -> None:
    out = run_tasks(slot_of, [Task("a"), Task("b")], None, workers=2)
    keys = [k for s in out.stats.values() for k in s.counts]
    slots = sorted(k.split(".")[0] for k in keys)
    assert not out.failures and slots == ["slot0", "slot1"], keys


def test_a_stopped_pool_kills_its_workers_mid_task(start) -> None:
    """An interrupted run stops the pool's workers at once (SIGTERM, then SIGKILL), found through the processes
    the pool's context launched."""
    from ettin_data.executors.local import Pool

    pool = Pool(2)
    pool.launch()
    assert pool.ctx.method == start
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


def test_workers_are_forked_only_from_a_single_threaded_process() -> None:
    """A thread (here Python's; an engine's or OpenBLAS's count too) may hold a lock at the fork: spawn then."""
    code = ("import threading\nfrom ettin_data.executors.local import start_method\nprint(start_method())\n"
            "ev = threading.Event()\nt = threading.Thread(target=ev.wait)\nt.start()\nprint(start_method())\n"
            "ev.set()")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["fork", "spawn"]


def _cli_tokenize(text_dataset: Path, out: Path, env: dict[str, str]) -> str:
    """``ettin-data tokenize -w 2`` as a user runs it; how its workers started (its run log)."""
    cmd = [sys.executable, "-m", "ettin_data", "tokenize", str(text_dataset), "-o", str(out), "-w", "2", "-q",
           "-t", "builtin:modernbert"]
    subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    (log,) = (out / ".ettin_logs").glob("tokenize-*.jsonl")
    (ev,) = [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "workers"]
    assert ev["count"] == 2
    return ev["start"]


def test_the_cli_forks_its_workers_and_writes_what_spawned_workers_write(tmp_path, text_dataset) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    assert _cli_tokenize(text_dataset, tmp_path / "forked", env) == "fork"
    # a driver with a second thread (OpenBLAS's, as a user's setting gives it) spawns its workers
    if _cli_tokenize(text_dataset, tmp_path / "spawned", {**env, "OPENBLAS_NUM_THREADS": "2"}) != "spawn":
        pytest.skip("OpenBLAS started no thread of its own here (one CPU?)")
    assert tree_diff(tree(tmp_path / "forked"), tree(tmp_path / "spawned")) == []
