"""PyPI ``fastokens`` (Rust + PCRE2, Apache-2.0): byte-level BPE tokenizers (GPT-2 style and cl100k-style
split regex, SentencePiece BPE with byte fallback). ``encode_batch_flat`` returns the ids of a batch as
little-endian uint32 bytes plus uint64 offsets: no per-document Python objects.

Threads: it splits work over ``FASTOKENS_BPE_THREADS`` threads and a rayon pool, started at first use; the
variable is set to the worker's budget before loading and every call runs pinned (``threads.py``), so its
threads inherit the worker's CPUs. It has no binary form of a loaded tokenizer (~0.25 s to parse
ModernBERT's tokenizer.json), so nothing is cached per user for it; the driver parses it while it checks the
tokenizer and forked workers inherit that (``ahead.py``). The threads variable is read at the first encode,
not at the parse (measured), so a tokenizer parsed in the driver runs on the worker's budget.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from . import ahead
from .library import LIBRARIES
from .threads import pinned, thread_budget

__all__ = ["Engine", "parse"]


def parse(data: bytes) -> Any:
    """The fastokens tokenizer of the tokenizer.json bytes ``data``."""
    import fastokens

    return fastokens.Tokenizer.from_json_str(data.decode("utf-8"))


class Engine:
    name = "fastokens"

    def __init__(self, path: str | Path, data: bytes | None = None, split_special_tokens: bool = False):
        os.environ["FASTOKENS_BPE_THREADS"] = str(thread_budget())
        data = data if data is not None else Path(path).read_bytes()
        self.tok = ahead.take(self.name, data) or parse(data)
        self.tok.no_truncation()
        self.tok.no_padding()
        self.split = split_special_tokens
        self.version = LIBRARIES["fastokens"].version()

    def encode(self, texts: list[str], add_special_tokens: bool = True) -> tuple[np.ndarray, np.ndarray]:
        with pinned(thread_budget()):
            ids, offsets = self.tok.encode_batch_flat(texts, add_special_tokens=add_special_tokens,
                                                      split_special_tokens=self.split)
        return np.frombuffer(ids, np.uint32), np.diff(np.frombuffer(offsets, np.uint64)).astype(np.int64)

