"""finalize: ``sample split`` outputs -> the training layout Ettin/ModernBERT configs read.

``OUTPUT/train/<name>/<unit>`` and ``OUTPUT/validation/<name>/<unit>`` (name = INPUT folder name, or
``--name``), one root ``index.json`` per split over every dataset (nested basenames), each split with
``ettin_meta.json``, ``stats.json`` and ``tokenizer.json``. Shards are decompressed ``.mds`` files by
default (ModernBERT's no-streaming loader needs the raw file); ``--keep-compressed`` hard-links the
input shards instead when nothing else changes. ``--dtype``/``--columns`` narrow the samples like the
seed's ``decompress.py``. ``OUTPUT/manifest.json`` records per split and dataset the samples and tokens,
the settings of every stage upstream, the tokenizer identity and the shard hashes; then the output is
verified (``ettin_data.verify``) and the problems, if any, are returned in the summary.

Any token layout ``token_input.py`` recognises is taken: ``input_ids`` ndarrays are kept (linked or decompressed
whole), another layout (llm-foundry's ``tokens``, int64 bytes) is converted sample by sample to the ``input_ids``
ndarray the profile writes (``profiles.CONVERTED``, or ``--dtype``); ids and counts are kept exactly. The shards of
a dataset another tool wrote are read in the worker however they are placed, and every id is checked against its
tokenizer (``FinalUnit.limit``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import profiles, progress
from .. import units as U
from ..config import FinalizeConfig, recorded_settings
from ..dataset import MANIFEST, SPLITS, read_meta
from ..errors import ConfigError, InputError
from ..ids import IdOverflow, check_fits, id_bound
from ..jsonio import write_json_atomic
from ..mds import INDEX, ShardWriter, UnitReader, find_units, load_shard, read_index
from ..rules import rules_of, stage_chain
from ..sampling import (
    copy_tokenizer,
    finish_dataset,
    foreign_records,
    link_whole,
    out_name,
    place_unit,
    read_input,
    same_tokenizer,
    write_split_meta,
    written_unit,
)
from ..stage import Finished, Stage
from ..stats import Stats
from ..token_input import TokenInput, check_ids, token_column
from ..verify import UnitCheck, verify, verify_finalized


@dataclass(frozen=True)
class FinalUnit:
    """A finalize task's unit: of ``split``, from the input dataset named ``dataset``; ``rules`` (BOS, EOS,
    chunk size) and ``vocab`` are what its worker verifies (those of the final split); ``limit``: the id range
    every id of another tool's data is checked against as it is read (None: ettin-data's own)."""

    split: str
    dataset: str
    rules: tuple[int | None, int | None, int | None] = (None, None, None)
    vocab: int | None = None
    limit: int | None = None


__all__ = ["Finalize", "dataset_names"]


def dataset_names(cfg: FinalizeConfig) -> list[str]:
    if cfg.name is not None:
        if len(cfg.name) != len(cfg.inputs):
            raise ConfigError(f"--name given {len(cfg.name)} time(s) for {len(cfg.inputs)} INPUT(s); "
                              "give one per INPUT")
        names = list(cfg.name)
    else:
        names = [Path(i).resolve().name for i in cfg.inputs]
    for n in names:
        if not n or n.startswith(".") or "/" in n:
            raise ConfigError(f"dataset name {n!r} is not a plain folder name; pass --name")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"two INPUTs are both named {dup[0]!r}; pass --name once per INPUT to tell them apart")
    return names


def _input_columns(columns: dict[str, str], where: str) -> dict[str, str]:
    """A unit's columns (of its index at ``where``) as finalize reads them: its token column as ``input_ids``, an
    integer ndarray (another layout, ``tokens`` or int64 bytes, is converted to ``profiles.CONVERTED``)."""
    if not columns:
        return {}
    column = token_column(columns, where)
    if column.standard:
        return dict(columns)
    return {**{k: v for k, v in columns.items() if k != column.name}, "input_ids": profiles.CONVERTED}


def _columns(reader: UnitReader, cfg: FinalizeConfig) -> dict[str, str]:
    cols = _input_columns(reader.columns, str(reader.dirname / INDEX))
    if cfg.columns:
        missing = sorted(set(cfg.columns) - set(cols))
        if missing:
            raise InputError(f"{reader.dirname}: no column(s) {', '.join(missing)}; columns: {', '.join(sorted(cols))}")
        cols = {k: v for k, v in cols.items() if k in cfg.columns}
    if cfg.dtype and "input_ids" in cols:
        cols["input_ids"] = f"ndarray:{cfg.dtype}"
    return profiles.output_columns(cols, cfg)


def _rewrite(src: Path, dst: Path, cfg: FinalizeConfig, compression: str | None, check: UnitCheck | None,
             limit: int | None = None) -> Stats:
    """Write the unit anew. When only the compression changes (the default profile on zstd input), each shard's
    sample bytes are written as they are behind a new header (:meth:`ShardWriter.write_shard`, the same files
    as the per-sample path: tested); otherwise every sample is decoded and encoded for its new columns (another
    token layout converted to ``input_ids`` on the way). ``limit``: every id checked (another tool's data)."""
    st = _rewrite_unit(src, dst, cfg, compression, check, limit)
    progress.advance(docs=st["samples"], tokens=st["tokens"])
    return st


def _rewrite_unit(src: Path, dst: Path, cfg: FinalizeConfig, compression: str | None, check: UnitCheck | None,
                  limit: int | None) -> Stats:
    reader = UnitReader(src)
    column = token_column(reader.columns, str(src / INDEX))
    cols = _columns(reader, cfg)
    on_shard = check.add if check is not None else None
    ids: list[Any] = []
    if cols == reader.columns and _whole_shards(cols):
        lengths = [np.zeros(0, np.int64)]
        with ShardWriter(dst, cols, compression=compression) as w:
            for shard in reader.shards():
                lengths.append(column.lengths(shard, limit))
                w.write_shard(shard)
                ids += _ids(shard, len(ids))
                if on_shard is not None:
                    on_shard(shard)  # the samples just written (only the header differs)
        return _unit_files(dst, ids, np.concatenate(lengths), check)
    counts: list[int] = []
    with ShardWriter(dst, cols, compression=compression, on_shard=on_shard) as w:
        for shard in reader.shards():
            for k, s in enumerate(shard.samples()):
                where = f"{shard.path}: sample {k}"
                s["input_ids"] = tok = column.ids(s[column.name], where)  # tokens / int64 bytes: as ids
                if limit is not None:
                    check_ids(tok, limit, where)
                counts.append(len(tok))
                ids.append(s.get("id", f":{len(ids)}"))  # without ids: one document per sample
                try:  # ids are narrowed by the one guarded cast (ids.narrow): never wrapped
                    w.write({c: s[profiles.source_column(c)] for c in cols})
                except IdOverflow as e:
                    raise IdOverflow(f"{where}: {e}; pass a wider --dtype") from None
    return _unit_files(dst, ids, np.asarray(counts, np.int64), check)


def _whole_shards(cols: dict[str, str]) -> bool:
    """Whether ids and token counts can be read off the shard bytes (a ``str`` id, a 1-D typed input_ids)."""
    tok = cols.get("input_ids", "ndarray:uint32").split(":")
    return cols.get("id", "str") == "str" and len(tok) == 2 and tok[0] == "ndarray"


def _ids(shard: Any, first: int) -> list[Any]:
    """The ``id`` of every sample as bytes (without an id column, one document per sample: ``:<index in the unit>``,
    ``first`` being the shard's first): only how many differ is used."""
    if "id" not in shard.entry.column_names:
        return [f":{first + i}" for i in range(shard.entry.samples)]
    pos, size = shard.spans("id")
    data = shard.data
    return [data[a:a + n] for a, n in zip(pos.tolist(), size.tolist(), strict=True)]


def _restat(dst: Path, placed: Stats, check: UnitCheck | None, limit: int | None = None,
            src: Path | None = None) -> Stats:
    """A unit of shards linked at ``dst``: each shard read once (size and hash checked when verifying; with
    ``limit``, every id checked, a bad one named in its input file under ``src``) for finalize's
    ``stats.json``/``token_decile.json`` (those a rewrite writes) and the check."""
    reader = UnitReader(dst)
    column = token_column(reader.columns, str(dst / INDEX)) if reader.index.shards else None
    ids: list[Any] = []
    lengths = [np.zeros(0, np.int64)]
    for entry in reader.index.shards:
        shard = load_shard(dst, entry, check_hash=check is not None)
        named = replace(shard, path=src / shard.path.relative_to(dst)) if src is not None else shard
        lengths.append(column.lengths(named, limit))
        ids += _ids(shard, len(ids))
        if check is not None:
            check.add(shard)
    st = _unit_files(dst, ids, np.concatenate(lengths), check)
    out = Stats()
    for key in ("samples", "tokens"):
        out.add(key, st[key])
    for key in ("units_linked", "bytes_linked", "bytes_copied"):
        out.add(key, placed[key])
    return out


def _unit_files(dst: Path, ids: list[Any], lengths: np.ndarray, check: UnitCheck | None) -> Stats:
    """``stats.json`` and ``token_decile.json`` of a unit written here, its stats, and its check's counts."""
    st = written_unit(dst, ids, lengths)
    if check is not None:
        check.check_stats(dst)
    return st


def _check_plan(cfg: FinalizeConfig, tok: dict[str, Any] | None, tasks: list[U.Task]) -> None:
    """Stop before any work: ``--columns`` naming a column some unit lacks, a ``--dtype`` (or the flat type
    of ``--for numpy``) that cannot hold every id the tokenizer can emit."""
    if cfg.columns:
        for t in tasks:
            shards = read_index(t.source).shards
            have = set(_input_columns(shards[0].columns, str(Path(t.source) / INDEX))) if shards else set()
            missing = sorted(set(cfg.columns) - have)
            if shards and missing:
                raise ConfigError(f"--columns: {t.source} has no column(s) {', '.join(missing)} (columns: "
                                  f"{', '.join(sorted(have))}); choose among those")
    dtype = profiles.flat_dtype(tok, cfg.dtype) if cfg.loader == "numpy" else cfg.dtype
    top = (tok or {}).get("max_id")
    if dtype and isinstance(top, int):
        try:
            check_fits(dtype, top, f"--dtype {dtype}: tokenizer {tok.get('name')!r} can emit id")
        except IdOverflow as e:
            raise ConfigError(f"{e}; choose a wider --dtype") from None


def _shard_hashes(root: Path) -> list[dict[str, Any]]:
    out = []
    for s in read_index(root).shards:
        f = s.stored
        sha1 = f.hashes.get("sha1") or hashlib.sha1((root / f.basename).read_bytes()).hexdigest()
        out.append({"file": f.basename, "bytes": f.bytes, "sha1": sha1, "samples": s.samples})
    return out


def _split_meta(stage: str, cfg: FinalizeConfig, split: str, tok: dict[str, Any] | None,
                read: list[TokenInput]) -> dict[str, Any]:
    """The ``ettin_meta.json`` of one split of the output (``read``: the inputs' split folders as token inputs)."""
    inputs = [Path(i) for i in cfg.inputs]
    meta = {"stage": stage, "split": split, "settings": recorded_settings(cfg), "inputs": list(cfg.inputs),
            "upstream": [m for m in (read_meta(i / split) or read_meta(i) for i in inputs) if m],
            **foreign_records(read)}
    if tok is not None:
        meta["tokenizer"] = tok
    return meta


class Finalize(Stage):
    name = "finalize"
    Config = FinalizeConfig
    lazy_inputs = True
    finish_reads_shards = True

    def plan(self, cfg: FinalizeConfig) -> list[U.Task]:
        read = self._inputs(cfg)
        limits = {str(r.root): r.check_limit for r in read}
        tasks = []
        for src, name in zip(cfg.inputs, dataset_names(cfg), strict=True):
            root = Path(src)
            if not (root / "train").is_dir():
                raise InputError(f"{root}: no train/ folder (expected a `sample split` output with train/ "
                                 "and validation/)")
            for split in SPLITS:
                if not (root / split).is_dir():
                    continue
                for unit in find_units(root / split):
                    path = root / split / unit if unit else root / split
                    tasks.append(U.Task(f"{split}/{name}/{out_name(unit)}", str(path),
                                        (split, name, limits[str(root / split)])))
        tok = same_tokenizer(read)
        _check_plan(cfg, tok, tasks)
        rules = {s: rules_of(_split_meta(self.name, cfg, s, tok, read)) for s in SPLITS}
        return [U.Task(t.name, t.source, FinalUnit(split, name, rules[split], id_bound(tok), limit))
                for t in tasks for split, name, limit in [t.params]]

    def _inputs(self, cfg: FinalizeConfig) -> list[TokenInput]:
        """Every split folder of every INPUT, as a token input (another tool's needs --tokenizer)."""
        return [read_input(Path(i) / s, cfg) for i in cfg.inputs for s in SPLITS if (Path(i) / s).is_dir()]

    def process_unit(self, task: U.Task, cfg: FinalizeConfig, dst: Path) -> Stats:
        src = Path(task.source)
        shards = read_index(src).shards
        compressed = any(s.compression for s in shards)
        same_columns = not cfg.columns or set(cfg.columns) >= set(shards[0].column_names if shards else [])
        as_ids = not shards or token_column(shards[0].columns, str(src / INDEX)).standard  # no conversion needed
        p = task.params
        check = UnitCheck(p.rules, profiles.name(cfg), p.vocab) if cfg.verify and cfg.loader != "numpy" else None
        if as_ids and not cfg.dtype and same_columns and profiles.can_link(cfg, compressed):
            if p.limit is not None:  # another tool's shards: read once here, every id checked, stats files written
                st = _restat(dst, link_whole(src, dst, ()), check, p.limit, src)
                progress.advance(docs=st["samples"], tokens=st["tokens"])
            else:
                st = place_unit(src, dst)
                if profiles.name(cfg) == profiles.DEFAULT and not compressed:
                    st = _restat(dst, st, check)  # the unit decompressing would write: its stats.json too
                elif check is not None:
                    check.add_files(dst)  # linked, not written: read once here, in the worker
        else:
            st = _rewrite(src, dst, cfg, profiles.compression(cfg, compressed), check, p.limit)
        if check is not None and check.problems:
            st.add("problems", check.problems)
        return st

    def finish(self, cfg: FinalizeConfig, stats: Stats, tasks: list[U.Task]) -> Finished:
        out = Path(cfg.output)
        inputs = [Path(i) for i in cfg.inputs]
        names = dataset_names(cfg)
        read = self._inputs(cfg)
        tok = same_tokenizer(read)
        foreign: dict[str, Any] = {}
        for r in read:  # an INPUT another tool wrote: the record of its first split folder
            if r.foreign is not None:
                foreign.setdefault(str(r.root.parent), r.foreign)
        splits: dict[str, Any] = {}
        shards: dict[str, Any] = {}
        for split in SPLITS:
            mine = [t for t in tasks if t.params.split == split]
            if not mine:
                continue
            root = out / split
            totals = finish_dataset(root, [t.name.split("/", 1)[1] for t in mine])
            copy_tokenizer([i / split for i in inputs] + inputs, root, read)
            write_split_meta(root, _split_meta(self.name, cfg, split, tok, read))
            per_ds: dict[str, Any] = {}
            for t in mine:
                d = per_ds.setdefault(t.params.dataset, {"samples": 0, "tokens": 0, "units": 0})
                done = U.read_done(out / t.name)
                d["samples"] += done["samples"]
                d["tokens"] += done["tokens"]
                d["units"] += 1
            shards[split] = profiles.to_numpy(root, tok, cfg.dtype, names) if cfg.loader == "numpy" \
                else _shard_hashes(root)
            splits[split] = {"samples": totals["samples"], "tokens": totals["total_tokens_written"],
                             "shards": len(shards[split]), "bytes": sum(s["bytes"] for s in shards[split]),
                             "datasets": per_ds}
        manifest = {
            "format": "ettin-data manifest v1",
            "profile": profiles.name(cfg),
            "splits": splits,
            "tokenizer": tok,
            "datasets": {n: {"input": str(i), "stages": stage_chain(read_meta(i) or read_meta(i / "train")),
                             **({"foreign": foreign[str(i)]} if str(i) in foreign else {})}
                         for n, i in zip(names, inputs, strict=True)},
            "finalize": recorded_settings(cfg),
            "shards": shards,
        }
        write_json_atomic(out / MANIFEST, manifest)
        summary: dict[str, Any] = {"profile": profiles.name(cfg),
                                   "splits": {s: {k: v for k, v in e.items()} for s, e in splits.items()},
                                   "tokenizer": tok, "bytes_linked": stats["bytes_linked"],
                                   "bytes_written": stats["bytes_written"]}
        if cfg.verify:  # the bytes were checked by the workers as they wrote them (UnitCheck); --for numpy: its files
            summary["problems"] = verify(out) if cfg.loader == "numpy" else verify_finalized(
                out, {s: {t.name.split("/", 1)[1]: U.read_done(out / t.name) for t in tasks if t.params.split == s}
                      for s in SPLITS}, {t.params.split: t.params.rules for t in tasks},
                profiles.name(cfg), id_bound(tok))
            summary["verified"] = not summary["problems"]
        summary["warnings"] = profiles.loader_warnings(out)
        return Finished(summary, {"tokenizer": tok, **foreign_records(read)})

    def render(self, summary: dict[str, Any]) -> None:
        from ..report import human_bytes, print_table

        tok = summary.get("tokenizer") or {}
        rows: list[tuple[str, Any]] = [("output", summary.get("output")), ("for", summary.get("profile")),
                                       ("tokenizer", f"{tok.get('name')} (sha256 {str(tok.get('sha256'))[:12]}, "
                                                     f"vocab {tok.get('vocab_size')})" if tok else "unknown")]
        for split, e in (summary.get("splits") or {}).items():
            rows.append((split, f"{e['samples']:,} samples, {e['tokens']:,} tokens, {e['shards']} shards, "
                                f"{human_bytes(e['bytes'])}"))
            for name, d in e["datasets"].items():
                rows.append((f"  {name}", f"{d['samples']:,} samples, {d['tokens']:,} tokens, {d['units']} units"))
        if "verified" in summary:
            rows.append(("verified", "ok" if summary["verified"] else f"{len(summary['problems'])} problem(s)"))
        for p in summary.get("problems") or []:
            rows.append(("problem", p))
        rows += [("warning", w) for w in summary.get("warnings") or []]
        rows.append(("manifest", f"{summary.get('output')}/{MANIFEST}"))
        print_table("ettin-data finalize: manifest summary", rows)
