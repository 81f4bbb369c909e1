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

Loading: tokie parses a tokenizer.json in ~0.25 s (ModernBERT), its own ``.tkz`` binary form in ~0.015 s,
and every worker process loads the tokenizer. So the first load of a tokenizer.json saves its ``.tkz``
in a cache folder, keyed by the json's sha256 and the tokie version, and later loads (every other worker,
every later run) read that (``cache.py``: ``$ETTIN_DATA_CACHE``, else ``~/.cache/ettin-data``; an
unreadable entry is parsed from the json again and rewritten). What a cached tokenizer encodes is checked
like a freshly parsed one: the load-time probe and the guard's verification (``engines/``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import cache_dir, store
from ..executors.base import WORKER_SLOT

__all__ = ["TokieEngine", "tokie_version", "thread_budget", "cache_dir", "load_tokie"]


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


def _slot() -> int | None:
    """This process's worker slot in a local pool (``executors.base.WORKER_SLOT``), None outside one."""
    try:
        return int(os.environ[WORKER_SLOT])
    except (KeyError, ValueError):
        return None


@contextlib.contextmanager
def _pinned(threads: int) -> Iterator[None]:
    """Narrow the calling thread's CPU mask to ``threads`` CPUs for the duration (tokie sizes its thread
    count from it), then restore it. A pool worker takes the CPUs of its slot (worker k: CPUs k*threads..),
    so the workers' tokie calls never share a CPU (choosing the CPU a worker happens to run on did, now and
    then: ~3% slower on 2 cores); outside a pool, the CPU the thread runs on."""
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


def load_tokie(path: str | Path, data: bytes | None = None) -> Any:
    """``tokie.Tokenizer`` of the tokenizer.json at ``path`` (``data``: its bytes, if already read), from
    the binary cache when present (see the module docstring), else parsed and then cached."""
    import tokie

    folder = cache_dir()
    if folder is None:
        return tokie.Tokenizer.from_json(str(path))
    if data is None:
        data = Path(path).read_bytes()
    entry = folder / f"tokie-{tokie_version()}-{hashlib.sha256(data).hexdigest()[:40]}.tkz"
    if entry.is_file():
        try:
            return tokie.Tokenizer.from_file(str(entry))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # unreadable (a damaged file: TokieError or a Rust panic): parse the json again
            pass
    tok = tokie.Tokenizer.from_json(str(path))
    store(entry, tok.save)
    return tok


class TokieEngine:
    """tokie's ``encode_batch_flat`` on one tokenizer.json (truncation and padding off)."""

    name = "tokie"

    def __init__(self, path: str | Path, data: bytes | None = None):
        self.tok: Any = load_tokie(path, data)
        self.tok.no_truncation()
        self.tok.no_padding()

    def encode(self, texts: list[str], add_special_tokens: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(flat uint32 ids of all documents in order, int64 length of each document)."""
        with _pinned(thread_budget()):
            ids, lengths = self.tok.encode_batch_flat(texts, add_special_tokens=add_special_tokens)
        return ids, lengths.astype(np.int64, copy=False)
