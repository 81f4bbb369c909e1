"""``sample context``: random chunks until N tokens, for context-extension training (the seed's
``sample_for_context_extension``).

Candidates are the chunks of at least ``--min-length`` tokens. Each unit's ``token_decile.json``
(chunk indices per ``len // 1000`` bucket) tells which units can hold such chunks, so units without a
long enough bucket are never read. The candidates are drawn in one seeded random order until their
tokens reach N: the output lands within one chunk of N (above). A unit whose every chunk is drawn is
hard-linked; other units get new shards holding the drawn chunks (in unit order).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import units as U
from ..config import ContextConfig
from ..dataset import DECILE_FILE
from ..errors import InputError
from ..jsonio import write_json_atomic
from ..mds import find_units, read_index
from ..sampling import (
    SUMMARY_FILE,
    SamplingStage,
    out_name,
    read_input,
    rng_for,
    sample_unit,
    single_input,
    unit_lengths,
)
from ..stage import Finished
from ..stats import Stats

__all__ = ["Context"]


@dataclass(frozen=True)
class Draw:
    """A context task's unit: the samples kept (None: all of them, linked) and, for another tool's data, the id
    range its ids are checked against as they are read."""

    keep: tuple[int, ...] | None
    limit: int | None = None


def _may_hold(path: Path, min_length: int) -> bool:
    """False when the unit's length buckets show no chunk of ``min_length`` tokens or more."""
    f = path / DECILE_FILE
    if min_length <= 0 or not f.is_file():
        return True
    try:
        buckets = json.loads(f.read_text())
        return any(int(b) >= min_length // 1000 and idx for b, idx in buckets.items())
    except (json.JSONDecodeError, ValueError, AttributeError):
        return True


class Context(SamplingStage):
    name = "sample context"
    Config = ContextConfig

    def plan(self, cfg: ContextConfig) -> list[U.Task]:
        root = single_input(cfg)
        names = find_units(root)
        if not names:
            raise InputError(f"{root}: no MDS units found (expected a chunk output)")
        limit = read_input(root, cfg).check_limit
        unit_of, index_of, length_of, sizes = [], [], [], []
        for k, name in enumerate(names):
            path = root / name if name else root
            sizes.append(read_index(path).samples)
            if limit is None and not _may_hold(path, cfg.min_length):  # another tool's token_decile.json: not ours
                continue
            lengths = unit_lengths(path, limit)
            idx = np.flatnonzero(lengths >= max(1, cfg.min_length))
            unit_of.append(np.full(len(idx), k, np.int64))
            index_of.append(idx)
            length_of.append(lengths[idx])
        units_a = np.concatenate(unit_of) if unit_of else np.zeros(0, np.int64)
        index_a = np.concatenate(index_of) if index_of else np.zeros(0, np.int64)
        length_a = np.concatenate(length_of) if length_of else np.zeros(0, np.int64)
        available = int(length_a.sum())
        if available < cfg.num_tokens:
            raise InputError(
                f"{root}: chunks of at least {cfg.min_length} tokens hold {available:,} tokens "
                f"({len(length_a):,} chunks), fewer than --num-tokens {cfg.num_tokens:,}; lower --num-tokens or "
                "--min-length"
            )
        order = rng_for(cfg.seed, "context").permutation(len(length_a))
        m = int(np.searchsorted(np.cumsum(length_a[order]), cfg.num_tokens)) + 1
        chosen = order[:m]
        tasks = []
        for k in np.unique(units_a[chosen]).tolist():
            idx = np.sort(index_a[chosen][units_a[chosen] == k])
            whole = len(idx) == sizes[k]
            tasks.append(U.Task(out_name(names[k]), str(root / names[k] if names[k] else root),
                                Draw(None if whole else tuple(idx.tolist()), limit)))
        return tasks

    def process_unit(self, task: U.Task, cfg: ContextConfig, dst: Path) -> Stats:
        d: Draw = task.params
        return sample_unit(task.source, dst, None if d.keep is None else np.asarray(d.keep), limit=d.limit)

    def finish(self, cfg: ContextConfig, stats: Stats, tasks: list[U.Task]) -> Finished:
        out, totals, inp = self.finish_one(cfg, tasks)
        summary = {
            "num_tokens": cfg.num_tokens,
            "achieved_tokens": totals["total_tokens_written"],
            "difference": totals["total_tokens_written"] - cfg.num_tokens,
            "min_length": cfg.min_length,
            "samples": totals["samples"],
            "units": len(tasks),
            "bytes_linked": stats["bytes_linked"],
            "bytes_written": stats["bytes_written"],
        }
        write_json_atomic(out / SUMMARY_FILE, {**summary, "seed": cfg.seed})
        return self.finished(summary, inp.tokenizer, [inp])
