"""chunk: token dataset (tokenize output) -> chunks of at most ``chunk_size`` tokens, ``[BOS] + piece + [EOS]``.

One task per input unit; the output unit keeps the input unit's relative path. The rules live in
:mod:`ettin_data.chunking` (a pure numpy kernel); this module reads shards natively, writes them with
:class:`ShardWriter`, checks the token accounting of every unit and writes per-unit ``stats.json`` and
``token_decile.json``, a root ``stats.json``, and a copy of the input's ``tokenizer.json``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import progress
from .. import units as U
from ..chunking import ChunkParams, cached_word_start_table, chunk_batch
from ..config import ChunkConfig
from ..dataset import META, TOKENIZER_FILE
from ..errors import ConfigError, EttinError, InputError
from ..framing import Framing, framing
from ..ids import check_fits, narrow
from ..mds import INDEX, Shard, ShardWriter, UnitReader, find_units, write_root_index
from ..stage import Finished, Stage
from ..stats import Stats
from ..token_input import TokenColumn, TokenInput, check_ids, open_token_input, token_column
from ..token_rows import chunk_rows, fast_columns
from ..tokenizer import json_fields, save_tokenizer_json
from ..tokenstats import chunk_stats, write_dataset_stats, write_unit_files

__all__ = ["Chunk", "Batch", "ChunkSource", "chunk_into", "chunk_params", "input_tokenizer"]

_DOC_KEYS = ("documents", "documents_empty", "content_tokens_in", "content_tokens_written", "total_tokens_skipped",
             "total_duplicated_tokens", "pieces_skipped", "pieces_backfilled", "cuts_moved")
_COUNTS = ("documents", "documents_empty", "content", "written", "skipped", "duplicated", "pieces_skipped",
           "backfilled", "cuts_moved")  # chunk_batch's names of the same counts
_CACHE: dict[Any, tuple[np.ndarray | None, bool]] = {}
_NATIVE_DTYPES = ("ndarray:uint32", "ndarray:uint16")  # kept as they are; any other ids are written as uint32


def input_tokenizer(root: str | Path, spec: str | None = None, units: list[str] | None = None) -> TokenInput:
    """A token dataset to chunk (see ``token_input.py``): ettin-data's own, whose ``tokenizer.json`` must match
    the recorded sha256 and whose recorded BOS/EOS must be its special tokens; or another tool's, given ``spec``
    (``--tokenizer``)."""
    root = Path(root)
    inp = open_token_input(root, spec, units=units)
    if inp.foreign is not None:
        return inp
    tok = inp.tokenizer or {}
    path = root / TOKENIZER_FILE
    if not path.is_file():
        return inp
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    if tok.get("sha256") and tok["sha256"] != sha:
        raise InputError(f"{path} (sha256 {sha}) is not the tokenizer recorded in {root / META} "
                         f"({tok.get('name')!r}, sha256 {tok['sha256']}); the dataset is inconsistent: re-tokenize it")
    _check_special_ids(tok, path, root / META)
    return inp


def _check_special_ids(tok: dict[str, Any], path: Path, meta: Path) -> None:
    """BOS/EOS (and the special ids) recorded in the metadata must be special tokens of ``tokenizer.json``."""
    try:  # only the header of the file is decoded (not the vocabulary): see tokenizer.json_fields
        added = json_fields(path.read_bytes(), ("added_tokens",)).get("added_tokens") or []
        special = {int(t["id"]) for t in added if t.get("special")}
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        raise InputError(f"{path} is not a valid tokenizer.json; re-tokenize the dataset") from None
    for key in ("bos_id", "eos_id"):
        if tok.get(key) is not None and tok[key] not in special:
            raise InputError(f"{meta}: {key} {tok[key]} is not a special token of {path} (special ids: "
                             f"{_ids(special)}); the metadata was edited: re-tokenize the dataset")
    listed = tok.get("special_ids")
    if isinstance(listed, list) and set(listed) != special:
        raise InputError(f"{meta}: special_ids {_ids(set(listed))} differ from those of {path} ({_ids(special)}); "
                         "the metadata was edited: re-tokenize the dataset")


def _ids(ids: set[int]) -> str:
    shown = sorted(ids)
    return ", ".join(map(str, shown[:8])) + (", ..." if len(shown) > 8 else "")


@dataclass(frozen=True)
class ChunkSource:
    """A chunk task's input: the dataset ``root`` it belongs to, the framing, and the id range to check."""

    root: str
    framing: Framing
    limit: int | None


def _params(cfg: ChunkConfig, src: ChunkSource) -> tuple[ChunkParams, bool]:
    """Kernel parameters (the word-start table of the output's tokenizer.json is built once per process)."""
    path = Path(cfg.output) / TOKENIZER_FILE
    stat = path.stat() if path.is_file() else None
    key = (str(path.resolve()), stat and (stat.st_mtime_ns, stat.st_size), cfg.word_boundaries)
    if key not in _CACHE:
        table = None
        if cfg.word_boundaries and stat is not None:
            table = cached_word_start_table(path.read_bytes(), src.limit)
        _CACHE.clear()
        _CACHE[key] = (table, cfg.word_boundaries and table is None)
    table, unavailable = _CACHE[key]
    return chunk_params(cfg, src.framing, table), unavailable


def chunk_params(cfg: Any, f: Framing, table: np.ndarray | None) -> ChunkParams:
    """Kernel parameters from the chunk options, the framing and the tokenizer's word-start table."""
    return ChunkParams(
        chunk_size=cfg.chunk_size, bos_id=f.bos_id, eos_id=f.eos_id, min_chunk_size=cfg.min_chunk_size,
        always_skip_size=cfg.always_skip_size, backfill=cfg.backfill,
        backfill_no_duplicates=cfg.backfill_no_duplicates, enforce_zeroth=cfg.enforce_min_chunk_size_zeroth,
        add_eos=cfg.add_eos_token, strip_special=f.strip_special, seed=cfg.seed, word_start=table,
        strip_head=f.strip_head, strip_tail=f.strip_tail,
    )


# a batch of documents: their ids, their token ids back to back, their lengths, their domains (or None)
Batch = tuple[list[str], np.ndarray, np.ndarray, "list[str] | None"]


def _batches(reader: UnitReader, column: TokenColumn, unit: str, dtype: str, limit: int | None) -> Iterator[Batch]:
    """The documents of every shard as one batch. Our own token shards (``input_ids`` of the stored type, ``str``
    ids) are read for all samples at once from the shard bytes; any other layout sample by sample
    (:func:`_shard_documents`)."""
    out = np.dtype(dtype.split(":")[1])
    k = 0
    for shard in reader.shards():
        cols = shard.entry.columns
        if column.name == "input_ids" and cols.get("input_ids") == dtype and cols.get("id") == "str" \
                and cols.get("domain", "str") == "str":
            start, count, dt = shard.array_spans("input_ids")
            u8 = np.frombuffer(shard.data, np.uint8)
            size = dt.itemsize
            flat = np.concatenate([u8[a:a + n * size] for a, n in zip(start.tolist(), count.tolist(), strict=True)]
                                  or [u8[:0]]).view(dt)
            rows = list(shard.columns(("id", "domain")))
            yield [r[0] for r in rows], flat, count, ([r[1] for r in rows] if "domain" in cols else None)
        else:
            docs = list(_shard_documents(shard, column, unit, out, limit, k))
            flat = np.concatenate([d[1] for d in docs]) if docs else np.zeros(0, out)
            yield ([d[0] for d in docs], flat, np.array([len(d[1]) for d in docs], np.int64),
                   [d[2] for d in docs] if "domain" in cols else None)
        k += shard.entry.samples


def _shard_documents(shard: Shard, column: TokenColumn, unit: str, out: np.dtype, limit: int | None,
                     k: int) -> Iterator[tuple[str, np.ndarray, str | None]]:
    """(id, ids, domain) of every sample of a shard another tool wrote (``k``: its first sample's index in the
    unit). Ids of another type than ``out`` are checked against ``limit`` and converted (a bad one names the shard
    file and the sample's index in it); a sample without an id is ``<unit>:<index in the unit>``."""
    for i, (doc_id, value, domain) in enumerate(shard.columns(("id", column.name, "domain"))):
        where = f"{shard.path}: sample {i}"
        ids = column.ids(value, where)
        if ids.dtype != out:  # another tool's ids (int64, bytes, ...): in the tokenizer's range, then stored
            check_ids(ids, limit, where)
            ids = narrow(ids, out, where)
        if doc_id is None:
            doc_id = f"{unit}:{k}"
        elif not isinstance(doc_id, str):
            doc_id = str(doc_id)
        if domain is not None and not isinstance(domain, str):
            domain = str(domain)
        k += 1
        yield doc_id, ids, domain


def chunk_into(dst: Path, batches: Iterable[Batch], p: ChunkParams, columns: dict[str, str], where: str,
               limit: int | None = None, compression: str = "zstd") -> Stats:
    """Chunk batches of documents ``(ids, token ids back to back, lengths, domains)`` into the MDS folder ``dst``
    (shards, ``stats.json``, ``token_decile.json``) with :func:`chunk_batch`, numpy over each batch; checks every
    id below ``limit`` (default: the word-start table's size) and the token accounting. Used by chunk and by
    prepare."""
    has_domain = "domain" in columns
    st = Stats()
    lengths: list[np.ndarray] = []
    w = ShardWriter(dst, columns, compression=shard_compression(compression))
    vocab = limit if limit is not None else len(p.word_start) if p.word_start is not None else None
    totals: dict[str, int] = dict.fromkeys(_DOC_KEYS, 0)
    fast = fast_columns(columns)  # the chunk rows' bytes built directly (token_rows.py), not via write(dict)
    stored = columns["input_ids"].split(":")[1]
    for name, value in (("BOS", p.bos_id), ("EOS", p.eos_id)):  # framed into arrays of the stored type
        if value is not None:
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
        lengths.append(ch.end - ch.start + p.framing)
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
    if not closes or st["total_tokens_written"] != st["content_tokens_written"] + p.framing * len(arr):
        raise EttinError(f"{where}: token accounting does not close ({chunk_stats(st)}); this is a bug")
    write_unit_files(dst, chunk_stats(st), arr)
    return st


def _outside_vocab(ids: np.ndarray, lens: np.ndarray, doc_ids: list[str], vocab: int, where: str) -> None:
    """Name the first document holding an id outside the vocabulary, and its largest id."""
    ends = np.cumsum(lens)
    d = int(np.searchsorted(ends, int(np.argmax(ids >= vocab)), side="right"))
    top = int(ids[int(ends[d] - lens[d]):int(ends[d])].max())
    raise InputError(f"{where}: document {doc_ids[d]!r} has token id {top} outside the vocabulary of the input's "
                     f"tokenizer ({vocab} ids); was it tokenized with another tokenizer?")


def shard_compression(option: str) -> str | None:
    """The ShardWriter compression of a ``--compression`` value."""
    return None if option == "none" else option


class Chunk(Stage):
    name = "chunk"
    Config = ChunkConfig
    lazy_inputs = True

    def plan(self, cfg: ChunkConfig) -> list[U.Task]:
        tasks: list[U.Task] = []
        first: tuple[Path, dict[str, Any], TokenInput] | None = None
        many = len(cfg.inputs) > 1
        for inp in cfg.inputs:
            root = Path(inp)
            if not root.is_dir():
                raise InputError(f"{root} is not a folder (chunk reads a local token dataset)")
            units = find_units(root)
            src = input_tokenizer(root, cfg.tokenizer, units)
            tok = src.tokenizer or {}
            ident = {k: tok.get(k) for k in ("sha256", "bos_id", "eos_id", "special_tokens_added")}
            if first is None:
                first = (root, ident, src)
                source = ChunkSource("", framing(cfg, tok, src.tokenizer_bytes), src.limit)
            elif ident != first[1]:
                raise InputError(f"{root} and {first[0]} were tokenized differently ({ident} vs {first[1]}); "
                                 "chunk them separately")
            params = ChunkSource(str(root), source.framing, source.limit)
            for rel in units:
                tasks.append(U.Task(U.output_name(root, rel, many), str(root / rel), params))
        return tasks

    def check(self, cfg: ChunkConfig) -> list[str]:
        """An output chunked with another tokenizer.json: refused without --overwrite (read-only)."""
        raw = input_tokenizer(cfg.inputs[0], cfg.tokenizer).tokenizer_bytes
        dest = Path(cfg.output) / TOKENIZER_FILE
        if raw is None or not dest.is_file() or dest.read_bytes() == raw or not any(Path(cfg.output).rglob(U.DONE)):
            return []
        if not cfg.overwrite:
            raise ConfigError(f"{cfg.output} holds units chunked with another tokenizer.json; pass --overwrite to "
                              "redo them, or choose a new output folder")
        return ["tokenizer.json: another one"]

    def prepare(self, cfg: ChunkConfig) -> None:
        """The output's ``tokenizer.json`` (the input's, or ``--tokenizer``'s): what every worker reads."""
        raw = input_tokenizer(cfg.inputs[0], cfg.tokenizer).tokenizer_bytes
        dest = Path(cfg.output) / TOKENIZER_FILE
        if raw is not None and (not dest.is_file() or dest.read_bytes() != raw):
            save_tokenizer_json(raw, cfg.output)

    def process_unit(self, task: U.Task, cfg: ChunkConfig, dst: Path) -> Stats:
        src: ChunkSource = task.params
        p, unavailable = _params(cfg, src)
        reader = UnitReader(task.source)
        column = token_column(reader.columns, str(reader.dirname / INDEX))
        enc = reader.columns[column.name]
        dtype = enc if enc in _NATIVE_DTYPES else "ndarray:uint32"
        has_domain = "domain" in reader.columns
        columns = {"id": "str", "input_ids": dtype, "len": "int", **({"domain": "str"} if has_domain else {})}
        # the id range: the tokenizer's, or its word-start table's (every id of tokenizer.json) when larger
        limit = max(src.limit or 0, len(p.word_start) if p.word_start is not None else 0) or None
        st = chunk_into(dst, _batches(reader, column, task.name, dtype, limit), p, columns, task.source, limit,
                        cfg.compression)
        if st["documents"] != reader.num_samples:  # documents in = documents chunked
            raise EttinError(f"{task.source}: document accounting does not close ({reader.num_samples} in the "
                             f"index, {st['documents']} chunked); this is a bug")
        if unavailable:
            st.add("word_boundaries_unavailable")
        return st

    def finish(self, cfg: ChunkConfig, stats: Stats, tasks: list[U.Task]) -> Finished:
        out = Path(cfg.output)
        write_root_index(out, [t.name for t in tasks])
        summary = chunk_stats(stats)
        write_dataset_stats(out, summary)
        inputs = [input_tokenizer(i, cfg.tokenizer) for i in cfg.inputs]
        tok = inputs[0].tokenizer
        frame = tasks[0].params.framing if tasks else framing(cfg, tok or {}, inputs[0].tokenizer_bytes)
        if not cfg.word_boundaries:
            wb = "off"
        elif stats["word_boundaries_unavailable"]:
            wb = "unavailable"
        else:
            wb = "on"
        meta: dict[str, Any] = {"tokenizer": tok, "framing": frame.record()}
        foreign = [i.foreign for i in inputs if i.foreign is not None]
        if foreign:
            meta["foreign"] = foreign
        return Finished({"tokenizer": tok, **summary, "word_boundaries": wb, "framing": frame.record()}, meta)

    def render(self, summary: dict[str, Any]) -> None:
        from ..report import print_summary

        shown = dict(summary)
        tok = shown.pop("tokenizer", None)
        f = shown.pop("framing", None) or {}
        if isinstance(tok, dict):
            shown["tokenizer"] = tok.get("name")
        if f:
            shown["chunks"] = " ".join(x for x in (f.get("bos"), "piece", f.get("eos")) if x)
        shown.pop("counts", None)
        print_summary(shown)
