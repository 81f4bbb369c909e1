"""Summable counters and length histograms, percentiles, and their JSON form.

Every stage returns a :class:`Stats` per unit; stats add up (``Stats.total(stats)``, or ``+``), so per-unit,
per-rank and per-dataset numbers are computed the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Stats", "PERCENTILES", "percentiles"]

PERCENTILES = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 100)


@dataclass
class Stats:
    """Counters (``documents``, ``tokens_written``, ``skipped.empty`` ...) plus a histogram of written
    sample lengths (length -> count)."""

    counts: Counter = field(default_factory=Counter)
    lengths: Counter = field(default_factory=Counter)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += int(n)

    def add_lengths(self, lengths: Iterable[int] | np.ndarray) -> None:
        arr = np.asarray(lengths, dtype=np.int64)
        if arr.size:
            values, counts = np.unique(arr, return_counts=True)
            for v, c in zip(values.tolist(), counts.tolist(), strict=True):
                self.lengths[v] += c

    def __getitem__(self, key: str) -> int:
        return self.counts.get(key, 0)

    def __add__(self, other: Stats) -> Stats:
        if not isinstance(other, Stats):
            return NotImplemented
        return Stats(self.counts + other.counts, self.lengths + other.lengths)

    @classmethod
    def total(cls, parts: Iterable[Stats]) -> Stats:
        """``sum(parts, Stats())`` in one pass (``+`` copies both histograms: quadratic over many units)."""
        counts: Counter = Counter()
        lengths: Counter = Counter()
        for p in parts:
            counts.update(p.counts)
            lengths.update(p.lengths)
        return cls(+counts, +lengths)  # unary plus drops what is not positive, as ``+`` does

    def __radd__(self, other: Any) -> Stats:
        if other == 0:  # sum() starts from 0
            return Stats(Counter(self.counts), Counter(self.lengths))
        return self.__add__(other)

    @property
    def samples(self) -> int:
        return sum(self.lengths.values())

    @property
    def max_length(self) -> int | None:
        return max(self.lengths) if self.lengths else None

    def percentiles(self, qs: Iterable[int] = PERCENTILES) -> dict[str, int]:
        return percentiles(self.lengths, qs)

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": dict(sorted(self.counts.items())),
            "lengths": {str(k): v for k, v in sorted(self.lengths.items())},
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Stats:
        return cls(
            Counter({k: int(v) for k, v in obj.get("counts", {}).items()}),
            Counter({int(k): int(v) for k, v in obj.get("lengths", {}).items()}),
        )


def percentiles(hist: Mapping[int, int], qs: Iterable[int] = PERCENTILES) -> dict[str, int]:
    """Nearest-rank percentiles of a length histogram: the smallest length with at least q% at or below."""
    if not hist:
        return {}
    keys = np.array(sorted(hist), dtype=np.int64)
    cum = np.cumsum([hist[k] for k in keys])
    total = cum[-1]
    out = {}
    for q in qs:
        rank = max(1, int(np.ceil(q / 100 * total)))
        out[str(q)] = int(keys[np.searchsorted(cum, rank)])
    return out
