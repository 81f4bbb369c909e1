"""``stats``: describe any MDS folder (ours or another tool's): samples, units, shards, bytes, columns,
and for token data the token count and length percentiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..config import StatsConfig
from ..dataset import SPLITS
from ..errors import InputError
from ..mds import INDEX, UnitReader, find_units
from ..stage import Command
from ..stats import Stats

__all__ = ["Describe", "describe"]


def _readers(path: Path) -> tuple[list[UnitReader], int]:
    """Readers covering the dataset once: the root index if there is one, else every unit."""
    if (path / INDEX).is_file():
        units = find_units(path) if path.is_dir() else []
        return [UnitReader(path)], max(1, len(units))
    units = find_units(path)
    if not units:
        raise InputError(f"{path}: no index.json here or below (not an MDS dataset)")
    return [UnitReader(path / u) for u in units], len(units)


def describe(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    from ..profiles import describe_flat, is_flat

    if is_flat(path) or (not (path / INDEX).is_file() and any(is_flat(path / s) for s in SPLITS)):
        return describe_flat(path)  # finalize --for numpy
    readers, n_units = _readers(path)
    shards = [s for r in readers for s in r.index.shards]
    columns: dict[str, str] = {}
    for r in readers:
        columns.update(r.columns)
    nbytes = 0
    for r in readers:
        for s in r.index.shards:
            for f in s.present(r.dirname):
                nbytes += (r.dirname / f.basename).stat().st_size
    st = Stats()
    token_col = None
    if any(c in columns for c in ("input_ids", "tokens")):
        from ..token_input import token_column

        try:  # int64 bytes (ModernBERT streaming, llm-foundry) hold len / 8 ids
            token_col = token_column(columns, str(path))
        except InputError:  # a column of that name that holds no ids: described as other data
            token_col = None
    text_col = "text" if "text" in columns else None
    for r in readers:
        if token_col:
            st.add_lengths([len(token_col.ids(s[token_col.name], str(r.dirname)))
                            for s in r.iter_samples([token_col.name])])
        elif text_col:
            st.add_lengths([len(s[text_col]) for s in r.iter_samples([text_col])])
    tokens = int(sum(k * v for k, v in st.lengths.items())) if token_col else None
    return {
        "path": str(path),
        "samples": sum(s.samples for s in shards),
        "units": n_units,
        "shards": len(shards),
        "bytes": nbytes,
        "columns": columns,
        "tokens": tokens,
        "length_unit": "tokens" if token_col else ("characters" if text_col else None),
        "max_length": st.max_length,
        "mean_length": round(float(np.average(list(st.lengths), weights=list(st.lengths.values()))), 2)
        if st.lengths else None,
        "length_percentiles": st.percentiles(),
        "_hist": st.lengths,
    }


class Describe(Command):
    name = "stats"
    Config = StatsConfig

    def run(self, cfg: StatsConfig) -> dict[str, Any]:
        if cfg.verify:  # problems -> a summary with `problems` (the CLI exits 1); see verify.py
            from ..verify import verify_paths

            problems = verify_paths(cfg.inputs)
            if problems:
                return {"path": ", ".join(cfg.inputs), "problems": problems, "length_percentiles": {}}
        datasets = [dict(describe(p), **({"verified": "ok"} if cfg.verify else {})) for p in cfg.inputs]
        if cfg.verify:  # columns a known loader would misread: shown, but not a failed verification
            from ..profiles import loader_warnings

            for d, p in zip(datasets, cfg.inputs, strict=True):
                if warnings := loader_warnings(p):
                    d["warnings"] = warnings
        hists = [d.pop("_hist") for d in datasets]
        hist = Stats.total(Stats(lengths=h) for h in hists)
        if len(datasets) == 1:
            summary = dict(datasets[0])
        else:
            tokens = [d["tokens"] for d in datasets]
            summary = {
                "samples": sum(d["samples"] for d in datasets),
                "units": sum(d["units"] for d in datasets),
                "shards": sum(d["shards"] for d in datasets),
                "bytes": sum(d["bytes"] for d in datasets),
                "tokens": None if any(t is None for t in tokens) else sum(tokens),
                "max_length": hist.max_length,
                "length_percentiles": hist.percentiles(),
                "datasets": datasets,
            }
            if any(d.get("warnings") for d in datasets):
                summary["warnings"] = [w for d in datasets for w in d.get("warnings") or []]
        if cfg.plot:
            from ..plot import plot_stats

            summary["plot"] = plot_stats(cfg.plot, datasets, hists)
        if cfg.show:
            from .export import show_samples

            summary["shown"] = {p: show_samples(p, cfg.show, cfg.tokenizer) for p in cfg.inputs}
        return summary

    def render(self, summary: dict[str, Any]) -> None:
        from ..report import human_bytes, print_table

        for d in summary.get("datasets", [summary]):
            rows = [(k, human_bytes(v) if k == "bytes" else v) for k, v in d.items()
                    if k not in ("length_percentiles", "shown", "warnings")]
            rows += [("warning", w) for w in d.get("warnings") or []]
            rows.append(("length percentiles", " ".join(f"p{q}={v:,}" for q, v in d["length_percentiles"].items())))
            print_table(f"stats: {d['path']}", rows)
        if "datasets" in summary:
            print_table("total", [(k, v) for k, v in summary.items() if k not in ("datasets", "shown", "warnings")])
        if summary.get("shown"):
            from ..report import print_samples

            print_samples(summary["shown"])
