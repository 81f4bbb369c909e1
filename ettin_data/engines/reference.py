"""The reference engine: Hugging Face ``tokenizers`` ``encode_batch``, what tokenize has always done.

Its ids define correct output; every other engine is checked against it. ``encode`` returns the ids of a
batch as one flat ``uint32`` array plus per-document lengths, the common shape of all engines.
"""

from __future__ import annotations

from array import array
from typing import Any

import numpy as np

__all__ = ["ReferenceEngine"]

_U32 = "I" if array("I").itemsize == 4 else "L"


class ReferenceEngine:
    """``Tokenizer.encode_batch`` (truncation and padding off: documents are always tokenized whole)."""

    name = "tokenizers"

    def __init__(self, tok: Any):
        self.tok = tok

    def encode(self, texts: list[str], add_special_tokens: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(flat uint32 ids of all documents in order, int64 length of each document)."""
        flat = array(_U32)
        lengths = array("q")
        for enc in self.tok.encode_batch(texts, add_special_tokens=add_special_tokens):
            ids = enc.ids
            flat.extend(ids)  # array.extend(list) is ~3x faster than numpy from a list of ints
            lengths.append(len(ids))
        return np.frombuffer(flat, np.uint32), np.frombuffer(lengths, np.int64)
