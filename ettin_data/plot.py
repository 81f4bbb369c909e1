"""``stats --plot FILE.png``: the sample-length histogram (and tokens per dataset when there are several),
drawn with matplotlib's Agg backend. matplotlib is imported only here, only when a plot is asked for."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = ["plot_stats", "histogram_bins", "labels", "tokens_by_group"]


def histogram_bins(lengths: Mapping[int, int], bins: int = 50,
                   edges: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(edges, counts) of a length histogram given as {length: count}; integer-aligned edges (or ``edges``)."""
    if not lengths:
        return (np.array([0.0, 1.0]) if edges is None else edges), np.zeros(1 if edges is None else len(edges) - 1,
                                                                              np.int64)
    values = np.fromiter(lengths.keys(), np.int64)
    weights = np.fromiter(lengths.values(), np.int64)
    if edges is None:
        lo, hi = int(values.min()), int(values.max()) + 1
        step = max(1, int(np.ceil((hi - lo) / bins)))
        edges = np.arange(lo, hi + step, step, dtype=np.float64)
    counts, _ = np.histogram(values, bins=edges, weights=weights)
    return edges, counts.astype(np.int64)


def labels(paths: Sequence[str]) -> list[str]:
    """Short names that tell paths apart: the fewest trailing path parts that are unique."""
    parts = [Path(p).parts or (p,) for p in paths]
    for k in range(1, max(len(x) for x in parts) + 1):
        names = ["/".join(x[-k:]) for x in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def tokens_by_group(path: str | Path) -> dict[str, int]:
    """Tokens per top-level folder of a token dataset whose units sit in several such folders."""
    from .mds import UnitReader, find_units

    path = Path(path)
    units = find_units(path) if path.is_dir() else []
    out: dict[str, int] = {}
    for u in units:
        group = u.split("/", 1)[0] if "/" in u else ""
        r = UnitReader(path / u)
        col = "len" if "len" in r.columns else "input_ids"
        n = sum(s[col] if col == "len" else len(s[col]) for s in r.iter_samples([col]))
        out[group] = out.get(group, 0) + int(n)
    return out if len(out) > 1 and "" not in out else {}


def plot_stats(path: str | Path, datasets: Sequence[dict[str, Any]], hists: Sequence[Mapping[int, int]]) -> str:
    """Draw the length histogram of each dataset (overlaid) and, for several token datasets, a bar chart
    of tokens per dataset. Returns the PNG path."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError as e:  # pragma: no cover - matplotlib comes with streaming
        raise ConfigError("--plot needs matplotlib (pip install 'ettin-data[plot]')") from e
    path = Path(path)
    unit = next((d.get("length_unit") for d in datasets if d.get("length_unit")), None) or "length"
    several = len(datasets) > 1
    names = labels([d["path"] for d in datasets])
    if several:
        tokens = [d.get("tokens") for d in datasets]
    else:  # one PATH holding several datasets (e.g. a finalize split, a multi-source folder)
        groups = tokens_by_group(datasets[0]["path"]) if datasets[0].get("tokens") is not None else {}
        names, tokens = list(groups), list(groups.values())
    with_bars = len(tokens) > 1 and all(t is not None for t in tokens)
    fig, axes = plt.subplots(1, 2 if with_bars else 1, figsize=(13 if with_bars else 8, 4.8), squeeze=False)
    ax = axes[0][0]
    combined: dict[int, int] = {}
    for h in hists:
        for k, v in h.items():
            combined[k] = combined.get(k, 0) + v
    edges, _ = histogram_bins(combined)  # the same bins for every dataset
    for name, h in zip(labels([d["path"] for d in datasets]), hists, strict=True):
        _, counts = histogram_bins(h, edges=edges)
        ax.stairs(counts, edges, fill=True, alpha=0.45 if several else 0.8,
                  label=f"{name} ({sum(h.values()):,} samples)")
    ax.set_xlabel(f"sample length ({unit})")
    ax.set_ylabel("samples")
    ax.set_title("length histogram")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    if with_bars:
        bx = axes[0][1]
        bars = bx.bar(range(len(names)), tokens, color="tab:orange")
        bx.bar_label(bars, labels=[f"{t:,}" for t in tokens], fontsize="small")
        bx.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize="small")
        bx.set_ylabel("tokens")
        bx.set_title("tokens per dataset")
        bx.grid(alpha=0.3, axis="y")
        bx.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return str(path)
