"""The local executor: a process pool (or, for one worker, this process). A worker that dies costs only the
task it was running; Ctrl-C/SIGTERM stop every worker (SIGTERM, then SIGKILL).

Workers are forked when that is safe, else spawned (:func:`start_method`). A forked worker inherits what the
driver has loaded (its imports; tokenize's parsed tokenizer and fast engine) and starts in ~10 ms; a spawned
one starts a new interpreter, imports the stage and loads the tokenizer again (~0.3 s and ~0.3 CPU-s for the
interpreter alone). Forking is safe only while the driver has one thread (a thread holding a lock at the fork
would leave it held forever in the child): the CLI's driver is single-threaded until its progress display
starts (one OpenBLAS thread; no engine has encoded anything), so a forked pool is launched just before that,
once the driver has checked and prepared everything (:meth:`Pool.launch`); a pool that cannot be forked (a
program with threads, a pool renewed after a worker died) is spawned at once, before the driver plans, so that
its start-up overlaps the planning. Either way a worker runs the same code on the same inputs: outputs are
byte-identical (tested). A forked worker holds no output lock (``outputs.py`` closes them in the child)."""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .. import interrupt, progress
from ..stats import Stats
from ..units import Task
from .base import WORKER_DIED, WORKER_SLOT, Outcome, call, os_threads, record, worker_env

__all__ = ["run_local", "prestart", "Pool", "start_method"]

GRACE = 2.5  # seconds an interrupted run's workers get between SIGTERM and SIGKILL


def _init_worker(queue: Any, env: dict[str, str], driver: int, slots: Any) -> None:
    interrupt.die_with_parent(driver)  # no worker outlives the driver, however it ends
    os.environ.update(env)
    with slots.get_lock():  # this worker's slot: 0..n-1, distinct within a pool
        os.environ[WORKER_SLOT] = str(slots.value)
        slots.value += 1
    progress.set_sink(lambda d, t: queue.put((d, t)))
    atexit.register(_exit_now)


def _exit_now() -> None:
    """A pool worker's last step: by the time its atexit handlers run, multiprocessing has sent every result,
    flushed the progress queue and joined its threads; what remains is freeing the interpreter (the parsed
    tokenizers alone take ~0.05 s per worker), which the driver would wait for in ``pool.shutdown``. The
    exit code is read by nobody (the pool notices a dead worker by its sentinel, not its code)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def _warm(module: str | None) -> None:
    """A worker's first job: import the stage's module (a spawned worker, while the driver plans)."""
    if module:
        importlib.import_module(module)


def start_method() -> str:
    """``fork`` when this process has exactly one thread (Linux: ``/proc/self/task``, which also counts the
    threads of native libraries, e.g. an engine's thread pool or OpenBLAS), else ``spawn``."""
    return "fork" if sys.platform == "linux" and os_threads() == 1 else "spawn"


class _Launcher:
    """A multiprocessing context (``method``) that records every process it launches in ``launched``:
    ``ProcessPoolExecutor`` launches its workers through the context it is given (``mp_context``), so the pool
    knows its workers without reading the executor's private state, and can stop them mid-task
    (:meth:`Pool.stop`)."""

    def __init__(self, method: str, launched: list[Any]) -> None:
        import multiprocessing as mp

        self._ctx = mp.get_context(method)
        self.method = method
        self.launched = launched

    def __getattr__(self, name: str) -> Any:  # Queue, SimpleQueue, Lock, get_start_method, ...
        return getattr(self._ctx, name)

    def Process(self, *args: Any, **kwargs: Any) -> Any:  # multiprocessing's name
        proc = self._ctx.Process(*args, **kwargs)
        self.launched[:] = [p for p in self.launched if p.exitcode is None]  # forget the workers that ended
        self.launched.append(proc)
        return proc


class Pool:
    """A process pool with its progress queue and worker slots. Created before the driver plans
    (:func:`prestart`): spawned workers start at once (``warm``: a module they import meanwhile), forked ones
    when the driver calls :meth:`launch` (``on_launch(start method)`` is told either way)."""

    def __init__(self, workers: int, warm: str | None = None, on_launch: Callable[[str], None] = lambda m: None):
        self.launched: list[Any] = []
        self.n = workers
        import multiprocessing as mp

        spawn = mp.get_context("spawn")  # a spawn context's queue and counter serve either kind of worker
        with interrupt.signals_blocked():  # may start the resource tracker: no group signal may kill it
            self.queue = spawn.Queue()
            self.slots = spawn.Value("i", 0)
        self.initargs = (self.queue, worker_env(workers), os.getpid(), self.slots)
        self.taken = False  # a run took it over (and shuts it down)
        self.on_launch = on_launch
        self.ctx: _Launcher | None = None
        self.executor: ProcessPoolExecutor | None = None
        if start_method() == "spawn":
            self.launch(warm)

    def launch(self, warm: str | None = None) -> None:
        """Start the workers now, unless they run already: forked if this process has one thread, else spawned."""
        if self.executor is not None:
            return
        self.ctx = _Launcher(start_method(), self.launched)
        self.executor = self._new()
        with interrupt.signals_blocked():  # starts the workers: see interrupt.signals_blocked
            for _ in range(self.n):  # a fork-context executor starts every worker at its first task
                self.executor.submit(_warm, warm)
        self.on_launch(self.ctx.method)

    def serves(self, tasks: int, workers: int) -> bool:
        """Whether a run of ``tasks`` tasks on ``workers`` workers uses this pool (else it takes the usual path)."""
        n = min(workers, tasks)
        return n > 1 and n == self.n

    def _new(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.n, mp_context=self.ctx, initializer=_init_worker, initargs=self.initargs)

    def renew(self) -> None:
        """A new pool after a worker died (the old one is broken); its workers take slots 0..n-1 again."""
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        self.slots.value = 0
        self.ctx = _Launcher(start_method(), self.launched)  # the driver has threads by now: spawned
        self.executor = self._new()

    def stop(self) -> None:
        """Stop the workers now (an interrupted run, or a pool the run turned out not to need)."""
        self.kill_workers()
        self.close()

    def kill_workers(self, grace: float = GRACE) -> None:
        """Stop every worker mid-task: SIGTERM, then SIGKILL for those still alive after ``grace`` seconds. A
        unit that was being written stays a ``.partial`` folder, which the next run redoes."""
        procs = [p for p in self.launched if p.pid is not None and p.exitcode is None]  # started, not ended
        for p in procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + grace
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:  # SIGKILL cannot be blocked, but a process busy in the kernel (D state) dies when it returns
            p.join(10)
        # the executor's own thread joins (reaps) the dead workers too: wait for it, else a worker it is reaping
        # can still look alive to this thread for a moment (waitpid answers only the first caller)
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
        self.queue.close()
        self.queue.join_thread()


@contextlib.contextmanager
def prestart(cfg: Any, warm: str | None = None, on_launch: Callable[[str], None] = lambda m: None) -> Iterator[Pool]:
    """A pool of ``cfg.workers`` processes for :func:`run_local` (see :class:`Pool`); stopped on the way out
    unless a run took it over."""
    pool = Pool(cfg.workers, warm, on_launch)
    try:
        yield pool
    finally:
        if not pool.taken:
            pool.stop()


def run_local(
    fn: Callable[[Task, Any], Stats],
    tasks: Sequence[Task],
    cfg: Any,
    *,
    workers: int,
    on_progress: Callable[[int, int], None] | None = None,
    on_done: Callable[[], None] = lambda: None,
    pool: Pool | None = None,
) -> Outcome:
    """Run ``fn(task, cfg)`` for every task in this machine's processes (``pool``: one started ahead by
    :func:`prestart`, used when it has the workers this run needs)."""
    out = Outcome()
    n = min(workers, len(tasks))
    if pool is not None and not pool.serves(len(tasks), workers):
        pool.stop()  # fewer tasks than workers: the run takes the usual path (its thread budget too)
        pool.taken = True
        pool = None
    if not tasks:
        return out
    if workers <= 1 or len(tasks) == 1:
        os.environ.update(worker_env(1 if workers <= 1 else workers))
        progress.set_sink(on_progress)
        try:
            for t in tasks:
                record(out, t.name, call(fn, t, cfg), on_done)
        finally:
            progress.set_sink(None)
        return out
    if pool is None:
        pool = Pool(n)
    pool.launch()
    pool.taken = True
    return _run_pool(fn, tasks, cfg, pool, on_progress, on_done, out)


def _run_pool(fn, tasks, cfg, p: Pool, on_progress, on_done, out: Outcome) -> Outcome:
    queue, n = p.queue, p.n
    stop = threading.Event()

    def drain() -> None:
        import queue as q

        while not stop.is_set() or not queue.empty():
            try:
                item = queue.get(timeout=0.1)
            except q.Empty:
                continue
            except (EOFError, OSError):  # pragma: no cover - queue closed
                return
            if item is not None and on_progress:  # None: the wake-up put by the driver at the end
                on_progress(*item)

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    todo = list(tasks)[::-1]
    running: dict[Future, Task] = {}
    try:
        while todo or running:
            while todo and len(running) < n:  # at most one task per worker in flight: a dead worker
                t = todo.pop()  # costs only the tasks it was running
                with interrupt.signals_blocked():  # may start a worker: see interrupt.signals_blocked
                    running[p.executor.submit(call, fn, t, cfg)] = t
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            broken = False
            for f in done:
                t = running.pop(f)
                try:
                    record(out, t.name, f.result(), on_done)
                except BrokenProcessPool:
                    broken = True
                    record(out, t.name, ("error", WORKER_DIED, ""), on_done)
            if broken:
                for t in list(running.values()):
                    record(out, t.name, ("error", WORKER_DIED, ""), on_done)
                running.clear()
                p.renew()
    except BaseException:  # Ctrl-C, SIGTERM/SIGHUP (interrupt.Terminated) or a bug: stop the workers now
        p.kill_workers()
        raise
    finally:
        p.executor.shutdown(wait=True, cancel_futures=True)
        stop.set()
        if drainer.is_alive():  # wake it now, not at its next 0.1 s timeout (it reads what is put)
            queue.put(None)
        drainer.join(timeout=2)
        queue.close()
        queue.join_thread()
    order = {t.name: i for i, t in enumerate(tasks)}
    out.failures.sort(key=lambda x: order[x[0]])
    return out

