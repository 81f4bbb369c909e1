"""The invariants of chunked token data and their check on a shard's samples: which rules hold (BOS first,
EOS last when the tokenizer adds them, at most the chunk size; from the ``ettin_meta.json`` chain) and where
a shard breaks them, for all its samples at once (numpy over the shard bytes), with the sample-by-sample
scan as the reference (tested equal) and the fallback for encodings the vectorized path does not read."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import read_meta
from .mds import Shard, gather, scalar_dtype

__all__ = ["Rules", "stage_chain", "chunk_rules", "rules_of", "check_samples", "check_samples_slow"]

Rules = tuple[int | None, int | None, int | None]  # (BOS id, EOS id, chunk size); None: not checked


def stage_chain(meta: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The stages that produced a dataset, oldest first (depth-first over ``upstream``)."""
    if not meta:
        return []
    out: list[dict[str, Any]] = []
    for up in meta.get("upstream") or []:
        for st in stage_chain(up):
            if st not in out:
                out.append(st)
    entry = {"stage": meta.get("stage"), "settings": meta.get("settings"), "inputs": meta.get("inputs")}
    for key in ("split", "framing", "foreign"):  # foreign: inputs another tool wrote (path, columns, tokenizer)
        if key in meta:
            entry[key] = meta[key]
    out.append(entry)
    return out


def _meta_near(root: Path) -> dict[str, Any] | None:
    for p in (root, *list(root.parents)[:2]):
        m = read_meta(p)
        if m:
            return m
    return None


def chunk_rules(root: Path) -> Rules:
    """(bos_id, eos_id, chunk_size) to check, from the ettin_meta.json chain; Nones when not chunked."""
    return rules_of(_meta_near(root))


def rules_of(meta: dict[str, Any] | None) -> Rules:
    """:func:`chunk_rules` of a dataset described by ``meta`` (its ``ettin_meta.json``). The framing is the chunk
    stage's (``--bos``/``--eos``); chunks written before it was recorded used the tokenizer's BOS/EOS."""
    chunks = [s for s in stage_chain(meta)
              if s.get("stage") == "chunk" and isinstance(s.get("settings"), dict) and "chunk_size" in s["settings"]]
    if not chunks:
        return None, None, None
    size = max(s["settings"]["chunk_size"] for s in chunks)
    frames = [s["framing"] for s in chunks if isinstance(s.get("framing"), dict)]
    if frames:
        if any(f != frames[0] for f in frames):  # a mix of differently framed chunks: only the size is common
            return None, None, size
        return frames[0].get("bos_id"), frames[0].get("eos_id"), size
    tok = (meta or {}).get("tokenizer") or {}
    if tok.get("special_tokens_added") is False:
        return None, None, size
    return tok.get("bos_id"), tok.get("eos_id"), size


_RULES = ("len column != number of tokens", "first token is not BOS {bos}", "last token is not EOS {eos}",
          "longer than the chunk size {limit}")


def check_samples(path: Path, shard: Shard, rules: Rules) -> tuple[int, list[str]]:
    """(tokens, problem lines) of one shard: the chunk rules and ``len`` on every sample, one line per kind of
    violation (a count and the first sample, in the order a sample-by-sample scan meets them)."""
    bad = _rule_violations(shard, rules)
    if bad is None:
        return check_samples_slow(path, shard, rules)
    tokens, masks = bad
    bos, eos, limit = rules
    found = [(int(np.argmax(m)), k, int(m.sum())) for k, m in enumerate(masks) if m is not None and m.any()]
    lines = [f"{path}: {c} sample(s) {_RULES[k].format(bos=bos, eos=eos, limit=limit)} (first: sample {i})"
             for i, k, c in sorted(found)]
    return tokens, lines


def _rule_violations(shard: Shard, rules: Rules
                     ) -> tuple[int, list[np.ndarray | None]] | None:
    """(tokens, a mask over the samples per rule of ``_RULES``: None when the rule does not apply), computed for
    all samples at once; None when the token column's encoding needs per-sample decoding."""
    names, encs = shard.entry.column_names, shard.entry.column_encodings
    col = "input_ids" if "input_ids" in names else "tokens" if "tokens" in names else None
    if col is None:
        return 0, [None] * 4
    len_enc = encs[names.index("len")] if "len" in names else None
    parts = encs[names.index(col)].split(":")
    try:  # a typed ndarray or int64 bytes (ModernBERT's streaming layout, llm-foundry)
        start, count, dtype = shard.id_spans(col)
    except ValueError:  # per-sample decoding says what is wrong
        return None
    if (len(parts) == 3 and "," in parts[2]) or (len_enc is not None and scalar_dtype(len_enc) is None):
        return None
    bos, eos, limit = rules
    u8 = np.frombuffer(shard.data, np.uint8)
    has = count > 0
    masks: list[np.ndarray | None] = [None] * 4
    if len_enc is not None:
        masks[0] = gather(u8, shard.spans("len")[0], scalar_dtype(len_enc)).astype(np.int64) != count
    if bos is not None:
        masks[1] = ~has | (gather(u8, np.where(has, start, 0), dtype) != bos)
    if eos is not None:
        last = np.where(has, start + (count - 1) * dtype.itemsize, 0)
        masks[2] = ~has | (gather(u8, last, dtype) != eos)
    if limit is not None:
        masks[3] = count > limit
    return int(count.sum()), masks


def check_samples_slow(path: Path, shard: Shard, rules: Rules
                        ) -> tuple[int, list[str]]:
    bos, eos, limit = rules
    bad: Counter = Counter()
    first: dict[str, int] = {}
    tokens = 0
    for i, s in enumerate(shard.samples({"input_ids", "tokens", "len"})):
        ids = s.get("input_ids", s.get("tokens"))  # tokens: llm-foundry's column (finalize --for llm-foundry)
        if ids is None:
            continue
        partial = False
        if isinstance(ids, (bytes, memoryview)):  # int64 ids (ModernBERT's streaming layout, llm-foundry)
            partial = len(ids) % 8 != 0
            ids = np.frombuffer(ids, "<i8", len(ids) // 8)
        n = len(ids)
        tokens += n
        checks = {
            "hold bytes that are not whole int64 ids": partial,
            _RULES[0]: "len" in s and s["len"] != n,
            _RULES[1].format(bos=bos): bos is not None and (n == 0 or int(ids[0]) != bos),
            _RULES[2].format(eos=eos): eos is not None and (n == 0 or int(ids[-1]) != eos),
            _RULES[3].format(limit=limit): limit is not None and n > limit,
        }
        for what, failed in checks.items():
            if failed:
                bad[what] += 1
                first.setdefault(what, i)
    lines = [f"{path}: {c} sample(s) {what} (first: sample {first[what]})" for what, c in bad.items()]
    return tokens, lines  # one line per kind of violation: a count and the first sample
