"""Tokenizer engines: the reference (``tokenizers``) and a fast engine (``tokie``) proven against it.

Every engine has ``encode(texts, add_special_tokens) -> (flat uint32 ids, int64 lengths)``.
:func:`select` turns ``--engine auto|tokenizers|tokie`` and a tokenizer.json into the engine a run uses and
a :class:`Choice` that says what was used and why (summary and ``ettin_meta.json``):

  tokenizers  the reference, ``Tokenizer.encode_batch``.
  auto        tokie behind the exactness guard (``guard.py``): documents that can hit a known divergence
              class go to the reference, a deterministic sample of the rest is verified against it, and a
              mismatch raises :class:`Mismatch` (the caller redoes the unit with the reference, counted).
              Output is byte-identical to ``tokenizers``.
  tokie       tokie alone, no routing, no verification: only when asked for (may differ from the reference).

Falls back to the reference (stated in :class:`Choice`): tokie not installed, a tokenizer.json it cannot
load, ``--split-special-tokens`` (tokie has no such option), no proven guard for the tokenizer's family
(``auto``), or a difference on the probe texts at load time (e.g. a post-processor it applies differently).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..stats import Stats
from .guard import SPOT_CHARS, Guard, Mismatch, family_of, verify_mask
from .reference import ReferenceEngine
from .tokie_engine import TokieEngine, tokie_version

__all__ = ["ENGINES", "Choice", "Guarded", "Mismatch", "ReferenceEngine", "TokieEngine", "preselect", "select",
           "PROBE_TEXTS"]

ENGINES = ("auto", "tokenizers", "tokie")
TOKIE_RANGE = ((0, 1, 4), (0, 2, 0))  # tested: >=0.1.4,<0.2 (as pinned in pyproject.toml)
STAT_KEYS = ("engine.fast", "engine.routed", "engine.verified", "engine.spot_checked", "engine.mismatches",
             "engine.units_redone", "engine.units_tokie", "engine.units_tokenizers")

# checked once per process when tokie is selected: none of them is in a known divergence class
PROBE_TEXTS = (
    "", " ", "a", "Hello, world!", "The capital of France is Paris.", "don't won't it's we'll they're I'd I'm",
    "x 's y 'll z", "  two  spaces   three", "line\nbreak\n\nparagraph\r\nwindows", "tab\tseparated\tvalues",
    "1 12 123 1234 12345 3.14159 1e-9", "2026-12-03T01:02:03Z", "snake_case camelCase kebab-case",
    "def f(x):\n    return x ** 2  # comment\n", "<html><body class=\"x\">text</body></html>",
    "naïve café résumé Zürich", "日本語のテキストと中文文本", "한국어 텍스트", "Привет, мир", "مرحبا بالعالم",
    "emoji 😀👍🏽 family 👨‍👩‍👧", "\u00a0non-breaking\u00a0space", "zero\u200bwidth", "e\u0301 combining",
    "ﬁ ligature ß İ", "x" * 300, "word " * 200, "!!!???...,,,;;;", "$100 @user #tag %20 &amp;",
)


@dataclass(frozen=True)
class Choice:
    """What a run encodes with: recorded in the summary and ``ettin_meta.json`` (``engine``)."""

    requested: str
    used: str  # "tokenizers" or "tokie"
    guard: str | None = None  # the guard family (auto), None: no guard
    fallback: str | None = None  # why the reference is used although tokie was requested
    tokie_version: str | None = None

    def record(self) -> dict[str, Any]:
        return asdict(self)


class Guarded:
    """tokie with the reference beside it: routing by the guard's regex, sampled verification, and the
    merge of both engines' outputs back into document order. ``guard=None``: tokie alone (``--engine tokie``)."""

    def __init__(self, fast: Any, reference: ReferenceEngine, guard: Guard | None):
        self.fast, self.reference, self.guard = fast, reference, guard
        self.name = fast.name

    def encode(self, texts: list[str], add_special_tokens: bool, *, unit: str = "", doc_ids: list[str] | None = None,
               first_index: int = 0, st: Stats | None = None) -> tuple[np.ndarray, np.ndarray]:
        st = st if st is not None else Stats()
        n = len(texts)
        if self.guard is None:
            ids, lengths = self._fast(texts, add_special_tokens, unit)
            st.add("engine.fast", n)
            return ids, lengths
        routed = self.guard.routed(texts)
        fast_idx = np.flatnonzero(~routed)
        ref_idx = np.flatnonzero(routed)
        all_fast = len(ref_idx) == 0
        ids, lengths = self._fast(texts if all_fast else [texts[i] for i in fast_idx], add_special_tokens, unit)
        st.add("engine.fast", len(fast_idx))
        st.add("engine.routed", len(ref_idx))
        keys = doc_ids if doc_ids is not None else [str(first_index + i) for i in range(n)]
        check = np.flatnonzero(verify_mask(unit, keys)[fast_idx])
        if len(check):
            self._verify(texts, keys, fast_idx, check, ids, lengths, add_special_tokens, unit)
            st.add("engine.verified", len(check))
        if first_index == 0 and len(fast_idx):
            self._spot_check(texts[fast_idx[0]][:SPOT_CHARS], add_special_tokens, unit, keys[fast_idx[0]])
            st.add("engine.spot_checked")
        if all_fast:
            return ids, lengths
        ref_ids, ref_lengths = self.reference.encode([texts[i] for i in ref_idx], add_special_tokens)
        return _merge(n, (fast_idx, ids, lengths), (ref_idx, ref_ids, ref_lengths))

    def _fast(self, texts: list[str], add_special_tokens: bool, unit: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            return self.fast.encode(texts, add_special_tokens)
        except Exception as e:  # an error (or a Rust panic) inside tokie: the unit is redone with the reference
            first = (str(e).splitlines() or [type(e).__name__])[0][:200]
            raise Mismatch(f"{unit}: {self.fast.name} failed ({type(e).__name__}: {first})") from e

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


def header_of(tok: Any) -> dict[str, Any]:
    """The parts of a tokenizer that decide the engine, in tokenizer.json form, taken from the parsed
    ``tokenizers`` object (each component serialises alone: no 3 MB JSON parse per process)."""
    def part(component: Any) -> Any:
        return json.loads(component.__getstate__()) if component is not None else None

    model = tok.model
    head = {"type": type(model).__name__}
    for key in ("dropout", "byte_fallback", "continuing_subword_prefix", "end_of_word_suffix"):
        head[key] = getattr(model, key, None)
    return {"model": head, "normalizer": part(tok.normalizer), "pre_tokenizer": part(tok.pre_tokenizer),
            "post_processor": part(tok.post_processor)}


def _version_ok(version: str) -> bool:
    try:
        v = tuple(int(x) for x in version.split(".")[:3])
    except ValueError:
        return False
    return TOKIE_RANGE[0] <= v < TOKIE_RANGE[1]


def _probe(fast: Any, reference: ReferenceEngine, guard: Guard | None, extra: list[str]) -> str | None:
    """The first probe text on which the engines differ (None: they agree on all, with and without special
    tokens). Texts the guard routes are left out (they are known to differ and never reach tokie)."""
    texts = [t for t in (*PROBE_TEXTS, *extra) if guard is None or not guard.match(t)]
    for special in (True, False):
        a, la = fast.encode(texts, special)
        b, lb = reference.encode(texts, special)
        if not np.array_equal(la, lb) or not np.array_equal(a, b):
            ends = np.cumsum(lb)
            for i, t in enumerate(texts):
                if la[i] != lb[i] or not np.array_equal(a[ends[i] - la[i]:ends[i]], b[ends[i] - lb[i]:ends[i]]):
                    return t
            return texts[0]
    return None


def preselect(requested: str, tok: Any, *, split_special_tokens: bool = False) -> Choice:
    """What can be decided without loading tokie: ``used="tokenizers"`` (requested, or a fallback with its
    reason), or ``used="tokie"`` meaning tokie is the candidate, still to be loaded and probed by
    :func:`select` (which may fall back)."""
    if requested not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {requested!r}")
    if requested == "tokenizers":
        return Choice(requested, "tokenizers")
    version = tokie_version()

    def fallback(why: str) -> Choice:
        return Choice(requested, "tokenizers", fallback=why, tokie_version=version)

    if split_special_tokens:
        return fallback("--split-special-tokens: tokie always encodes special-token strings as special ids")
    if version is None:
        return fallback("tokie is not installed (pip install 'tokie>=0.1.4,<0.2'; wheels for Linux x86_64)")
    if not _version_ok(version):
        return fallback(f"tokie {version} is untested (tested: >=0.1.4,<0.2)")
    obj = header_of(tok)
    family = family_of(obj)
    if requested == "auto" and family is None:
        model = (obj.get("model") or {}).get("type")
        pre = (obj.get("pre_tokenizer") or {}).get("type")
        return fallback(f"no proven guard for this tokenizer (model {model}, pre-tokenizer {pre})")
    return Choice(requested, "tokie", guard=family if requested == "auto" else None, tokie_version=version)


def select(requested: str, tok: Any, path: str | Path, *, split_special_tokens: bool = False) -> tuple[Any, Choice]:
    """The engine for ``--engine requested`` and the tokenizer ``tok`` parsed from ``path`` (its
    tokenizer.json), and the :class:`Choice` that describes it. Never raises for tokie problems: those fall
    back to the reference engine, and the Choice says why."""
    reference = ReferenceEngine(tok)
    choice = preselect(requested, tok, split_special_tokens=split_special_tokens)
    if choice.used == "tokenizers":
        return reference, choice

    def fallback(why: str) -> tuple[Any, Choice]:
        return reference, Choice(requested, "tokenizers", fallback=why, tokie_version=choice.tokie_version)

    try:
        fast = TokieEngine(path)
    except Exception as e:  # tokie.TokieError, or a panic surfaced as another exception
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        return fallback(f"tokie cannot load this tokenizer.json ({first})")
    header = header_of(tok)
    family = family_of(header)
    guard = Guard.for_family(family, nfc=header["normalizer"] == {"type": "NFC"}) if family else None
    added = [str(a.content) for a in tok.get_added_tokens_decoder().values()]
    bad = _probe(fast, reference, guard, [f"x {a} y" for a in added[:200]])
    if bad is not None:
        return fallback(f"tokie and tokenizers differ on the probe text {bad[:40]!r} (special tokens, normalizer "
                        "or post-processor handled differently)")
    return Guarded(fast, reference, guard if requested == "auto" else None), choice
