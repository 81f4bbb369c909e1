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

from pathlib import Path
from typing import Any

import numpy as np

from .. import units as U
from ..chunking import word_start_table
from ..config import ChunkConfig, ConvertConfig, PrepareConfig, TokenizeConfig, recorded_settings, sub_config
from ..errors import ConfigError, EttinError
from ..mds import find_units, write_json_atomic, write_root_index
from ..stats import Stats
from ..tokenizer import TOKENIZER_FILE, tokenizer_identity
from . import chunk, convert, tokenize

NAME = "prepare"

__all__ = ["NAME", "plan", "prepare", "process_unit", "finish", "run", "render"]

_WORKER: dict[str, Any] = {}  # per process: encoder, chunk parameters


def _configs(cfg: PrepareConfig) -> tuple[ConvertConfig, TokenizeConfig, ChunkConfig]:
    return sub_config(ConvertConfig, cfg), sub_config(TokenizeConfig, cfg), sub_config(ChunkConfig, cfg)


def plan(cfg: PrepareConfig) -> list[U.Task]:
    return convert.plan(sub_config(ConvertConfig, cfg))


def _identity(cfg: PrepareConfig, tok: Any, raw: bytes) -> dict[str, Any]:
    return tokenizer_identity(tok, cfg.tokenizer, raw, special_tokens_added=cfg.special_tokens,
                              prefix_space=cfg.prefix_space)


def prepare(cfg: PrepareConfig) -> None:
    """Resolve the tokenizer, check that chunks can be made with it, then write ``OUTPUT/tokenizer.json``."""
    tcfg = sub_config(TokenizeConfig, cfg)
    raw, tok = tokenize.resolve(tcfg)
    ident = _identity(cfg, tok, raw)
    for key in ("bos_id", "eos_id"):
        if not isinstance(ident.get(key), int):
            raise ConfigError(f"tokenizer {cfg.tokenizer!r} has no {key}: chunks are [BOS] piece [EOS]; use a "
                              "tokenizer whose post-processor adds BOS/EOS (e.g. builtin:modernbert)")
    tokenize.prepare(tcfg)


def _worker(cfg: PrepareConfig) -> tuple[tokenize.Encoder, Any, dict[str, Any]]:
    """Encoder, chunk kernel parameters and tokenizer identity, built once per process."""
    path = Path(cfg.output) / TOKENIZER_FILE
    key = (str(path.resolve()), path.stat().st_mtime_ns, cfg)
    if _WORKER.get("key") != key:
        _, tcfg, kcfg = _configs(cfg)
        enc = tokenize.Encoder.load(tcfg)
        raw = path.read_bytes()
        ident = _identity(cfg, enc.tok, raw)
        table = word_start_table(raw.decode("utf-8"), ident["vocab_size"]) if cfg.word_boundaries else None
        _WORKER.clear()
        _WORKER.update(key=key, val=(enc, chunk.chunk_params(kcfg, ident, table), ident))
    return _WORKER["val"]


def _unit(dst: Path, docs: list[convert.Doc], cfg: PrepareConfig, enc: tokenize.Encoder, params: Any,
          columns: dict[str, str], where: str) -> Stats:
    """Encode and chunk one unit's documents into ``dst``."""
    st = Stats()
    encoded: list[tuple[str, np.ndarray, str | None]] = []
    for i in range(0, len(docs), cfg.batch_size):
        batch = docs[i:i + cfg.batch_size]
        for (doc_id, _, domain), ids in zip(batch, enc.encode([t for _, t, _ in batch], st), strict=True):
            if ids is not None:
                encoded.append((doc_id, ids, domain))
    chunked = chunk.chunk_into(dst, encoded, params, columns, where)
    if chunked["documents"] + st["skipped.empty_tokens"] != len(docs):
        raise EttinError(f"{where}: {len(docs)} documents, {chunked['documents']} chunked and "
                         f"{st['skipped.empty_tokens']} skipped; this is a bug")
    return st + chunked


def process_unit(task: U.Task, cfg: PrepareConfig) -> Stats:
    ccfg = sub_config(ConvertConfig, cfg)
    enc, params, _ = _worker(cfg)
    if cfg.word_boundaries and params.word_start is None:  # pragma: no cover - table always builds here
        raise EttinError("word-start table unavailable")
    root = Path(cfg.output) / task.name
    root.mkdir(parents=True, exist_ok=True)
    columns = {"id": "str", "input_ids": f"ndarray:{cfg.dtype}", "len": "int",
               **({"domain": "str"} if cfg.domain_field else {})}
    total, reading = Stats(), Stats()
    k = 0
    for k, docs in enumerate(convert.read_units(task, ccfg, reading), 1):
        unit = root / convert.unit_name(k - 1)
        if not cfg.overwrite and U.is_done(unit):
            st = U.read_done(unit)
        else:
            with U.atomic_dir(unit) as tmp:
                st = _unit(tmp, docs, cfg, enc, params, columns, f"{task.params[1]} unit {k - 1}")
            U.mark_done(unit, st)
        total = total + st
    convert.clear_stale(root, k)
    total = total + reading
    skipped = sum(v for key, v in total.counts.items() if key.startswith("skipped."))
    if total["documents_in"] != total["documents"] + skipped:
        raise EttinError(f"{task.params[1]}: document accounting does not close ({total['documents_in']} in, "
                         f"{total['documents']} chunked, {skipped} skipped)")
    U.mark_done(root, total)
    return total


def _own_units(out: Path, tasks: list[U.Task]) -> list[str]:
    names = {t.name for t in tasks}
    return [u for u in find_units(out) if u.rsplit("/", 1)[0] in names]


def finish(cfg: PrepareConfig, stats: Stats, tasks: list[U.Task]) -> dict[str, Any]:
    out = Path(cfg.output)
    units = _own_units(out, tasks)
    write_root_index(out, units)
    summary = chunk.stats_json(stats)
    write_json_atomic(out / chunk.STATS_FILE, summary)
    _, _, ident = _worker(cfg)
    ccfg, tcfg, kcfg = _configs(cfg)
    via = {"via": NAME}
    meta_convert = {"stage": "convert", **via, "settings": recorded_settings(ccfg), "inputs": list(cfg.inputs),
                    "upstream": []}
    meta_tokenize = {"stage": "tokenize", **via, "settings": recorded_settings(tcfg), "inputs": list(cfg.inputs),
                     "upstream": [meta_convert], "tokenizer": ident}
    meta = {"stage": "chunk", **via, "settings": recorded_settings(kcfg), "inputs": list(cfg.inputs),
            "upstream": [meta_tokenize], "tokenizer": ident}
    skipped = {k.split(".", 1)[1]: v for k, v in sorted(stats.counts.items()) if k.startswith("skipped.")}
    return {"tokenizer": ident, "meta": meta, "documents_in": stats["documents_in"],
            "documents": stats["documents"], "skipped": skipped, "duplicate_ids": stats["duplicate_ids"],
            "documents_with_special_token_text": stats["documents_with_special_token_text"], **summary,
            "units": len(units)}


def run(cfg: PrepareConfig, quiet: bool = True) -> dict[str, Any]:
    from ..pipeline import run_stage

    plan(cfg)  # bad inputs are reported before the tokenizer is resolved or anything is written
    prepare(cfg)
    return run_stage(__import__(__name__, fromlist=["NAME"]), cfg, quiet=quiet)


def render(summary: dict[str, Any]) -> None:
    tokenize.render({k: v for k, v in summary.items() if k not in ("counts",)})
