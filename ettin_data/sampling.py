"""Pieces shared by the ``sample`` stages and ``finalize``: the units of a token dataset and their token
counts, placing whole units (zero-copy) or subsets of their samples, per-unit and per-dataset metadata.

Samples are kept as they are, in whatever token layout the input has (``token_input.py``: ``input_ids`` or
``tokens``, ndarray or int64 bytes); what sampling needs of the token column is each sample's token count
(:meth:`TokenColumn.lengths`). A dataset another tool wrote is counted from its ids, never from its own
``len`` column or ``stats.json``, and every id is checked against its tokenizer as it is read (``limit``:
:attr:`TokenInput.check_limit`); ettin-data's own datasets are planned from their ``stats.json`` and their
whole units linked without reading a sample.

Every unit a sampling stage writes has the per-unit files of a token dataset (``stats.json``,
``token_decile.json``: ``tokenstats.py``), so sampled datasets can be sampled again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import progress
from .dataset import DECILE_FILE, META, STATS_FILE, STATS_FILES, TOKENIZER_FILE
from .errors import ConfigError, InputError
from .jsonio import jsonable, write_json_atomic
from .mds import (
    INDEX,
    Index,
    ShardWriter,
    UnitReader,
    UnsafePath,
    check_member,
    find_units,
    read_index,
    write_root_index,
)
from .safefile import copy_file
from .stage import Finished, Stage
from .stats import Stats
from .token_input import TokenInput, open_token_input, token_column
from .tokenizer import save_tokenizer_json
from .tokenstats import dataset_totals, recorded_tokens, unit_stats, write_dataset_stats, write_unit_files
from .units import clear
from .zerocopy import link_or_copy, link_unit

__all__ = [
    "SUMMARY_FILE", "UnitInfo", "single_input", "dataset_units", "unit_lengths", "unit_ids_lengths", "out_name",
    "link_whole", "place_unit", "write_subset", "written_unit", "finish_dataset", "read_input", "copy_tokenizer",
    "same_tokenizer", "foreign_records", "doc_hash", "rng_for", "SamplingStage",
]

SUMMARY_FILE = "sampling_summary.json"


@dataclass(frozen=True)
class UnitInfo:
    """One unit of an input dataset: ``name`` relative to the dataset root ("" when the root itself is
    the unit), ``path`` its folder, its sample and token counts; ``limit``: the id range its ids are checked
    against whenever they are read (a dataset another tool wrote; None for ettin-data's own)."""

    name: str
    path: str
    samples: int
    tokens: int
    limit: int | None = None


def single_input(cfg: Any) -> Path:
    if len(cfg.inputs) != 1:
        raise ConfigError(f"expected one INPUT folder, got {len(cfg.inputs)}: {', '.join(cfg.inputs)}")
    root = Path(cfg.inputs[0])
    if not root.is_dir():
        raise InputError(f"{root} is not a folder (expected a chunked token dataset)")
    return root


def read_input(root: str | Path, cfg: Any) -> TokenInput:
    """A dataset a sampling stage or finalize reads: ettin-data's own, or another tool's given ``--tokenizer``
    (``token_input.py``), in any token layout it recognises."""
    return open_token_input(root, getattr(cfg, "tokenizer", None), need_tokenizer=False)


def foreign_records(inputs: Iterable[TokenInput]) -> dict[str, Any]:
    """``{"foreign": [records]}`` for the metadata of an output made from datasets other tools wrote ({} if none)."""
    found = [i.foreign for i in inputs if i.foreign is not None]
    return {"foreign": found} if found else {}


def unit_lengths(path: str | Path, limit: int | None = None) -> np.ndarray:
    return unit_ids_lengths(path, with_ids=False, limit=limit)[1]


def unit_ids_lengths(path: str | Path, with_ids: bool = True, limit: int | None = None
                     ) -> tuple[list[str], np.ndarray]:
    """Document ids and token counts of a unit's samples, in any token layout: the counts read off the shard
    bytes (:meth:`TokenColumn.lengths`; with ``limit``, every id checked), only the ``id`` column decoded. A unit
    without ids, written by another tool, holds one document per sample: ``:<index>``."""
    reader = UnitReader(path)
    column = token_column(reader.columns, str(reader.dirname / INDEX))
    ids: list[str] = []
    lengths = [np.zeros(0, np.int64)]
    for shard in reader.shards():
        counts = column.lengths(shard, limit)
        if with_ids and "id" in shard.entry.column_names:
            ids += [str(v) for (v,) in shard.columns(("id",))]
        elif with_ids:
            ids += [f":{i}" for i in range(len(ids), len(ids) + len(counts))]
        lengths.append(counts.astype(np.int64))
    return ids, np.concatenate(lengths)


def _unit_tokens(path: Path, samples: int, limit: int | None) -> int:
    """A unit's tokens: as its ``stats.json`` records them, else (and always for another tool's data, ``limit``
    given) counted from its ids."""
    tokens = recorded_tokens(path, samples) if limit is None else None
    return tokens if tokens is not None else int(unit_lengths(path, limit).sum())


_COUNTED: dict[tuple[str, int], tuple[Any, list[UnitInfo]]] = {}  # another tool's datasets, counted once per run


def dataset_units(root: str | Path, limit: int | None = None) -> list[UnitInfo]:
    """Every unit of a token dataset (sorted), with samples (index) and tokens (``stats.json``, or counted from
    the ids when a unit has none). ``limit``: a dataset another tool wrote (:attr:`TokenInput.check_limit`):
    every unit is counted from its ids, each checked below ``limit`` (planning and finishing read it once: the
    counts are kept while its indexes stay unchanged)."""
    root = Path(root)
    names = find_units(root)
    if not names:
        raise InputError(f"{root}: no MDS units found (expected a chunk output: unit folders with index.json)")
    paths = [root / name if name else root for name in names]
    key = (str(root), limit or 0)
    stamp = None
    if limit is not None:
        indexes = [(p / INDEX).stat() for p in paths]
        stamp = [(n, s.st_mtime_ns, s.st_size) for n, s in zip(names, indexes, strict=True)]
    if stamp is not None and key in _COUNTED and _COUNTED[key][0] == stamp:
        return _COUNTED[key][1]
    out = []
    for name, path in zip(names, paths, strict=True):
        samples = read_index(path).samples
        out.append(UnitInfo(name, str(path), samples, _unit_tokens(path, samples, limit), limit))
    if stamp is not None:
        _COUNTED[key] = (stamp, out)
    return out


def out_name(unit: str, repeat: int = 0) -> str:
    """Output unit name of an input unit (``-repN`` for its N-th repeat when upsampling)."""
    base = unit or "data"
    return f"{base}-rep{repeat}" if repeat else base


def rng_for(seed: int, *keys: str) -> np.random.Generator:
    """A generator seeded by ``seed`` and string keys (stable across processes and Python versions)."""
    extra = [int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little") for k in keys]
    return np.random.default_rng([seed & (2**63 - 1), *extra])


def doc_hash(seed: int, doc_id: str) -> int:
    """Stable 64-bit hash of (seed, document id): the split's draw order."""
    return int.from_bytes(hashlib.blake2b(f"{seed}\x00{doc_id}".encode(), digest_size=8).digest(), "little")


def _compression(index: Index) -> str | None:
    comp = next((s.compression for s in index.shards), None)
    return "zstd" if comp and comp.split(":")[0] == "zstd" else None


def link_whole(src: str | Path, dst: Path, extra_files: tuple[str, ...] = STATS_FILES) -> Stats:
    """Hard-link the shards of the input unit ``src`` at ``dst`` (its index and ``extra_files`` copied); the
    placement's stats (``units_linked``, ``bytes_linked``, ``bytes_copied``)."""
    placed = link_unit(Path(src), dst, extra_files=extra_files)
    st = Stats()
    st.add("units_linked")
    st.add("bytes_linked", placed.linked_bytes)
    st.add("bytes_copied", placed.copied_bytes)
    return st


def place_unit(src: str | Path, dst: Path, info_tokens: int | None = None, limit: int | None = None) -> Stats:
    """Put a whole input unit at ``dst`` without copying shard bytes (hard links). ettin-data's own unit keeps
    its ``stats.json``/``token_decile.json`` and is not read; another tool's (``limit``: its id range) is read
    once: every id checked, its stats files written from the counts (its own are not taken)."""
    st = link_whole(src, dst, STATS_FILES if limit is None else ())
    samples = read_index(dst).samples
    tokens = info_tokens
    if limit is not None or not (dst / STATS_FILE).is_file() or not (dst / DECILE_FILE).is_file():
        ids, lengths = unit_ids_lengths(dst if limit is None else src, limit=limit)  # a bad id: named in its input
        write_unit_files(dst, unit_stats(ids, lengths), lengths)
        tokens = int(lengths.sum())
    if tokens is None:
        tokens = _unit_tokens(dst, samples, None)
    st.add("samples", samples)
    st.add("tokens", tokens)
    progress.advance(docs=samples, tokens=tokens)
    return st


def write_subset(src: str | Path, dst: Path, keep: Iterable[int] | np.ndarray, limit: int | None = None) -> Stats:
    """Write the samples of ``src`` whose indices are in ``keep`` (any order; written in unit order) as new
    shards at ``dst`` (same columns, token layout and compression as the input), with stats.json/token_decile.json.
    ``limit``: another tool's data, whose every id is checked."""
    reader = UnitReader(src)
    column = token_column(reader.columns, str(reader.dirname / INDEX))
    wanted = np.zeros(reader.num_samples, bool)
    idx = np.asarray(list(keep) if not isinstance(keep, np.ndarray) else keep, np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= reader.num_samples):
        raise InputError(f"{src}: sample index out of range (unit changed since planning? rerun)")
    wanted[idx] = True
    ids, lengths = [], []
    i = 0
    with ShardWriter(dst, reader.columns, compression=_compression(reader.index)) as w:
        for shard in reader.shards():
            counts = column.lengths(shard, limit)
            for k, sample in enumerate(shard.samples()):
                if wanted[i + k]:
                    w.write(sample)
                    ids.append(sample.get("id", f":{i + k}"))  # without ids: one document per sample
                    lengths.append(int(counts[k]))
            i += len(counts)
    st = written_unit(dst, ids, lengths)
    st.add_lengths(lengths)
    progress.advance(docs=st["samples"], tokens=st["tokens"])
    return st


def written_unit(dst: Path, ids: list[Any], lengths: np.ndarray | list[int]) -> Stats:
    """A unit whose shards were just written at ``dst`` (its samples' ``ids`` and token ``lengths``): its
    ``stats.json`` and ``token_decile.json`` are written, its stats returned (samples, tokens, bytes)."""
    stats = unit_stats(ids, lengths)
    write_unit_files(dst, stats, lengths)
    st = Stats()
    st.add("samples", len(ids))
    st.add("tokens", stats["total_tokens_written"])
    st.add("units_written")
    st.add("bytes_written", sum(p.stat().st_size for p in dst.glob("shard.*")))
    return st


def sample_unit(src: str | Path, dst: Path, keep: Iterable[int] | np.ndarray | None = None,
                tokens: int | None = None, limit: int | None = None) -> Stats:
    """One output unit of a ``sample`` stage, written into ``dst``: the whole input unit ``src`` hard-linked
    (``keep`` None; ``tokens``: its known token count), else its samples ``keep`` written anew. ``limit``: the id
    range of another tool's data, every id of which is checked as it is read."""
    return place_unit(src, dst, tokens, limit) if keep is None else write_subset(src, dst, keep, limit)


def copy_tokenizer(src_roots: Iterable[str | Path], dst: Path, inputs: Iterable[TokenInput] = ()) -> None:
    """``dst/tokenizer.json``: the one given with ``--tokenizer`` for datasets another tool wrote (``inputs``),
    else a hard link (or copy) of the first ``tokenizer.json`` found in ``src_roots``."""
    for inp in inputs:
        if inp.foreign is not None and inp.tokenizer_bytes is not None:
            save_tokenizer_json(inp.tokenizer_bytes, dst)
            return
    for root in src_roots:
        p = Path(root) / TOKENIZER_FILE
        if p.is_file():
            try:
                check_member(Path(root), TOKENIZER_FILE, str(p))
            except UnsafePath:  # a symlink out of the input: copied, never hard-linked to the outside file
                copy_file(p, dst / TOKENIZER_FILE)
                return
            link_or_copy(p, dst / TOKENIZER_FILE)
            return


def same_tokenizer(inputs: Iterable[TokenInput]) -> dict[str, Any] | None:
    """The tokenizer identity shared by ``inputs`` (InputError when two datasets disagree)."""
    found: dict[str, Any] | None = None
    first = ""
    for inp in inputs:
        root, tok = inp.root, inp.tokenizer
        if tok is None:
            continue
        if found is None:
            found, first = tok, str(root)
        elif tok.get("sha256") != found.get("sha256") or tok.get("vocab_size") != found.get("vocab_size"):
            raise InputError(
                f"{root} was tokenized with {tok.get('name')!r}, {first} with {found.get('name')!r}: "
                "datasets combined into one must share a tokenizer"
            )
    return found


def finish_dataset(root: Path, units: list[str]) -> dict[str, int]:
    """Root ``index.json`` over ``units`` (the plan's, in plan order) and summed ``stats.json``; unit folders
    of an earlier plan (a rerun with --overwrite and other settings) are removed. Returns the totals."""
    keep = set(units)
    ours = _recorded_units(root)
    for stale in find_units(root):
        if stale not in keep and stale and stale in ours:  # never a unit this dataset's runs did not write
            clear(root / stale)
    write_root_index(root, units)
    samples = tokens = 0
    for u in units:
        d = json.loads((root / u / STATS_FILE).read_text())
        samples += int(d["samples"])
        tokens += int(d["total_tokens_written"])
    totals = dataset_totals(samples, tokens, len(units))
    write_dataset_stats(root, totals)
    return totals


def _recorded_units(root: Path) -> set[str]:
    """Units recorded as this dataset's (``.ettin_units.json`` of ``root`` or of its parent, for split folders)."""
    from .outputs import UNITS_FILE

    for base, prefix in ((root, ""), (root.parent, root.name + "/")):
        f = base / UNITS_FILE
        if f.is_file():
            try:
                names = json.loads(f.read_text())["units"]
            except (OSError, ValueError, KeyError, TypeError):
                return set()
            return {n[len(prefix):] for n in names if n.startswith(prefix)}
    return set()


def write_split_meta(root: Path, meta: dict[str, Any]) -> None:
    write_json_atomic(root / META, jsonable(meta))


class SamplingStage(Stage):
    """A ``sample`` stage: what the four share (the one INPUT, the finished result), and a summary that shows
    the tokenizer by name and hash only."""

    def one_input(self, cfg: Any) -> tuple[Path, TokenInput]:
        """The INPUT of a run that takes one dataset (budget, context, split), read as :func:`read_input` does."""
        root = single_input(cfg)
        return root, read_input(root, cfg)

    def finish_one(self, cfg: Any, tasks: list[Any]) -> tuple[Path, dict[str, int], TokenInput]:
        """The output of a run from one INPUT finished as a sampled dataset: root index and ``stats.json`` over the
        plan's units, the input's ``tokenizer.json``; returns the output folder, its totals and the input."""
        out, src = Path(cfg.output), Path(cfg.inputs[0])
        totals = finish_dataset(out, [t.name for t in tasks])
        inp = read_input(src, cfg)
        copy_tokenizer([src], out, [inp])
        return out, totals, inp

    @staticmethod
    def finished(summary: dict[str, Any], tok: dict[str, Any] | None, inputs: list[TokenInput],
                 **meta: Any) -> Finished:
        """The user's summary and the output's metadata (``meta``), each with the tokenizer identity ``tok``; the
        metadata records the inputs other tools wrote."""
        tok_meta = {"tokenizer": tok} if tok is not None else {}
        return Finished({**summary, **tok_meta}, {**tok_meta, **meta, **foreign_records(inputs)})

    def render(self, summary: dict[str, Any]) -> None:
        from .report import print_summary

        tok = summary.get("tokenizer")
        shown = {k: v for k, v in summary.items() if k not in ("tokenizer", "counts")}
        if isinstance(tok, dict):
            shown["tokenizer"] = (f"{tok.get('name')} (sha256 {str(tok.get('sha256'))[:12]}, "
                                  f"vocab {tok.get('vocab_size')})")
        print_summary(shown)
