"""PyPI ``tokie`` (Rust, MIT OR Apache-2.0): ``encode_batch_flat`` -> flat uint32 ids + lengths, no
per-document Python objects. Byte-level BPE and WordPiece tokenizers; it needs routing rules for some
(``guard.py``). tokie 0.1.4 does not use rayon: it splits a batch over ``available_parallelism()`` threads,
i.e. the CPUs of the calling thread's mask, which ``threads.pinned`` narrows to the worker's budget.

Loading: tokie parses a tokenizer.json in ~0.25 s (ModernBERT), its own ``.tkz`` binary form in ~0.015 s,
and every worker process loads the tokenizer. So the first load of a tokenizer.json saves its ``.tkz``
in the per-user cache (``cache.py``), keyed by the json's sha256 and the tokie version, and later loads
(every other worker, every later run) read that (an unreadable entry is parsed from the json again and
rewritten). What a cached tokenizer encodes is checked like a freshly parsed one: the load-time probe and
the verification (``engines/``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import cache_dir, store
from .library import LIBRARIES
from .threads import pinned, thread_budget

__all__ = ["Engine", "load_tokie"]


def load_tokie(path: str | Path, data: bytes | None = None) -> Any:
    """``tokie.Tokenizer`` of the tokenizer.json at ``path`` (``data``: its bytes, if already read), from
    the binary cache when present (see the module docstring), else parsed and then cached."""
    import tokie

    folder = cache_dir()
    if folder is None:
        return tokie.Tokenizer.from_json(str(path))
    if data is None:
        data = Path(path).read_bytes()
    version = LIBRARIES["tokie"].version()
    entry = folder / f"tokie-{version}-{hashlib.sha256(data).hexdigest()[:40]}.tkz"
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


class Engine:
    """tokie's ``encode_batch_flat`` on one tokenizer.json (truncation and padding off)."""

    name = "tokie"

    def __init__(self, path: str | Path, data: bytes | None = None, split_special_tokens: bool = False):
        if split_special_tokens:
            raise ValueError("tokie cannot encode special-token strings as plain text")
        self.tok: Any = load_tokie(path, data)
        self.tok.no_truncation()
        self.tok.no_padding()
        self.version = LIBRARIES["tokie"].version()

    def encode(self, texts: list[str], add_special_tokens: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(flat uint32 ids of all documents in order, int64 length of each document)."""
        with pinned(thread_budget()):
            ids, lengths = self.tok.encode_batch_flat(texts, add_special_tokens=add_special_tokens)
        return ids, lengths.astype(np.int64, copy=False)
