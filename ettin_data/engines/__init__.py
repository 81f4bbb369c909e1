"""Tokenizer engines: the reference (``tokenizers``) and fast engines proven against it, chosen per tokenizer.

Every engine has ``encode(texts, add_special_tokens) -> (flat uint32 ids, int64 lengths)`` (``library.py``).
:func:`select` turns ``--engine`` and a tokenizer.json into the engine a run uses and a :class:`Choice` that
says what was used and why (summary and ``ettin_meta.json``):

  tokenizers  the reference, ``Tokenizer.encode_batch_fast``.
  auto        the fastest engine proven for the tokenizer's family (``guard.PROVEN``: fastokens for byte-level
              BPE, nanotoken for WordPiece, tokie behind routing rules where those are missing), behind the
              checks of ``checked.py``: routing of known divergence classes, a verified sample, and with
              ``--verify full`` a second engine on every document. Output is byte-identical to ``tokenizers``.
  tokie, fastokens, nanotoken
              that engine alone, no routing, no verification: only when asked for (may differ).

An engine is skipped (the reason recorded in :attr:`Choice.skipped`) when its library is not installed, of an
untested version, cannot do what the options ask (``--split-special-tokens``), cannot load the tokenizer.json,
or differs from the reference on the probe texts at load time; ``auto`` then tries the next proven one, and
falls back to the reference when none is left (or the family has no proven engine: Unigram, SentencePiece...).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checked import Checked
from .guard import Guard, Mismatch, candidates, family_of
from .library import LIBRARIES
from .reference import ReferenceEngine

__all__ = ["ENGINES", "VERIFY", "Choice", "Checked", "Mismatch", "ReferenceEngine", "preselect", "select",
           "PROBE_TEXTS", "header_of"]

ENGINES = ("auto", "tokenizers", *LIBRARIES)
VERIFY = ("sample", "full")

# checked once per process when a fast engine is loaded: none of them is in a known divergence class
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
    used: str  # "tokenizers" or a fast engine's name
    version: str | None = None  # of the fast engine used
    guard: str | None = None  # the family whose proof auto relies on; None: the reference, or an engine alone
    verify: str | None = None  # auto: "sample" or "full"; None: nothing to verify (reference, or engine alone)
    checker: str | None = None  # --verify full: the second engine ("tokenizers" when no other library can)
    fallback: str | None = None  # why the reference is used although a fast engine was requested
    skipped: tuple[str, ...] = field(default=())  # engines passed over, each with its reason

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["skipped"] = list(self.skipped)
        return out


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


@dataclass(frozen=True)
class _Plan:
    requested: str
    names: tuple[str, ...]  # fast engines to try, in order
    family: str | None
    skipped: tuple[str, ...]
    verify: str


def _plan(requested: str, tok: Any, split_special_tokens: bool, verify: str) -> _Plan:
    if requested not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {requested!r}")
    if verify not in VERIFY:
        raise ValueError(f"verify must be one of {', '.join(VERIFY)}, got {verify!r}")
    if requested == "tokenizers":
        return _Plan(requested, (), None, (), verify)
    if requested != "auto":
        why = LIBRARIES[requested].unusable(split_special_tokens)
        return _Plan(requested, () if why else (requested,), None, (why,) if why else (), verify)
    header = header_of(tok)
    family = family_of(header)
    if family is None:
        model = (header.get("model") or {}).get("type")
        pre = (header.get("pre_tokenizer") or {}).get("type")
        return _Plan(requested, (), None, (f"no engine is proven for this tokenizer (model {model}, pre-tokenizer "
                                           f"{pre})",), verify)
    names, skipped = [], []
    for name in candidates(family):
        why = LIBRARIES[name].unusable(split_special_tokens)
        (skipped.append(why) if why else names.append(name))
    return _Plan(requested, tuple(names), family, tuple(skipped), verify)


def _checkers(plan: _Plan, primary: str, split_special_tokens: bool) -> list[str]:
    """Other libraries that can load the family, for ``--verify full`` (proven ones first)."""
    others = [n for n in (*candidates(plan.family or ""), *LIBRARIES) if n != primary
              and plan.family in LIBRARIES[n].families and not LIBRARIES[n].unusable(split_special_tokens)]
    return list(dict.fromkeys(others))


def preselect(requested: str, tok: Any, *, split_special_tokens: bool = False, verify: str = "sample") -> Choice:
    """The choice :func:`select` makes when every candidate loads and passes its probe, decided without loading
    any engine (the driver summarises a run with it when the units' counts confirm it)."""
    plan = _plan(requested, tok, split_special_tokens, verify)
    if not plan.names:
        return _fallback(plan, list(plan.skipped))
    name = plan.names[0]
    checker = None
    if requested == "auto" and verify == "full":
        checker = next(iter(_checkers(plan, name, split_special_tokens)), "tokenizers")
    return _fast_choice(plan, name, LIBRARIES[name].version(), checker, list(plan.skipped))


def _fast_choice(plan: _Plan, name: str, version: str | None, checker: str | None, skipped: list[str]) -> Choice:
    auto = plan.requested == "auto"
    return Choice(plan.requested, name, version=version, guard=plan.family if auto else None,
                  verify=plan.verify if auto else None, checker=checker, skipped=tuple(skipped))


def _fallback(plan: _Plan, skipped: list[str]) -> Choice:
    if plan.requested == "tokenizers":
        return Choice("tokenizers", "tokenizers")
    return Choice(plan.requested, "tokenizers", fallback="; ".join(skipped) or None, skipped=tuple(skipped))


def _probe(fast: Any, reference: ReferenceEngine, guard: Guard | None, extra: list[str]) -> str | None:
    """The first probe text on which the engines differ (None: they agree on all, with and without special
    tokens). Texts the guard routes are left out (they are known to differ and never reach the engine)."""
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


def _load(name: str, path: str | Path, data: bytes, split_special_tokens: bool, reference: ReferenceEngine,
          guard: Guard | None, extra: list[str]) -> tuple[Any, str | None]:
    """(the engine, None), or (None, why it cannot be used): it cannot load the file, or differs on a probe text."""
    try:
        engine = LIBRARIES[name].load(path, data, split_special_tokens)
    except Exception as e:  # the library's own error, or a Rust panic surfaced as another exception
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        return None, f"{name} cannot load this tokenizer.json ({first})"
    bad = _probe(engine, reference, guard, extra)
    if bad is not None:
        return None, (f"{name} and tokenizers differ on the probe text {bad[:40]!r} (special tokens, normalizer or "
                      "post-processor handled differently)")
    return engine, None


def select(requested: str, tok: Any, path: str | Path, *, split_special_tokens: bool = False,
           verify: str = "sample") -> tuple[Any, Choice]:
    """The engine for ``--engine requested`` and the tokenizer ``tok`` parsed from ``path`` (its tokenizer.json)
    with ``tok.encode_special_tokens`` set as the options ask, and the :class:`Choice` that describes it. Never
    raises for a fast engine's problems: those skip it (see the module docstring)."""
    reference = ReferenceEngine(tok)
    plan = _plan(requested, tok, split_special_tokens, verify)
    skipped = list(plan.skipped)
    if not plan.names:
        return reference, _fallback(plan, skipped)
    data = Path(path).read_bytes()
    header = header_of(tok)
    nfc = header["normalizer"] == {"type": "NFC"}
    extra = [f"x {a.content} y" for a in list(tok.get_added_tokens_decoder().values())[:200]]
    auto = requested == "auto"
    for name in plan.names:
        guard = Guard.for_pair(name, plan.family, nfc) if auto and plan.family else None
        engine, why = _load(name, path, data, split_special_tokens, reference, guard, extra)
        if engine is None:
            skipped.append(why)
            continue
        checker: Any = None
        if auto and verify == "full":
            checker = reference
            for other in _checkers(plan, name, split_special_tokens):
                second, why = _load(other, path, data, split_special_tokens, reference, None, extra)
                if second is not None:
                    checker = second
                    break
                skipped.append(f"as checker: {why}")
        choice = _fast_choice(plan, name, engine.version, checker.name if checker is not None else None, skipped)
        return Checked(engine, reference, guard, checker, checked=auto), choice
    return reference, _fallback(plan, skipped)
