"""tokenize: text MDS (convert's output) -> token MDS.

One task per input unit; the output unit keeps the input unit's relative name (several inputs: prefixed
with each input's folder name). Before any unit runs, the tokenizer is resolved once and its json is
written to ``OUTPUT/tokenizer.json``; every worker loads that file (once per process), so all units use
the same bytes, and later stages can load it offline.

Per unit, documents are streamed shard by shard and encoded in batches of at most ``batch_size``
documents and ``BATCH_CHARS`` characters, so memory does not grow with the input. The encoder
(``encoder.py``: the engine ``--engine`` selects, see ``engines/``) returns a batch as one flat id array plus
lengths, which goes straight into the shard bytes (``token_rows.py``: no per-document lists or dicts).
``tokenizers`` is the reference (``encode_batch_fast``: ``encode_batch`` without character offsets, same ids;
see ``engines/reference.py``); ``auto`` uses a proven fast engine behind an exactness guard, and a unit in which
a verified document differs is redone with the reference (``encoder.encode_exactly``; counted:
``engine.mismatches``, ``engine.units_redone``).

Output columns: ``id``, ``input_ids`` (``ndarray:uint32``, or ``uint16`` with ``--dtype uint16``),
``len`` and ``domain`` when the input has it. Dataset files: ``index.json``, ``tokenizer.json``,
``num_tokens.json`` and (written by the driver) ``ettin_meta.json`` with the tokenizer identity and the
``engine`` entry (requested, used, guard, fallback reason, documents by the fast engine / routed / verified,
mismatches, units redone).
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import numpy as np

from .. import progress
from .. import units as U
from ..config import TokenizeConfig
from ..dataset import NUM_TOKENS, TOKENIZER_FILE
from ..encoder import Encoder, encode_exactly, resolve, run_choice, worker_tokenizer
from ..engines.summary import count_unit, engine_summary, render_engine
from ..errors import InputError
from ..jsonio import write_json_atomic
from ..mds import ShardWriter, UnitReader, find_units, read_index, write_root_index
from ..stage import Finished, Stage
from ..stats import Stats
from ..token_rows import token_samples
from ..tokenizer import save_tokenizer_json, tokenizer_change, tokenizer_identity

BATCH_CHARS = 8_000_000
MAX_1024 = 1024

__all__ = ["Tokenize", "token_columns", "write_token_unit"]


def _inputs(cfg: TokenizeConfig) -> list[Path]:
    roots: list[Path] = []
    for inp in cfg.inputs:
        if any(c in inp for c in "*?["):
            matches = sorted(glob.glob(inp))
            if not matches:
                raise InputError(f"{inp}: no folder matches this pattern")
            roots.extend(Path(m) for m in matches)
        else:
            roots.append(Path(inp))
    for root in roots:
        if not root.is_dir():
            raise InputError(f"{root} is not a folder (tokenize reads a text MDS dataset, e.g. convert's output)")
    return roots


def _batches(reader: UnitReader, has_domain: bool, batch_size: int) -> Any:
    """``(ids, texts, domains or None)`` lists of at most ``batch_size`` documents and about BATCH_CHARS
    characters each, decoded straight from the shard bytes (``Shard.columns``: no dict per document)."""
    names = ("id", "text", "domain") if has_domain else ("id", "text")
    batch: list[tuple[Any, ...]] = []
    chars = 0
    for shard in reader.shards():
        for row in shard.columns(names):
            batch.append(row)
            chars += len(row[1])
            if len(batch) >= batch_size or chars >= BATCH_CHARS:
                yield _columns_of(batch, has_domain)
                batch, chars = [], 0
    if batch:
        yield _columns_of(batch, has_domain)


def _columns_of(rows: list[tuple[Any, ...]], has_domain: bool) -> tuple[list[Any], list[str], list[Any] | None]:
    cols = list(zip(*rows, strict=True))
    return list(cols[0]), list(cols[1]), list(cols[2]) if has_domain else None


def token_columns(dtype: str, has_domain: bool) -> dict[str, str]:
    return {"id": "str", "input_ids": f"ndarray:{dtype}", "len": "int", **({"domain": "str"} if has_domain else {})}


def write_token_unit(dst: Path, batches: list[tuple[list[str], np.ndarray, np.ndarray, list[str] | None]],
                     columns: dict[str, str]) -> Stats:
    """Write encoded documents, batches of ``(ids, token ids back to back, lengths, domains)``, as one token unit
    into ``dst`` (prepare --keep-tokens): the rows tokenize writes."""
    st = Stats()
    with ShardWriter(dst, columns) as w:
        for doc_ids, ids, lengths, domains in batches:
            for data, _ in token_samples(doc_ids, ids, lengths, np.ones(len(lengths), bool),
                                         domains if "domain" in columns else None):
                w.write_raw(data)
            st.add("documents_written", len(lengths))
            st.add("tokens_written", int(np.sum(lengths)))
            st.add_lengths(lengths)
    return st


def _tokenize_unit(task: U.Task, dst: Path, cfg: TokenizeConfig, encoder: Encoder, st: Stats,
                   reported: list[int]) -> None:
    """Encode one unit into the folder ``dst``, counting into ``st``. ``reported``: [documents, tokens] given to
    the progress bar so far (taken back if the unit is redone)."""
    reader = UnitReader(task.source)
    has_domain = "domain" in reader.columns
    missing = {"id", "text"} - set(reader.columns)
    if reader.columns and missing:
        raise InputError(f"{task.source}: missing column(s) {sorted(missing)}; columns present: "
                         f"{sorted(reader.columns)}")
    pos = 0
    writer = ShardWriter(dst, token_columns(cfg.dtype, has_domain))
    for doc_ids, texts, domains in _batches(reader, has_domain, cfg.batch_size):
        ids, lengths, keep = encoder.encode_flat(texts, st, unit=task.name, doc_ids=doc_ids, first_index=pos)
        pos += len(texts)
        for data, _ in token_samples(doc_ids, ids, lengths, keep, domains):
            writer.write_raw(data)
        kept = lengths[keep]
        st.add("documents_in", len(texts))
        st.add("documents_written", len(kept))
        st.add("tokens_written", int(kept.sum()))
        st.add_lengths(kept)
        progress.advance(docs=len(texts), tokens=int(kept.sum()))
        reported[0] += len(texts)
        reported[1] += int(kept.sum())
    writer.finish()
    if not reader.num_samples == st["documents_in"] == st["documents_written"] + st["skipped.empty_tokens"]:
        raise InputError(f"{task.source}: document accounting does not close ({reader.num_samples} in the index, "
                         f"{st['documents_in']} read, {st['documents_written']} written, "
                         f"{st['skipped.empty_tokens']} skipped); this is a bug")


def num_tokens(stats: Stats) -> dict[str, int]:
    """``num_tokens.json``: total tokens, tokens counting each document at most 1024, documents."""
    return {
        "total_tokens": sum(n * c for n, c in stats.lengths.items()),
        "total_tokens_max_1024": sum(min(n, MAX_1024) * c for n, c in stats.lengths.items()),
        "documents": stats.samples,
    }


class Tokenize(Stage):
    name = "tokenize"
    Config = TokenizeConfig
    lazy_inputs = True

    def plan(self, cfg: TokenizeConfig) -> list[U.Task]:
        """One task per input unit, in input order then unit order."""
        roots = _inputs(cfg)
        many = len(roots) > 1
        tasks = []
        for root in roots:
            units = find_units(root)
            if not units:
                raise InputError(f"{root}: no MDS units (folders with index.json); pass convert's output folder")
            for rel in units:
                src = root / rel
                try:
                    shards = read_index(src).shards
                except InputError:  # a broken unit index fails that unit alone, when it is processed
                    shards = []
                names = set(shards[0].column_names) if shards else {"id", "text"}
                if "text" not in names or "id" not in names:
                    hint = " (already tokenized?)" if "input_ids" in names else ""
                    raise InputError(f"{src}: tokenize needs 'id' and 'text' columns, found {sorted(names)}{hint}; "
                                     "pass a text dataset written by 'ettin-data convert'")
                tasks.append(U.Task(U.output_name(root, rel, many), str(src)))
        return tasks

    def check(self, cfg: TokenizeConfig) -> list[str]:
        """Resolve the tokenizer, check it fits the options and the output's tokenizer.json (read-only)."""
        raw, _ = resolve(cfg)
        return tokenizer_change(cfg.output, raw, cfg.overwrite)

    def prepare(self, cfg: TokenizeConfig) -> tuple[bytes, Any]:
        """Write ``OUTPUT/tokenizer.json`` (the output is locked by then: see the driver)."""
        raw, tok = resolve(cfg, again=True)
        worker_tokenizer(save_tokenizer_json(raw, Path(cfg.output)), tok)
        return raw, tok

    def process_unit(self, task: U.Task, cfg: TokenizeConfig, dst: Path) -> Stats:
        encoder = Encoder.load(cfg)
        reported = [0, 0]

        def undo() -> None:  # a fast engine differed on a verified document: the unit is redone from scratch
            progress.advance(docs=-reported[0], tokens=-reported[1])  # the redo reports the unit again
            reported[:] = [0, 0]
            U.empty(dst)

        _, st = encode_exactly(encoder, lambda enc, st: _tokenize_unit(task, dst, cfg, enc, st, reported), undo)
        count_unit(st, encoder.choice)
        return st

    def finish(self, cfg: TokenizeConfig, stats: Stats, tasks: list[U.Task]) -> Finished:
        out = Path(cfg.output)
        write_root_index(out, [t.name for t in tasks])
        counts = num_tokens(stats)
        write_json_atomic(out / NUM_TOKENS, counts)
        raw = (out / TOKENIZER_FILE).read_bytes()
        tok = worker_tokenizer(out / TOKENIZER_FILE)
        identity = tokenizer_identity(tok, cfg.tokenizer, raw, special_tokens_added=cfg.special_tokens,
                                      prefix_space=cfg.prefix_space)
        engine = engine_summary(run_choice(cfg, stats), stats)
        return Finished({
            "tokenizer": identity,
            "engine": engine,
            "documents": stats["documents_written"],
            "documents_in": stats["documents_in"],
            "skipped": {"empty_tokens": stats["skipped.empty_tokens"]},
            "documents_with_special_token_text": stats["documents_with_special_token_text"],
            "tokens": counts["total_tokens"],
            "tokens_max_1024": counts["total_tokens_max_1024"],
            "length_percentiles": stats.percentiles((0, 50, 90, 99, 100)),
            "dtype": cfg.dtype,
        }, {"tokenizer": identity, "engine": engine})

    def render(self, summary: dict[str, Any]) -> None:
        from ..report import print_summary

        shown = dict(summary)
        eng = shown.pop("engine", None)
        if isinstance(eng, dict):
            shown["engine"] = render_engine(eng)
        tok = shown.pop("tokenizer", None)
        if isinstance(tok, dict):
            shown["tokenizer"] = (f"{tok.get('name')} (vocab {tok.get('vocab_size'):,}, bos {tok.get('bos_id')}, "
                                  f"eos {tok.get('eos_id')}, sha256 {str(tok.get('sha256'))[:12]})")
        print_summary(shown)
