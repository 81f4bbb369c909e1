"""The per-user cache of derived files (never of results): tokie's binary form of a tokenizer.json
(``engines/tokie_engine.py``) and chunk's word-start table of a tokenizer.json (``chunking.py``), so that
pool workers, which every run starts afresh, do not rebuild them (each ~0.05-0.25 s per process).

Entries are named by a hash of everything they are derived from, written atomically, and anything
unreadable is rebuilt. ``$ETTIN_DATA_CACHE`` is the folder (empty: no cache), else
``$XDG_CACHE_HOME/ettin-data`` or ``~/.cache/ettin-data``. A cache that cannot be written changes nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["cache_dir", "store"]


def cache_dir() -> Path | None:
    """The cache folder (None: caching is off)."""
    env = os.environ.get("ETTIN_DATA_CACHE")
    if env is not None:
        return Path(env).expanduser() if env.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ettin-data"


def store(entry: Path, write: Callable[[str], None]) -> None:
    """Create ``entry`` atomically with ``write(temporary path)``; failures (read-only or full disk) are ignored."""
    tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        write(str(tmp))
        os.replace(tmp, entry)
    except Exception:
        with contextlib.suppress(OSError):
            tmp.unlink()
