"""``sample budget``: whole units at random until a token target (the seed's ``sample_too_large_down``
and ``sample_down_or_up_to_meet``).

Units are drawn in a seeded random order until their tokens reach the target, so the output lands
within one unit of it (above). With ``--upsample``, when every unit has been drawn and the target is
not met, another seeded pass over the units begins; a unit drawn in pass N > 0 is written as
``<unit>-repN`` and recorded in ``sampling_summary.json``. ``--exact`` keeps only the first samples of
the last unit, landing within one sample of the target. Whole units are hard-linked: selecting or
repeating a unit adds no shard bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import units as U
from ..config import BudgetConfig
from ..errors import InputError
from ..jsonio import write_json_atomic
from ..sampling import (
    SUMMARY_FILE,
    SamplingStage,
    UnitInfo,
    dataset_units,
    out_name,
    rng_for,
    sample_unit,
    unit_lengths,
)
from ..stage import Finished
from ..stats import Stats

__all__ = ["Budget", "Pick", "choose_units", "pick_tasks"]


@dataclass(frozen=True)
class Pick:
    unit: UnitInfo
    repeat: int
    take: int | None  # samples kept from the start of the unit (None: the whole unit)
    tokens: int


def choose_units(units: list[UnitInfo], target: int, rng: np.random.Generator, upsample: bool, exact: bool,
                 where: str = "") -> list[Pick]:
    """Seeded draw of whole units until ``target`` tokens (see the module docstring)."""
    available = sum(u.tokens for u in units)
    if available <= 0:
        raise InputError(f"{where}: the input holds no tokens")
    if available < target and not upsample:
        raise InputError(
            f"{where}: the input holds {available:,} tokens, fewer than the target {target:,}; "
            "pass --upsample to repeat units, or lower the target"
        )
    picks: list[Pick] = []
    total = 0
    repeat = 0
    while total < target:
        for i in rng.permutation(len(units)).tolist():
            if total >= target:
                break
            u = units[i]
            if u.tokens <= 0:
                continue
            picks.append(Pick(u, repeat, None, u.tokens))
            total += u.tokens
        repeat += 1
    if exact and total > target:
        last = picks[-1]
        need = target - (total - last.tokens)
        lengths = unit_lengths(last.unit.path, last.unit.limit)
        take = int(np.searchsorted(np.cumsum(lengths), need)) + 1  # first prefix reaching `need`
        picks[-1] = Pick(last.unit, last.repeat, take, int(lengths[:take].sum()))
    return picks


def pick_tasks(picks: list[Pick], prefix: str = "") -> list[U.Task]:
    return [U.Task(prefix + out_name(p.unit.name, p.repeat), p.unit.path, p) for p in picks]


def picks_summary(tasks: list[U.Task], out: Path) -> list[dict[str, Any]]:
    rows = []
    for t in tasks:
        p: Pick = t.params
        done = U.read_done(out / t.name)
        rows.append({"unit": p.unit.name, "output": t.name, "repeat": p.repeat, "trimmed_to_samples": p.take,
                     "samples": done["samples"], "tokens": done["tokens"]})
    return rows


class Budget(SamplingStage):
    name = "sample budget"
    Config = BudgetConfig

    def plan(self, cfg: BudgetConfig) -> list[U.Task]:
        root, inp = self.one_input(cfg)
        picks = choose_units(dataset_units(root, inp.check_limit), cfg.target_tokens, rng_for(cfg.seed, "budget"),
                             cfg.upsample, cfg.exact, str(root))
        return pick_tasks(picks)

    def process_unit(self, task: U.Task, cfg: Any, dst: Path) -> Stats:
        p: Pick = task.params
        return sample_unit(task.source, dst, None if p.take is None else range(p.take), p.tokens, p.unit.limit)

    def finish(self, cfg: BudgetConfig, stats: Stats, tasks: list[U.Task]) -> Finished:
        out, totals, inp = self.finish_one(cfg, tasks)
        available = sum(u.tokens for u in dataset_units(cfg.inputs[0], inp.check_limit))
        rows = picks_summary(tasks, out)
        achieved = totals["total_tokens_written"]
        summary = {
            "target_tokens": cfg.target_tokens,
            "achieved_tokens": achieved,
            "difference": achieved - cfg.target_tokens,
            "input_tokens": available,
            "factor": round(achieved / available, 6) if available else 0.0,
            "samples": totals["samples"],
            "units_chosen": len(rows),
            "repeats": sum(1 for r in rows if r["repeat"]),
            "bytes_linked": stats["bytes_linked"],
            "bytes_written": stats["bytes_written"],
        }
        write_json_atomic(out / SUMMARY_FILE, {**summary, "seed": cfg.seed, "units": rows})
        return self.finished(summary, inp.tokenizer, [inp])
