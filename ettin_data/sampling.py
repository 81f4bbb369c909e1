"""Pieces shared by the ``sample`` stages and ``finalize``: the units of a token dataset and their token
counts, placing whole units (zero-copy) or subsets of their samples, per-unit and per-dataset metadata.

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
from .token_input import TokenInput, open_token_input, require_standard
from .tokenizer import save_tokenizer_json
from .tokenstats import dataset_totals, recorded_tokens, unit_stats, write_dataset_stats, write_unit_files
from .units import clear
from .zerocopy import link_or_copy, link_unit

__all__ = [
    "SUMMARY_FILE", "UnitInfo", "single_input", "dataset_units", "unit_lengths", "unit_ids_lengths", "out_name",
    "place_unit", "write_subset", "written_unit", "finish_dataset", "read_input", "copy_tokenizer", "same_tokenizer",
    "foreign_records", "doc_hash", "rng_for", "SamplingStage",
]

SUMMARY_FILE = "sampling_summary.json"


@dataclass(frozen=True)
class UnitInfo:
    """One unit of an input dataset: ``name`` relative to the dataset root ("" when the root itself is
    the unit), ``path`` its folder, its sample and token counts."""

    name: str
    path: str
    samples: int
    tokens: int


def single_input(cfg: Any) -> Path:
    if len(cfg.inputs) != 1:
        raise ConfigError(f"expected one INPUT folder, got {len(cfg.inputs)}: {', '.join(cfg.inputs)}")
    root = Path(cfg.inputs[0])
    if not root.is_dir():
        raise InputError(f"{root} is not a folder (expected a chunked token dataset)")
    return root


def read_input(root: str | Path, cfg: Any, stage: str) -> TokenInput:
    """A dataset a sampling stage or finalize reads: ettin-data's own, or another tool's given ``--tokenizer``
    (``token_input.py``), whose ids must be ``input_ids`` ndarrays (samples are linked or copied as they are)."""
    inp = open_token_input(root, getattr(cfg, "tokenizer", None), need_tokenizer=False)
    if inp.foreign is not None:
        require_standard(inp, stage)
    return inp


def foreign_records(inputs: Iterable[TokenInput]) -> dict[str, Any]:
    """``{"foreign": [records]}`` for the metadata of an output made from datasets other tools wrote ({} if none)."""
    found = [i.foreign for i in inputs if i.foreign is not None]
    return {"foreign": found} if found else {}


def unit_lengths(path: str | Path) -> np.ndarray:
    return unit_ids_lengths(path, with_ids=False)[1]


def unit_ids_lengths(path: str | Path, with_ids: bool = True) -> tuple[list[str], np.ndarray]:
    """Document ids and token lengths of a unit's samples (only the ``id``/``len`` columns decoded; a unit
    without ids, written by another tool, holds one document per sample: ``:<index>``)."""
    reader = UnitReader(path)
    if "input_ids" not in reader.columns:
        raise InputError(f"{reader.dirname / INDEX}: no input_ids column (not a token dataset; run tokenize)")
    has_len, has_id = "len" in reader.columns, "id" in reader.columns
    cols = (["id"] if with_ids and has_id else []) + (["len"] if has_len else ["input_ids"])
    ids, lengths = [], []
    for i, s in enumerate(reader.iter_samples(cols)):
        if with_ids:
            ids.append(str(s["id"]) if has_id else f":{i}")
        lengths.append(s["len"] if has_len else len(s["input_ids"]))
    return ids, np.asarray(lengths, np.int64)


def _unit_tokens(path: Path, samples: int) -> int:
    """A unit's tokens: as its ``stats.json`` records them, else counted from its samples."""
    tokens = recorded_tokens(path, samples)
    return tokens if tokens is not None else int(unit_lengths(path).sum())


def dataset_units(root: str | Path) -> list[UnitInfo]:
    """Every unit of a token dataset (sorted), with samples (index) and tokens (``stats.json``, or
    counted from the ``len`` column when a unit has none)."""
    root = Path(root)
    names = find_units(root)
    if not names:
        raise InputError(f"{root}: no MDS units found (expected a chunk output: unit folders with index.json)")
    out = []
    for name in names:
        path = root / name if name else root
        samples = read_index(path).samples
        out.append(UnitInfo(name, str(path), samples, _unit_tokens(path, samples)))
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


def place_unit(src: str | Path, dst: Path, info_tokens: int | None = None) -> Stats:
    """Put a whole input unit at ``dst`` without copying shard bytes (hard links)."""
    src = Path(src)
    placed = link_unit(src, dst, extra_files=STATS_FILES)
    samples = read_index(dst).samples
    if not (dst / STATS_FILE).is_file() or not (dst / DECILE_FILE).is_file():
        ids, lengths = unit_ids_lengths(dst)
        write_unit_files(dst, unit_stats(ids, lengths), lengths)
    tokens = info_tokens if info_tokens is not None else _unit_tokens(dst, samples)
    st = Stats()
    st.add("samples", samples)
    st.add("tokens", tokens)
    st.add("units_linked")
    st.add("bytes_linked", placed.linked_bytes)
    st.add("bytes_copied", placed.copied_bytes)
    progress.advance(docs=samples, tokens=tokens)
    return st


def write_subset(src: str | Path, dst: Path, keep: Iterable[int] | np.ndarray) -> Stats:
    """Write the samples of ``src`` whose indices are in ``keep`` (any order; written in unit order) as new
    shards at ``dst`` (same columns and compression as the input), with stats.json/token_decile.json."""
    reader = UnitReader(src)
    wanted = np.zeros(reader.num_samples, bool)
    idx = np.asarray(list(keep) if not isinstance(keep, np.ndarray) else keep, np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= reader.num_samples):
        raise InputError(f"{src}: sample index out of range (unit changed since planning? rerun)")
    wanted[idx] = True
    ids, lengths = [], []
    with ShardWriter(dst, reader.columns, compression=_compression(reader.index)) as w:
        for i, sample in enumerate(reader.iter_samples()):
            if wanted[i]:
                w.write(sample)
                ids.append(sample.get("id", ""))
                lengths.append(len(sample["input_ids"]))
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
                tokens: int | None = None) -> Stats:
    """One output unit of a ``sample`` stage, written into ``dst``: the whole input unit ``src`` hard-linked
    (``keep`` None; ``tokens``: its known token count), else its samples ``keep`` written anew."""
    return place_unit(src, dst, tokens) if keep is None else write_subset(src, dst, keep)


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

    def one_input(self, cfg: Any) -> Path:
        """The INPUT of a run that takes one dataset (budget, context, split), checked as :func:`read_input` does."""
        root = single_input(cfg)
        read_input(root, cfg, self.name)
        return root

    def finish_one(self, cfg: Any, tasks: list[Any]) -> tuple[Path, dict[str, int], TokenInput]:
        """The output of a run from one INPUT finished as a sampled dataset: root index and ``stats.json`` over the
        plan's units, the input's ``tokenizer.json``; returns the output folder, its totals and the input."""
        out, src = Path(cfg.output), Path(cfg.inputs[0])
        totals = finish_dataset(out, [t.name for t in tasks])
        inp = read_input(src, cfg, self.name)
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
