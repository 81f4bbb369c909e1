"""prepare: raw text -> training chunks in one pass (convert + tokenize + chunk per unit, in memory).

One task per part of a source, exactly as convert plans them (``parts.py``); each group of
``docs_per_shard`` documents (a unit) is validated as convert does, encoded as tokenize does and cut as
chunk does, and only the chunk unit is written: ``OUTPUT/<source>[/part_NNNNN]/split_NNNNN``. The chunks,
unit indexes, ``stats.json`` and ``token_decile.json`` are byte-identical to running the three stages one
after another (tested), and the dataset metadata is the same chain (``ettin_meta.json``: chunk <- tokenize
<- convert, each marked ``"via": "prepare"``), so every later stage reads it as chunk output.

Resuming works per unit like every stage: a finished unit is skipped (its documents are re-read and
validated, not re-encoded). Accounting per unit: documents in = chunked + skipped by reason (convert's
skips and tokenize's ``empty_tokens``); content tokens in = written + skipped - duplicated (chunk's check).
"""

from __future__ import annotations

from collections.abc import Generator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .. import units as U
from ..chunking import cached_word_start_table
from ..config import ChunkConfig, ConvertConfig, PrepareConfig, TokenizeConfig, recorded_settings, sub_config
from ..encoder import Encoder, encode_exactly, resolve
from ..engines.summary import engine_summary
from ..errors import EttinError
from ..framing import framing
from ..mds import find_units, write_root_index
from ..stage import Finished, Stage, Unit
from ..stats import Stats
from ..tokenizer import TOKENIZER_FILE, save_tokenizer_json, tokenizer_change, tokenizer_identity
from ..tokenstats import chunk_stats, write_dataset_stats
from . import chunk, convert, tokenize

__all__ = ["Prepare"]

_WORKER: dict[str, Any] = {}  # per process: encoder, chunk parameters


def _configs(cfg: PrepareConfig) -> tuple[ConvertConfig, TokenizeConfig, ChunkConfig]:
    return (sub_config(ConvertConfig, cfg), sub_config(TokenizeConfig, cfg),
            sub_config(ChunkConfig, cfg, tokenizer=None))  # chunk's --tokenizer names a foreign input's


def _identity(cfg: PrepareConfig, tok: Any, raw: bytes, max_id: bool = True) -> dict[str, Any]:
    return tokenizer_identity(tok, cfg.tokenizer, raw, special_tokens_added=cfg.special_tokens,
                              prefix_space=cfg.prefix_space, max_id=max_id)


def _worker(cfg: PrepareConfig) -> tuple[Encoder, Any, dict[str, Any]]:
    """Encoder, chunk kernel parameters and tokenizer identity, built once per process."""
    path = Path(cfg.output) / TOKENIZER_FILE
    key = (str(path.resolve()), path.stat().st_mtime_ns, cfg)
    if _WORKER.get("key") != key:
        _, tcfg, kcfg = _configs(cfg)
        enc = Encoder.load(tcfg)
        raw = path.read_bytes()
        ident = _identity(cfg, enc.tok, raw, max_id=False)  # the metadata's (with max_id) is made in finish
        table = cached_word_start_table(raw, ident["vocab_size"]) if cfg.word_boundaries else None
        _WORKER.clear()
        _WORKER.update(key=key, val=(enc, chunk.chunk_params(kcfg, framing(kcfg, ident, raw), table), ident))
    return _WORKER["val"]


def _encode(docs: list[convert.Doc], cfg: PrepareConfig, enc: Encoder, name: str,
            st: Stats) -> list[chunk.Batch]:
    """Encode one unit's documents as tokenize does (documents without content tokens are counted, dropped): the
    kept documents of each batch: ids, token ids back to back, lengths, domains (None without)."""
    encoded = []
    for i in range(0, len(docs), cfg.batch_size):
        batch = docs[i:i + cfg.batch_size]
        doc_ids = [d for d, _, _ in batch]
        ids, lengths, keep = enc.encode_flat([t for _, t, _ in batch], st, unit=name, doc_ids=doc_ids, first_index=i)
        domains = [dom for _, _, dom in batch] if cfg.domain_field else None
        if not keep.all():
            ids, lengths = ids[np.repeat(keep, lengths)], lengths[keep]
            doc_ids = [d for d, k in zip(doc_ids, keep.tolist(), strict=True) if k]
            domains = None if domains is None else [d for d, k in zip(domains, keep.tolist(), strict=True) if k]
        encoded.append((doc_ids, ids, lengths, domains))
    return encoded


def _kept(cfg: PrepareConfig) -> tuple[Path | None, Path | None]:
    return (Path(cfg.keep_text) if cfg.keep_text else None), (Path(cfg.keep_tokens) if cfg.keep_tokens else None)


def _unit(dirs: dict[str, Path], docs: list[convert.Doc], cfg: PrepareConfig, enc: Encoder, params: Any,
          name: str, where: str) -> dict[str, Stats]:
    """Encode and chunk one unit's documents into ``dirs["output"]`` (and the kept text/token units into
    ``dirs["keep_text"]``/``dirs["keep_tokens"]``); the stats of each."""
    out: dict[str, Stats] = {}
    if "keep_text" in dirs:
        out["keep_text"] = convert.write_text_unit(dirs["keep_text"], docs,
                                                   convert.text_columns(sub_config(ConvertConfig, cfg)))
    # a fast engine that differs on a verified document: the unit is encoded again by the reference, counted
    encoded, st = encode_exactly(enc, lambda e, s: _encode(docs, cfg, e, name, s))
    has_domain = bool(cfg.domain_field)
    if "keep_tokens" in dirs:
        tok_st = tokenize.write_token_unit(dirs["keep_tokens"], encoded, tokenize.token_columns(cfg.dtype, has_domain))
        tok_st = tok_st + st
        tok_st.add("documents_in", len(docs))
        out["keep_tokens"] = tok_st
    chunked = chunk.chunk_into(dirs["output"], encoded, params, tokenize.token_columns(cfg.dtype, has_domain), where,
                               compression=cfg.compression)
    if chunked["documents"] + st["skipped.empty_tokens"] != len(docs):
        raise EttinError(f"{where}: {len(docs)} documents, {chunked['documents']} chunked and "
                         f"{st['skipped.empty_tokens']} skipped; this is a bug")
    out["output"] = st + chunked
    return out


def _own_units(out: Path, tasks: list[U.Task]) -> list[str]:
    names = {t.name for t in tasks}
    return [u for u in find_units(out) if u.rsplit("/", 1)[0] in names]


class Prepare(Stage):
    name = "prepare"
    Config = PrepareConfig
    many_units = True
    output_options = ("output", "keep_text", "keep_tokens")

    def plan(self, cfg: PrepareConfig) -> list[U.Task]:
        return convert.Convert().plan(sub_config(ConvertConfig, cfg))

    def check(self, cfg: PrepareConfig) -> list[str]:
        """Resolve the tokenizer and check that chunks can be made with it (and that it is the output's)."""
        tcfg = sub_config(TokenizeConfig, cfg)
        raw, tok = resolve(tcfg)
        framing(_configs(cfg)[2], _identity(cfg, tok, raw, max_id=False), raw)  # --bos/--eos resolve (or one line)
        return tokenizer_change(tcfg.output, raw, cfg.overwrite)

    def prepare(self, cfg: PrepareConfig) -> None:
        """Write ``OUTPUT/tokenizer.json`` (and the kept token dataset's)."""
        tcfg = sub_config(TokenizeConfig, cfg)
        raw, _ = tokenize.Tokenize().prepare(tcfg)
        if cfg.keep_tokens:
            save_tokenizer_json(raw, cfg.keep_tokens)

    def units(self, task: U.Task, cfg: PrepareConfig) -> Generator[Unit, dict[str, Stats], dict[str, Stats]]:
        enc, params, _ = _worker(cfg)
        outputs = tuple(o for o in ("keep_text", "keep_tokens", "output") if getattr(cfg, o))
        label = task.params.label

        def unit(name: str, k: int, docs: list[convert.Doc]) -> Unit:
            return Unit(name, partial(_unit, docs=docs, cfg=cfg, enc=enc, params=params, name=name,
                                      where=f"{label} unit {k}"), outputs)

        roots = [Path(r) for r in (cfg.output, *_kept(cfg)) if r is not None]
        totals, reading, k = yield from convert.source_units(task, sub_config(ConvertConfig, cfg), unit, roots)
        total = totals.get("output", Stats()) + reading
        convert.close_accounting(total, label, written="documents", verb="chunked")
        if not cfg.keep_text:
            return {"output": total}
        text_total = totals.get("keep_text", Stats()) + reading  # the text dataset's per-source marker, as convert's
        text_total.add("units", k)
        convert.close_accounting(text_total, label)
        return {"output": total, "keep_text": text_total}

    def finish(self, cfg: PrepareConfig, stats: Stats, tasks: list[U.Task]) -> Finished:
        out = Path(cfg.output)
        units = _own_units(out, tasks)
        write_root_index(out, units)
        summary = chunk_stats(stats)
        write_dataset_stats(out, summary)
        enc, _, _ = _worker(cfg)
        ident = _identity(cfg, enc.tok, (out / TOKENIZER_FILE).read_bytes())
        ccfg, tcfg, kcfg = _configs(cfg)
        engine = engine_summary(enc.choice, stats)
        via = {"via": self.name}
        meta_convert = {"stage": "convert", **via, "settings": recorded_settings(ccfg), "inputs": list(cfg.inputs),
                        "upstream": []}
        meta_tokenize = {"stage": "tokenize", **via, "settings": recorded_settings(tcfg), "inputs": list(cfg.inputs),
                         "upstream": [meta_convert], "tokenizer": ident, "engine": engine}
        meta = {"stage": "chunk", **via, "settings": recorded_settings(kcfg), "inputs": list(cfg.inputs),
                "upstream": [meta_tokenize], "tokenizer": ident,
                "framing": framing(kcfg, ident, (out / TOKENIZER_FILE).read_bytes()).record()}
        kept: dict[str, dict[str, Any]] = {}
        keep_text, keep_tokens = _kept(cfg)
        if keep_text is not None:  # as convert finishes its output
            convert.Convert().finish(sub_config(ConvertConfig, cfg, output=str(keep_text)),
                                     Stats.total(U.read_done(keep_text / t.name) for t in tasks), tasks)
            kept["keep_text"] = meta_convert
        if keep_tokens is not None:  # as tokenize finishes its output
            own = [U.Task(u) for u in units]
            tok_done = tokenize.Tokenize().finish(sub_config(TokenizeConfig, cfg, output=str(keep_tokens)),
                                                  Stats.total(U.read_done(keep_tokens / u) for u in units), own)
            kept["keep_tokens"] = {**meta_tokenize, "tokenizer": tok_done.meta["tokenizer"]}
        skipped = {k.split(".", 1)[1]: v for k, v in sorted(stats.counts.items()) if k.startswith("skipped.")}
        return Finished({"tokenizer": ident, "engine": engine, "documents_in": stats["documents_in"],
                         "documents": stats["documents"], "skipped": skipped, "duplicate_ids": stats["duplicate_ids"],
                         "documents_with_special_token_text": stats["documents_with_special_token_text"], **summary,
                         "units": len(units)}, meta, kept)

    def render(self, summary: dict[str, Any]) -> None:
        tokenize.Tokenize().render({k: v for k, v in summary.items() if k not in ("counts",)})
