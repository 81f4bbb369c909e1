"""finalize: ``sample split`` outputs -> the training layout Ettin/ModernBERT configs read.

``OUTPUT/train/<name>/<unit>`` and ``OUTPUT/validation/<name>/<unit>`` (name = INPUT folder name, or
``--name``), one root ``index.json`` per split over every dataset (nested basenames), each split with
``ettin_meta.json``, ``stats.json`` and ``tokenizer.json``. Shards are decompressed ``.mds`` files by
default (ModernBERT's no-streaming loader needs the raw file); ``--keep-compressed`` hard-links the
input shards instead when nothing else changes. ``--dtype``/``--columns`` narrow the samples like the
seed's ``decompress.py``. ``OUTPUT/manifest.json`` records per split and dataset the samples and tokens,
the settings of every stage upstream, the tokenizer identity and the shard hashes; then the output is
verified (``ettin_data.verify``) and the problems, if any, are returned in the summary.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import profiles
from .. import units as U
from ..config import FinalizeConfig, recorded_settings
from ..dataset import read_meta
from ..errors import ConfigError, InputError
from ..ids import IdOverflow, check_fits
from ..mds import ShardWriter, UnitReader, find_units, read_index, write_json_atomic
from ..sampling import (
    UNIT_FILES,
    copy_tokenizer,
    finish_dataset,
    foreign_records,
    out_name,
    place_unit,
    read_input,
    same_tokenizer,
    unit_stats,
    write_split_meta,
)
from ..stage import Finished, Stage
from ..stats import Stats
from ..token_input import TokenInput
from ..verify import MANIFEST, stage_chain, verify

SPLITS = ("train", "validation")


@dataclass(frozen=True)
class FinalUnit:
    """A finalize task's unit: of ``split``, from the input dataset named ``dataset``."""

    split: str
    dataset: str


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


def _columns(reader: UnitReader, cfg: FinalizeConfig) -> dict[str, str]:
    cols = dict(reader.columns)
    if cfg.columns:
        missing = sorted(set(cfg.columns) - set(cols))
        if missing:
            raise InputError(f"{reader.dirname}: no column(s) {', '.join(missing)}; columns: {', '.join(sorted(cols))}")
        cols = {k: v for k, v in cols.items() if k in cfg.columns}
    if cfg.dtype and "input_ids" in cols:
        cols["input_ids"] = f"ndarray:{cfg.dtype}"
    return profiles.output_columns(cols, cfg)


def _rewrite(src: Path, dst: Path, cfg: FinalizeConfig, compression: str | None) -> Stats:
    reader = UnitReader(src)
    cols = _columns(reader, cfg)
    ids, lengths = [], []
    with ShardWriter(dst, cols, compression=compression) as w:
        for i, s in enumerate(reader.iter_samples()):
            tok = s.get("input_ids")
            if tok is not None:
                lengths.append(len(tok))
            ids.append(s.get("id", ""))
            try:  # ids are narrowed by the one guarded cast (ids.narrow): never wrapped
                w.write({k: s[profiles.source_column(k)] for k in cols})
            except IdOverflow as e:
                raise IdOverflow(f"{src}: sample {i}: {e}; pass a wider --dtype") from None
    stats, deciles = unit_stats(ids, np.asarray(lengths, np.int64))
    write_json_atomic(dst / UNIT_FILES[0], stats)
    write_json_atomic(dst / UNIT_FILES[1], deciles)
    st = Stats()
    st.add("samples", len(ids))
    st.add("tokens", stats["total_tokens_written"])
    st.add("units_written")
    st.add("bytes_written", sum(p.stat().st_size for p in dst.glob("shard.*")))
    return st


def _check_plan(cfg: FinalizeConfig, tok: dict[str, Any] | None, tasks: list[U.Task]) -> None:
    """Stop before any work: ``--columns`` naming a column some unit lacks, a ``--dtype`` (or the flat type
    of ``--for numpy``) that cannot hold every id the tokenizer can emit."""
    if cfg.columns:
        for t in tasks:
            shards = read_index(t.source)["shards"]
            have = set(shards[0]["column_names"]) if shards else set()
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
    for s in read_index(root)["shards"]:
        info = s["zip_data"] if s.get("zip_data") else s["raw_data"]
        sha1 = (info.get("hashes") or {}).get("sha1") \
            or hashlib.sha1((root / info["basename"]).read_bytes()).hexdigest()
        out.append({"file": info["basename"], "bytes": info["bytes"], "sha1": sha1, "samples": s["samples"]})
    return out


class Finalize(Stage):
    name = "finalize"
    Config = FinalizeConfig
    lazy_inputs = True
    finish_reads_shards = True

    def plan(self, cfg: FinalizeConfig) -> list[U.Task]:
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
                    tasks.append(U.Task(f"{split}/{name}/{out_name(unit)}", str(path), FinalUnit(split, name)))
        tok = same_tokenizer(self._inputs(cfg))
        _check_plan(cfg, tok, tasks)
        return tasks

    def _inputs(self, cfg: FinalizeConfig) -> list[TokenInput]:
        """Every split folder of every INPUT, as a token input (another tool's needs --tokenizer)."""
        return [read_input(Path(i) / s, cfg, self.name) for i in cfg.inputs for s in SPLITS if (Path(i) / s).is_dir()]

    def process_unit(self, task: U.Task, cfg: FinalizeConfig, dst: Path) -> Stats:
        src = Path(task.source)
        index = read_index(src)
        compressed = any(s.get("compression") for s in index["shards"])
        same_columns = not cfg.columns or set(cfg.columns) >= set(index["shards"][0]["column_names"] if index["shards"]
                                                                      else [])
        if not cfg.dtype and same_columns and profiles.can_link(cfg, compressed):
            return place_unit(src, dst)
        return _rewrite(src, dst, cfg, profiles.compression(cfg, compressed))

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
            meta = {"stage": self.name, "split": split, "settings": recorded_settings(cfg), "inputs": list(cfg.inputs),
                    "upstream": [m for m in (read_meta(i / split) or read_meta(i) for i in inputs) if m],
                    **foreign_records(read)}
            if tok is not None:
                meta["tokenizer"] = tok
            write_split_meta(root, meta)
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
        if cfg.verify:
            summary["problems"] = verify(out)
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
