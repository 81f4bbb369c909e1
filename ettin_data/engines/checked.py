"""A fast engine with the reference beside it: what ``--engine auto`` encodes with.

Per batch: the guard routes documents of its known divergence classes to the reference; the rest go to the
fast engine. With ``--verify full`` a second, independent engine (the *checker*, another library) encodes
every fast-path document too: agreement is accepted, a disagreement sends the document to the reference
(counted). In every mode a deterministic sample of fast-path documents and the start of each unit are
verified against the reference (``guard.verify_mask``, ``SPOT_CHARS``); a difference there raises
:class:`Mismatch` and the caller redoes the whole unit with the reference. The outputs of both engines are
merged back into document order.

``checked=False`` is an explicitly requested engine (``--engine fastokens`` ...): alone, no routing, no
verification.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..stats import Stats
from .guard import SPOT_CHARS, Guard, Mismatch, verify_mask
from .reference import ReferenceEngine

__all__ = ["Checked"]


class Checked:
    """``fast`` behind ``guard`` (routing), ``checker`` (None, or a second engine that encodes every fast-path
    document) and the reference's sampled verification; ``checked=False``: ``fast`` alone."""

    def __init__(self, fast: Any, reference: ReferenceEngine, guard: Guard | None, checker: Any = None,
                 checked: bool = True):
        self.fast, self.reference, self.guard, self.checker, self.checked = fast, reference, guard, checker, checked
        self.name = fast.name

    def encode(self, texts: list[str], add_special_tokens: bool, *, unit: str = "", doc_ids: list[str] | None = None,
               first_index: int = 0, st: Stats | None = None) -> tuple[np.ndarray, np.ndarray]:
        st = st if st is not None else Stats()
        n = len(texts)
        if not self.checked:
            ids, lengths = self._call(self.fast, texts, add_special_tokens, unit)
            st.add("engine.fast", n)
            return ids, lengths
        routed = self.guard.routed(texts) if self.guard is not None else np.zeros(n, bool)
        st.add("engine.routed", int(np.count_nonzero(routed)))
        fast_idx = np.flatnonzero(~routed)
        ids, lengths = self._call(self.fast, texts if len(fast_idx) == n else [texts[i] for i in fast_idx],
                                  add_special_tokens, unit)
        if self.checker is not None and len(fast_idx):
            bad = self._disagreeing(texts, fast_idx, ids, lengths, add_special_tokens, unit)
            st.add("engine.checked", len(fast_idx))
            if len(bad):
                st.add("engine.disagreements", len(bad))
                keep = np.ones(len(fast_idx), bool)
                keep[bad] = False
                ids, lengths = _take(ids, lengths, keep)
                routed[fast_idx[bad]] = True
                fast_idx = fast_idx[keep]
        st.add("engine.fast", len(fast_idx))
        keys = doc_ids if doc_ids is not None else [str(first_index + i) for i in range(n)]
        check = np.flatnonzero(verify_mask(unit, keys)[fast_idx])
        if len(check):
            self._verify(texts, keys, fast_idx, check, ids, lengths, add_special_tokens, unit)
            st.add("engine.verified", len(check))
        if first_index == 0 and len(fast_idx):
            self._spot_check(texts[fast_idx[0]][:SPOT_CHARS], add_special_tokens, unit, keys[fast_idx[0]])
            st.add("engine.spot_checked")
        if len(fast_idx) == n:
            return ids, lengths
        ref_idx = np.flatnonzero(routed)
        ref_ids, ref_lengths = self.reference.encode([texts[i] for i in ref_idx], add_special_tokens)
        return _merge(n, (fast_idx, ids, lengths), (ref_idx, ref_ids, ref_lengths))

    @staticmethod
    def _call(engine: Any, texts: list[str], add_special_tokens: bool, unit: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            return engine.encode(texts, add_special_tokens)
        except Exception as e:  # an error (or a Rust panic) inside a fast engine: the unit is redone with the reference
            first = (str(e).splitlines() or [type(e).__name__])[0][:200]
            raise Mismatch(f"{unit}: {engine.name} failed ({type(e).__name__}: {first})") from e

    def _disagreeing(self, texts: list[str], fast_idx: np.ndarray, ids: np.ndarray, lengths: np.ndarray,
                     add_special_tokens: bool, unit: str) -> np.ndarray:
        """Positions (in ``fast_idx``) of the documents whose checker ids differ from the fast engine's."""
        sub = texts if len(fast_idx) == len(texts) else [texts[i] for i in fast_idx]
        cids, clengths = self._call(self.checker, sub, add_special_tokens, unit)
        if np.array_equal(lengths, clengths):
            diff = np.flatnonzero(ids != cids)
            return np.unique(np.searchsorted(np.cumsum(lengths), diff, side="right")) if len(diff) else diff
        ends, cends = np.cumsum(lengths), np.cumsum(clengths)
        return np.array([j for j, (e, n, ce, cn) in enumerate(zip(ends.tolist(), lengths.tolist(), cends.tolist(),
                                                                      clengths.tolist(), strict=True))
                         if n != cn or not np.array_equal(ids[e - n:e], cids[ce - cn:ce])], np.int64)

    def _spot_check(self, text: str, add_special_tokens: bool, unit: str, key: str) -> None:
        if self.guard is not None and self.guard.match(text):
            return
        a, _ = self.fast.encode([text], add_special_tokens)
        b, _ = self.reference.encode([text], add_special_tokens)
        if not np.array_equal(a, b):
            raise Mismatch(f"{unit}: start of document {key!r}: {self.fast.name} ids differ from tokenizers")

    def _verify(self, texts: list[str], keys: list[str], fast_idx: np.ndarray, check: np.ndarray, ids: np.ndarray,
                lengths: np.ndarray, add_special_tokens: bool, unit: str) -> None:
        starts = np.concatenate(([0], np.cumsum(lengths)))
        ref_ids, ref_lengths = self.reference.encode([texts[fast_idx[j]] for j in check], add_special_tokens)
        pos = 0
        for j, n in zip(check.tolist(), ref_lengths.tolist(), strict=True):
            got = ids[starts[j]:starts[j + 1]]
            if len(got) != n or not np.array_equal(got, ref_ids[pos:pos + n]):
                raise Mismatch(f"{unit}: document {keys[fast_idx[j]]!r}: {self.fast.name} ids differ from tokenizers")
            pos += n


def _take(ids: np.ndarray, lengths: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flat ids and lengths of the documents where ``keep`` is True."""
    return ids[np.repeat(keep, lengths)], lengths[keep]


def _merge(n: int, *parts: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Interleave (document indices, flat ids, lengths) of several engines back into document order."""
    lengths = np.zeros(n, np.int64)
    src_start = np.zeros(n, np.int64)
    base = 0
    for idx, _, lens in parts:
        lengths[idx] = lens
        src_start[idx] = base + np.concatenate(([0], np.cumsum(lens)[:-1])) if len(lens) else 0
        base += int(lens.sum())
    flat = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.uint32)
    out_start = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    gather = np.repeat(src_start - out_start, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
    return flat[gather].astype(np.uint32, copy=False), lengths
