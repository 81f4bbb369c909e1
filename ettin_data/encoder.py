"""What tokenize and prepare encode with: the run's tokenizer, resolved once in the driver (:func:`resolve`) and
loaded once per worker process from ``OUTPUT/tokenizer.json``; the :class:`Encoder` (that tokenizer set up
for the options, and the engine ``--engine`` selects: ``engines/``); and :func:`encode_exactly`, which redoes a
unit with the reference engine when a verified document differs.

An encoder turns a batch of texts into one flat id array plus lengths (no per-document lists), in the output
dtype through the guarded cast (``ids.narrow``). Truncation and padding stored in a tokenizer.json are turned
off: documents are always tokenized whole. A document with no content tokens (nothing besides the special
tokens the post-processor adds) is not kept, and counted (``skipped.empty_tokens``); documents whose text holds
a special-token string (now a special id) are counted (``documents_with_special_token_text``).

``--prefix-space``: a document that does not start with whitespace is tokenized as ``" " + text`` (the
tokenizer itself is unchanged), so with byte-level BPE its first word is ``Ġword``, the same id the word gets
mid-sentence. Unlike the pre-tokenizer's ``add_prefix_space``, it adds no space after special tokens that occur
inside the text. Tokenizers without a leading-space marker (WordPiece) are unaffected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from . import engines
from .config import TokenizeConfig
from .dataset import TOKENIZER_FILE
from .engines import Checked, Choice, Mismatch
from .engines.ahead import parsing_ahead
from .errors import ConfigError
from .ids import fits, max_token_id, narrow
from .stats import Stats
from .tokenizer import check_template, read_tokenizer, tokenizer_from_bytes

__all__ = ["Encoder", "resolve", "worker_tokenizer", "encode_exactly", "run_choice"]

R = TypeVar("R")

_WORKER: dict[str, Any] = {}  # per process: the tokenizer loaded from OUTPUT/tokenizer.json, engine, encoder
_RESOLVED: dict[str, Any] = {}  # per process (the driver): the tokenizer resolved for the run's options


def resolve(cfg: TokenizeConfig, *, again: bool = False) -> tuple[bytes, Any]:
    """The tokenizer's json bytes and the parsed tokenizer, checked against the options (nothing is written).
    ``again``: the result of the last call for the same options in this process (check, then prepare)."""
    if again and _RESOLVED.get("cfg") == cfg:
        return _RESOLVED["val"]
    raw, where = read_tokenizer(cfg.tokenizer)
    # the fast engine parses the file meanwhile, for this process and the workers it forks (engines/ahead.py)
    ahead = parsing_ahead(cfg.engine, raw, cfg.split_special_tokens) if cfg.executor == "local" else nullcontext()
    with ahead:
        tok = tokenizer_from_bytes(raw, where)
    if cfg.special_tokens:
        check_template(tok, where)
    if cfg.dtype != "uint32":  # tokenizers' ids are u32: only a narrower type needs the largest id
        top = max_token_id(tok)
        if not fits(cfg.dtype, top):
            raise ConfigError(f"--dtype {cfg.dtype} holds ids up to {np.iinfo(cfg.dtype).max:,}, but tokenizer "
                              f"{cfg.tokenizer!r} can emit id {top:,} (vocabulary, added tokens and "
                              "post-processor); use --dtype uint32")
    _RESOLVED.update(cfg=cfg, val=(raw, tok))
    return raw, tok


def worker_tokenizer(path: Path, tok: Any = None) -> Any:
    """The tokenizer of ``path``, loaded once per process (reloaded only if the file changes); ``tok``:
    the tokenizer just parsed from that file's bytes (saves parsing it again in this process)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if _WORKER.get("key") != key:
        _WORKER.clear()
        tok = tok if tok is not None else tokenizer_from_bytes(path.read_bytes(), str(path))
        tok.no_truncation()
        tok.no_padding()
        _WORKER.update(key=key, tok=tok)
    return _WORKER["tok"]


def _with_prefix_space(text: str) -> str:
    """``--prefix-space``: a document that starts with a word (not whitespace) gets one space in front."""
    return " " + text if text and not text[0].isspace() else text


def _special_in_text(ids: np.ndarray, lengths: np.ndarray, keep: np.ndarray, special: np.ndarray,
                     added: bool) -> int:
    """How many kept documents contain a special-token string in the text itself (e.g. '[SEP]'), now a
    special id. With special tokens added, each document's first and last ids are not text. ``special``:
    a lookup table (True at the special ids), one gather per batch."""
    if not special.any() or not len(ids):
        return 0
    hit = np.flatnonzero(np.take(special, ids, mode="clip"))  # take: half the time of special[ids]
    if not len(hit):
        return 0
    ends = np.cumsum(lengths)
    doc = np.searchsorted(ends, hit, side="right")
    if added:
        start = ends[doc] - lengths[doc]
        inner = (lengths[doc] < 2) | ((hit != start) & (hit != ends[doc] - 1))
        doc = doc[inner]
    return int(np.count_nonzero(keep[np.unique(doc)]))


def _engine(path: Path, tok: Any, cfg: TokenizeConfig) -> tuple[Any, Choice]:
    """The engine of this run, selected once per process (per tokenizer file and options)."""
    key = ("engine", cfg.engine, cfg.split_special_tokens, cfg.verify)
    if _WORKER.get("engine_key") != key:
        _WORKER["engine"] = engines.select(cfg.engine, tok, path, split_special_tokens=cfg.split_special_tokens,
                                           verify=cfg.verify)
        _WORKER["engine_key"] = key
    return _WORKER["engine"]


@dataclass(frozen=True)
class Encoder:
    """What encoding needs per process: the tokenizer (from OUTPUT/tokenizer.json) set up for the options,
    and the engine selected by ``--engine`` (``choice`` says which one and why)."""

    tok: Any
    cfg: TokenizeConfig
    n_special: int
    special: np.ndarray  # bool lookup table: True at the special ids
    dtype: np.dtype
    engine: Any
    choice: Choice

    @classmethod
    def load(cls, cfg: TokenizeConfig) -> Encoder:
        """The encoder of ``cfg`` in this process (built once per tokenizer file and options)."""
        path = Path(cfg.output) / TOKENIZER_FILE
        tok = worker_tokenizer(path)
        key = (cfg.engine, cfg.verify, cfg.split_special_tokens, cfg.special_tokens, cfg.dtype, cfg.prefix_space)
        if _WORKER.get("encoder_key") != key:
            _WORKER["encoder"] = cls._build(cfg, path, tok)
            _WORKER["encoder_key"] = key
        return _WORKER["encoder"]

    @classmethod
    def _build(cls, cfg: TokenizeConfig, path: Path, tok: Any) -> Encoder:
        tok.encode_special_tokens = cfg.split_special_tokens
        dtype = np.dtype(cfg.dtype)
        added = tok.get_added_tokens_decoder()
        # one slot past every special id: ids beyond the table are looked up clipped to that last (False) slot
        special = np.zeros(max([tok.get_vocab_size(with_added_tokens=True), *(i + 1 for i in added)]) + 1, bool)
        special[[i for i, a in added.items() if a.special]] = True
        n_special = tok.num_special_tokens_to_add(False) if cfg.special_tokens else 0
        engine, choice = _engine(path, tok, cfg)
        return cls(tok, cfg, n_special, special, dtype, engine, choice)

    def reference(self) -> Encoder:
        """The same encoder on the reference engine (a unit whose verification failed is redone with it)."""
        return dataclasses.replace(self, engine=engines.ReferenceEngine(self.tok))

    def encode_flat(self, texts: list[str], st: Stats, *, unit: str = "", doc_ids: list[str] | None = None,
                    first_index: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flat ids in the output dtype, int64 length per document, mask of the documents kept). Documents
        with no content tokens are not kept (counted in ``st``); ``unit``, ``doc_ids`` and ``first_index``
        (position of ``texts[0]`` in the unit) seed the guard's verification sample. Raises
        :class:`~ettin_data.engines.Mismatch` when a verified document differs from the reference."""
        cfg = self.cfg
        if cfg.prefix_space:
            texts = [_with_prefix_space(t) for t in texts]
        if isinstance(self.engine, Checked):
            ids, lengths = self.engine.encode(texts, cfg.special_tokens, unit=unit, doc_ids=doc_ids,
                                              first_index=first_index, st=st)
        else:
            ids, lengths = self.engine.encode(texts, cfg.special_tokens)
        keep = lengths > self.n_special
        st.add("skipped.empty_tokens", len(keep) - int(np.count_nonzero(keep)))
        if not cfg.split_special_tokens:
            st.add("documents_with_special_token_text",
                   _special_in_text(ids, lengths, keep, self.special, cfg.special_tokens))
        ids = narrow(ids, self.dtype, f"{unit or 'tokenize'}: --dtype {self.dtype}", "use --dtype uint32")
        return ids, lengths, keep


def encode_exactly(encoder: Encoder, work: Callable[[Encoder, Stats], R],
                   undo: Callable[[], None] = lambda: None) -> tuple[R, Stats]:
    """``work(encoder, stats)`` for one unit, and its stats. When a verified document differs from the reference
    (:class:`Mismatch`), ``undo()`` what it did and run it again on the reference engine, counted
    (``engine.mismatches``, ``engine.units_redone``): no id of the unit comes from an engine that differed on it."""
    st = Stats()
    try:
        return work(encoder, st), st
    except Mismatch:
        undo()
    st = Stats()
    out = work(encoder.reference(), st)
    st.add("engine.mismatches")
    st.add("engine.units_redone")
    return out, st


def run_choice(cfg: TokenizeConfig, stats: Stats) -> Choice:
    """The engine choice of the run, for the summary. The driver loads no engine when the units' counts
    already say that every unit was encoded (and checked) as the choice made without loading predicts."""
    pre = engines.preselect(cfg.engine, worker_tokenizer(Path(cfg.output) / TOKENIZER_FILE),
                            split_special_tokens=cfg.split_special_tokens, verify=cfg.verify)
    units = sum(n for k, n in stats.counts.items() if k.startswith("engine.units."))
    if pre.used == "tokenizers" or (units and stats[f"engine.units.{pre.used}"] == units and (
            not pre.checker or stats[f"engine.units_checked_by.{pre.checker}"] == units)):
        return pre
    return Encoder.load(cfg).choice  # a fallback decided by loading an engine (or nothing ran): select here
