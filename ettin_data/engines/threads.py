"""Thread confinement of the fast engines: a worker uses exactly the CPUs of its budget, whatever engine.

The executor gives every worker a thread budget in ``RAYON_NUM_THREADS`` (workers x threads = cores). The fast
engines size their threads differently: tokie 0.1.4 from ``std::thread::available_parallelism()`` (the CPUs in
the calling thread's affinity mask, taken at a process's first call), fastokens from ``FASTOKENS_BPE_THREADS``
and rayon, nanotoken from its ``parallel`` flag. So every engine call runs inside :func:`pinned`: the calling
thread is narrowed to its budget of CPUs (a pool worker takes the CPUs of its slot, worker k: CPUs
k*threads.., so two workers never share a CPU; outside a pool, starting with the CPU the thread runs on) and
its mask restored afterwards. Threads an engine starts inherit the mask (measured: CPU time = wall time with
a budget of 1 for each engine, up to 1.8x wall time without).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from ..executors.base import WORKER_SLOT

__all__ = ["thread_budget", "pinned"]


def thread_budget() -> int:
    """Threads this process may use: the executor's ``RAYON_NUM_THREADS`` (else every allowed CPU)."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
    try:
        want = int(os.environ.get("RAYON_NUM_THREADS", "0"))
    except ValueError:
        want = 0
    return min(allowed, want) if want > 0 else allowed


def _current_cpu() -> int | None:
    try:  # field 39 of /proc/thread-self/stat: the CPU this thread last ran on
        with open("/proc/thread-self/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return None


def _slot() -> int | None:
    """This process's worker slot in a local pool (``executors.base.WORKER_SLOT``), None outside one."""
    try:
        return int(os.environ[WORKER_SLOT])
    except (KeyError, ValueError):
        return None


@contextlib.contextmanager
def pinned(threads: int) -> Iterator[None]:
    """Narrow the calling thread's CPU mask to ``threads`` CPUs for the duration (see the module docstring)."""
    try:
        mask = os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover - not Linux
        yield
        return
    if threads >= len(mask):
        yield
        return
    cpus = sorted(mask)
    slot = _slot()
    if slot is not None:
        start = slot * threads
    else:
        here = _current_cpu()
        start = cpus.index(here) if here in mask else 0
    os.sched_setaffinity(0, {cpus[(start + i) % len(cpus)] for i in range(threads)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, mask)
