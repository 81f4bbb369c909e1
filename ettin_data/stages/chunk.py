"""chunk: token dataset (tokenize output) -> chunks of at most ``chunk_size`` tokens, ``[BOS] + piece + [EOS]``.

One task per input unit; the output unit keeps the input unit's relative path. The rules live in
:mod:`ettin_data.chunking` (a pure numpy kernel); this module reads shards natively, writes them with
:class:`ShardWriter`, checks the token accounting of every unit and writes per-unit ``stats.json`` and
``token_decile.json``, a root ``stats.json``, and a copy of the input's ``tokenizer.json``.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import progress
from .. import units as U
from ..chunking import ChunkParams, cached_word_start_table, chunk_batch
from ..config import ChunkConfig
from ..dataset import META, TOKENIZER_FILE, read_meta
from ..errors import EttinError, InputError
from ..ids import check_fits, id_bound
from ..jsonio import write_json_atomic
from ..mds import ShardWriter, UnitReader, find_units, write_root_index
from ..stage import Stage
from ..stats import Stats
from ..token_rows import chunk_rows, fast_columns
from ..tokenizer import json_fields

STATS_FILE = "stats.json"
DECILE_FILE = "token_decile.json"

__all__ = ["Chunk", "Batch", "chunk_into", "chunk_params", "input_tokenizer", "stats_json"]

_DOC_KEYS = ("documents", "documents_empty", "content_tokens_in", "content_tokens_written", "total_tokens_skipped",
             "total_duplicated_tokens", "pieces_skipped", "pieces_backfilled", "cuts_moved")
_COUNTS = ("documents", "documents_empty", "content", "written", "skipped", "duplicated", "pieces_skipped",
           "backfilled", "cuts_moved")  # chunk_batch's names of the same counts
_CACHE: dict[tuple[str, bool], tuple[dict[str, Any], np.ndarray | None]] = {}


def input_tokenizer(root: str | Path) -> tuple[dict[str, Any], Path | None]:
    """The tokenizer identity of a token dataset (``ettin_meta.json["tokenizer"]``) and its
    ``tokenizer.json`` (None when absent); refuses a dataset whose files disagree with its metadata."""
    root = Path(root)
    meta = read_meta(root, strict=True)
    if meta is None:
        raise InputError(f"{root / META} is missing or unreadable: chunk reads token datasets written by "
                         "'ettin-data tokenize' (pass that command's output folder)")
    tok = meta.get("tokenizer")
    if not isinstance(tok, dict):
        raise InputError(f"{root / META} has no 'tokenizer' entry (stage {meta.get('stage')!r}): "
                         "chunk needs a token dataset; run 'ettin-data tokenize' first")
    for key in ("bos_id", "eos_id"):
        if not isinstance(tok.get(key), int):
            raise InputError(f"{root / META}: tokenizer {tok.get('name')!r} has no {key} (got {tok.get(key)!r}); "
                             "chunks need BOS and EOS ids: tokenize with a tokenizer that defines them")
    path = root / TOKENIZER_FILE
    if not path.is_file():
        return tok, None
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    if tok.get("sha256") and tok["sha256"] != sha:
        raise InputError(f"{path} (sha256 {sha}) is not the tokenizer recorded in {root / META} "
                         f"({tok.get('name')!r}, sha256 {tok['sha256']}); the dataset is inconsistent: re-tokenize it")
    _check_special_ids(tok, path, root / META)
    return tok, path


def _check_special_ids(tok: dict[str, Any], path: Path, meta: Path) -> None:
    """BOS/EOS (and the special ids) recorded in the metadata must be special tokens of ``tokenizer.json``."""
    try:  # only the header of the file is decoded (not the vocabulary): see tokenizer.json_fields
        added = json_fields(path.read_bytes(), ("added_tokens",)).get("added_tokens") or []
        special = {int(t["id"]) for t in added if t.get("special")}
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        raise InputError(f"{path} is not a valid tokenizer.json; re-tokenize the dataset") from None
    for key in ("bos_id", "eos_id"):
        if tok[key] not in special:
            raise InputError(f"{meta}: {key} {tok[key]} is not a special token of {path} (special ids: "
                             f"{_ids(special)}); the metadata was edited: re-tokenize the dataset")
    listed = tok.get("special_ids")
    if isinstance(listed, list) and set(listed) != special:
        raise InputError(f"{meta}: special_ids {_ids(set(listed))} differ from those of {path} ({_ids(special)}); "
                         "the metadata was edited: re-tokenize the dataset")


def _ids(ids: set[int]) -> str:
    shown = sorted(ids)
    return ", ".join(map(str, shown[:8])) + (", ..." if len(shown) > 8 else "")


def _params(cfg: ChunkConfig, root: str) -> tuple[ChunkParams, bool]:
    """Kernel parameters for one input root (the word-start table is built once per process)."""
    key = (str(Path(root).resolve()), cfg.word_boundaries)
    if key not in _CACHE:
        tok, path = input_tokenizer(root)
        table = None
        if cfg.word_boundaries and path is not None:
            table = cached_word_start_table(path.read_bytes(), id_bound(tok))
        _CACHE.clear()
        _CACHE[key] = (tok, table)
    tok, table = _CACHE[key]
    return chunk_params(cfg, tok, table), cfg.word_boundaries and table is None


def chunk_params(cfg: Any, tok: dict[str, Any], table: np.ndarray | None) -> ChunkParams:
    """Kernel parameters from the chunk options, a tokenizer identity and its word-start table."""
    return ChunkParams(
        chunk_size=cfg.chunk_size, bos_id=tok["bos_id"], eos_id=tok["eos_id"], min_chunk_size=cfg.min_chunk_size,
        always_skip_size=cfg.always_skip_size, backfill=cfg.backfill,
        backfill_no_duplicates=cfg.backfill_no_duplicates, enforce_zeroth=cfg.enforce_min_chunk_size_zeroth,
        add_eos=cfg.add_eos_token, strip_special=bool(tok.get("special_tokens_added", True)), seed=cfg.seed,
        word_start=table,
    )


# a batch of documents: their ids, their token ids back to back, their lengths, their domains (or None)
Batch = tuple[list[str], np.ndarray, np.ndarray, "list[str] | None"]


def _batches(reader: UnitReader) -> Iterator[Batch]:
    """The documents of every shard as one batch: ids and domains, and the token ids back to back (decoded
    straight from the shard bytes)."""
    for shard in reader.shards():
        names, encs = shard.entry.column_names, shard.entry.column_encodings
        where = reader.dirname / shard.entry.raw.basename
        if "id" not in names or "input_ids" not in names:
            raise InputError(f"{where}: needs columns 'id' and 'input_ids' (has {names}); is this a token dataset?")
        enc = encs[names.index("input_ids")]
        parts = enc.split(":")
        if len(parts) != 2 or parts[0] != "ndarray":
            raise InputError(f"{where}: input_ids is {enc!r}, expected 'ndarray:uint32' or 'ndarray:uint16'")
        start, count, dtype = shard.array_spans("input_ids")
        u8 = np.frombuffer(shard.data, np.uint8)
        k = dtype.itemsize
        flat = np.concatenate([u8[a:a + n * k] for a, n in zip(start.tolist(), count.tolist(), strict=True)]
                              or [u8[:0]]).view(dtype)
        rows = list(shard.columns(("id", "domain")))
        yield [r[0] for r in rows], flat, count, ([r[1] for r in rows] if "domain" in names else None)


def chunk_into(dst: Path, batches: Iterable[Batch], p: ChunkParams, columns: dict[str, str], where: str,
               compression: str = "zstd") -> Stats:
    """Chunk batches of documents ``(ids, token ids back to back, lengths, domains)`` into the MDS folder ``dst``
    (shards, ``stats.json``, ``token_decile.json``) with :func:`chunk_batch`, numpy over each batch; checks the
    token accounting. Used by chunk and by prepare."""
    has_domain = "domain" in columns
    st = Stats()
    lengths: list[np.ndarray] = []
    w = ShardWriter(dst, columns, compression=shard_compression(compression))
    vocab = len(p.word_start) if p.word_start is not None else None
    totals: dict[str, int] = dict.fromkeys(_DOC_KEYS, 0)
    fast = fast_columns(columns)  # the chunk rows' bytes built directly (token_rows.py), not via write(dict)
    stored = columns["input_ids"].split(":")[1]
    for name, value in (("BOS", p.bos_id), ("EOS", p.eos_id)):  # framed into arrays of the stored type
        check_fits(stored, value, f"{where}: {name} id", "re-tokenize with --dtype uint32")
    for doc_ids, ids, lens, domains in batches:
        if vocab is not None and len(ids) and int(ids.max()) >= vocab:
            _outside_vocab(ids, lens, doc_ids, vocab, where)
        ch = chunk_batch(ids, lens, doc_ids, p)
        if fast is not None:
            for row in chunk_rows(ch, doc_ids, domains if has_domain else None, fast):
                w.write_raw(row)
        else:
            for k, d in enumerate(ch.doc.tolist()):
                chunk_ids = ch.chunk(k)
                w.write({"id": doc_ids[d], "input_ids": chunk_ids, "len": len(chunk_ids),
                         **({"domain": domains[d]} if has_domain else {})})
        lengths.append(ch.end - ch.start + 2)
        for key, name in zip(_DOC_KEYS, _COUNTS, strict=True):
            totals[key] += ch.counts[name]
        progress.advance(docs=len(doc_ids), tokens=len(ids))
    w.finish()
    for key, n in totals.items():
        st.add(key, n)
    arr = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    st.add("samples", len(arr))
    st.add("total_tokens_written", int(arr.sum()))
    st.add_lengths(arr)
    closes = st["content_tokens_in"] == (st["content_tokens_written"] + st["total_tokens_skipped"]
                                         - st["total_duplicated_tokens"])
    if not closes or st["total_tokens_written"] != st["content_tokens_written"] + 2 * len(arr):
        raise EttinError(f"{where}: token accounting does not close ({stats_json(st)}); this is a bug")
    write_json_atomic(dst / STATS_FILE, stats_json(st))
    write_json_atomic(dst / DECILE_FILE, token_decile(arr))
    return st


def _outside_vocab(ids: np.ndarray, lens: np.ndarray, doc_ids: list[str], vocab: int, where: str) -> None:
    """Name the first document holding an id outside the vocabulary, and its largest id."""
    ends = np.cumsum(lens)
    d = int(np.searchsorted(ends, int(np.argmax(ids >= vocab)), side="right"))
    top = int(ids[int(ends[d] - lens[d]):int(ends[d])].max())
    raise InputError(f"{where}: document {doc_ids[d]!r} has token id {top} outside the vocabulary of the input's "
                     f"tokenizer.json ({vocab} ids); was it tokenized with another tokenizer?")


def shard_compression(option: str) -> str | None:
    """The ShardWriter compression of a ``--compression`` value."""
    return None if option == "none" else option


def token_decile(lengths: np.ndarray) -> dict[str, list[int]]:
    """``{str(length // 1000): [sample indices in the unit]}`` (non-empty buckets only)."""
    buckets = np.asarray(lengths, np.int64) // 1000
    return {str(b): np.flatnonzero(buckets == b).tolist() for b in np.unique(buckets).tolist()}


def stats_json(st: Stats) -> dict[str, Any]:
    keys = ("total_tokens_written", "total_tokens_skipped", "total_duplicated_tokens", "content_tokens_in",
            "content_tokens_written", "samples", "documents", "documents_empty", "pieces_skipped",
            "pieces_backfilled", "cuts_moved")
    return {**{k: st[k] for k in keys}, "length_percentiles": st.percentiles()}


class Chunk(Stage):
    name = "chunk"
    Config = ChunkConfig
    lazy_inputs = True

    def plan(self, cfg: ChunkConfig) -> list[U.Task]:
        tasks, first = [], None
        many = len(cfg.inputs) > 1
        for inp in cfg.inputs:
            root = Path(inp)
            if not root.is_dir():
                raise InputError(f"{root} is not a folder (chunk reads a local token dataset)")
            tok, _ = input_tokenizer(root)
            ident = {k: tok.get(k) for k in ("sha256", "bos_id", "eos_id", "special_tokens_added")}
            if first is None:
                first = (root, ident)
            elif ident != first[1]:
                raise InputError(f"{root} and {first[0]} were tokenized differently ({ident} vs {first[1]}); "
                                 "chunk them separately")
            for rel in find_units(root):
                tasks.append(U.Task(U.output_name(root, rel, many), str(root / rel), str(root)))
        return tasks

    def process_unit(self, task: U.Task, cfg: ChunkConfig) -> Stats:
        root = task.params  # the token dataset the unit belongs to (its tokenizer)
        p, unavailable = _params(cfg, root)
        reader = UnitReader(task.source)
        dtype = reader.columns.get("input_ids", "ndarray:uint32")
        has_domain = "domain" in reader.columns
        columns = {"id": "str", "input_ids": dtype, "len": "int", **({"domain": "str"} if has_domain else {})}
        final = Path(cfg.output) / task.name
        with U.atomic_dir(final) as tmp:
            st = chunk_into(tmp, _batches(reader), p, columns, task.source, cfg.compression)
            if st["documents"] != reader.num_samples:  # documents in = documents chunked
                raise EttinError(f"{task.source}: document accounting does not close ({reader.num_samples} in the "
                                 f"index, {st['documents']} chunked); this is a bug")
            if unavailable:
                st.add("word_boundaries_unavailable")
        U.mark_done(final, st)
        return st

    def finish(self, cfg: ChunkConfig, stats: Stats, tasks: list[U.Task]) -> dict[str, Any]:
        out = Path(cfg.output)
        write_root_index(out, [t.name for t in tasks])
        summary = stats_json(stats)
        write_json_atomic(out / STATS_FILE, summary)
        tok, path = input_tokenizer(cfg.inputs[0])
        if path is not None:
            shutil.copyfile(path, out / TOKENIZER_FILE)
        if not cfg.word_boundaries:
            wb = "off"
        elif stats["word_boundaries_unavailable"]:
            wb = "unavailable"
        else:
            wb = "on"
        return {"tokenizer": tok, **summary, "word_boundaries": wb}

    def render(self, summary: dict[str, Any]) -> None:
        from ..report import print_summary

        shown = dict(summary)
        tok = shown.pop("tokenizer", None)
        if isinstance(tok, dict):
            shown["tokenizer"] = f"{tok.get('name')} (bos {tok.get('bos_id')}, eos {tok.get('eos_id')})"
        shown.pop("counts", None)
        print_summary(shown)
