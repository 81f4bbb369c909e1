"""PyPI ``nanotoken`` (Rust, MIT): WordPiece (BERT-family) tokenizers only, cased and uncased.
``encode_batch`` returns flat uint32 ids + int64 offsets. It ignores the truncation stored in a
tokenizer.json (``max_length=None``: documents whole). It has no option to encode special-token strings as
plain text, so ``--split-special-tokens`` is not offered to it.

Threads: ``parallel=True`` encodes on a shared rayon pool, ``False`` on the calling thread; it is parallel only
with a budget above one thread, and every call runs pinned (``threads.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .library import LIBRARIES
from .threads import pinned, thread_budget

__all__ = ["Engine"]


class Engine:
    name = "nanotoken"

    def __init__(self, path: str | Path, data: bytes | None = None, split_special_tokens: bool = False):
        import nanotoken

        if split_special_tokens:
            raise ValueError("nanotoken cannot encode special-token strings as plain text")
        self.tok = nanotoken.Tokenizer.from_json(data if data is not None else Path(path).read_bytes())
        self.version = LIBRARIES["nanotoken"].version()

    def encode(self, texts: list[str], add_special_tokens: bool = True) -> tuple[np.ndarray, np.ndarray]:
        threads = thread_budget()
        with pinned(threads):
            out = self.tok.encode_batch(texts, add_special_tokens=add_special_tokens, max_length=None,
                                        parallel=threads > 1)
        return out.ids, np.diff(out.offsets)

