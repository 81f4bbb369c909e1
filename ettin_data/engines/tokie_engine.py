"""The fast engine: PyPI ``tokie`` (Rust), ``encode_batch_flat`` -> flat uint32 ids + lengths, no
per-document Python objects.

Threads: tokie 0.1.4 does not use rayon and ignores ``RAYON_NUM_THREADS``; it splits a batch over
``std::thread::available_parallelism()`` scoped threads, i.e. the CPUs in the calling thread's affinity
mask (checked on 2 cores: 2 extra threads per call with ``RAYON_NUM_THREADS=1``, none under
``taskset -c 0``; the count is taken at a process's first call). The executor gives every worker a thread
budget in ``RAYON_NUM_THREADS`` (workers x threads = cores), so during each call the calling thread is
pinned to that many CPUs (starting with the one it runs on) and its mask restored afterwards; threads tokie
starts inherit the mask, so a worker never uses more CPUs than its budget (measured: CPU time = wall time
with a budget of 1, 1.8x wall time without).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TokieEngine", "tokie_version", "thread_budget"]


def tokie_version() -> str | None:
    """The installed tokie version, or None (not installed / not installable on this platform)."""
    import importlib.metadata as md

    try:
        return md.version("tokie")
    except md.PackageNotFoundError:
        return None


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


@contextlib.contextmanager
def _pinned(threads: int) -> Iterator[None]:
    """Narrow the calling thread's CPU mask to ``threads`` CPUs for the duration (tokie sizes its thread
    count from it), then restore it."""
    try:
        mask = os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover - not Linux
        yield
        return
    if threads >= len(mask):
        yield
        return
    cpus = sorted(mask)
    here = _current_cpu()
    start = cpus.index(here) if here in mask else 0
    os.sched_setaffinity(0, {cpus[(start + i) % len(cpus)] for i in range(threads)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, mask)


class TokieEngine:
    """tokie's ``encode_batch_flat`` on one tokenizer.json (truncation and padding off)."""

    name = "tokie"

    def __init__(self, path: str | Path):
        import tokie

        self.tok: Any = tokie.Tokenizer.from_json(str(path))
        self.tok.no_truncation()
        self.tok.no_padding()

    def encode(self, texts: list[str], add_special_tokens: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(flat uint32 ids of all documents in order, int64 length of each document)."""
        with _pinned(thread_budget()):
            ids, lengths = self.tok.encode_batch_flat(texts, add_special_tokens=add_special_tokens)
        return ids, lengths.astype(np.int64, copy=False)
