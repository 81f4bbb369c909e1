"""One task in a worker: the framework's side of a unit's life (the stage's side is ``stage.py``).

:class:`UnitJob` is what the executors call for each task (picklable: the stage object and nothing else). It
hands the stage an empty temporary folder per unit (``units.atomic_dir``: ``.<name>.partial``), renames it into
place when the stage returns, and writes the unit's ``.done`` (its stats, checked against its index) last.
For a ``many_units`` stage it drives the stage's generator: a unit already finished is skipped (its recorded
stats are sent back instead; ``--overwrite`` redoes it), and once the task's units are written, the task's own
folder is marked done with the totals the stage returns. Stage modules never call ``atomic_dir`` or
``mark_done`` themselves (``tests/test_design.py`` holds that).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import units as U
from .stage import Stage, Unit
from .stats import Stats

__all__ = ["UnitJob"]


@dataclass(frozen=True)
class UnitJob:
    """``job(task, cfg) -> Stats``: run ``stage`` on one task and own the life of the units it writes."""

    stage: Stage

    def __call__(self, task: U.Task, cfg: Any) -> Stats:
        roots = {o: Path(p) for o, p in self.stage.outputs(cfg).items()}
        if not self.stage.many_units:
            return write_units(roots, Unit(task.name, lambda d: {"output": self.stage.process_unit(
                task, cfg, d["output"])}), overwrite=True)["output"]
        for root in roots.values():  # the task's own folder holds its marker, even with no unit in it
            (root / task.name).mkdir(parents=True, exist_ok=True)
        gen = self.stage.units(task, cfg)
        try:
            unit = next(gen)
            while True:
                unit = gen.send(write_units(roots, unit, overwrite=cfg.overwrite))
        except StopIteration as end:
            totals: dict[str, Stats] = end.value
        for o, st in totals.items():
            U.mark_done(roots[o] / task.name, st)
        return totals["output"]


def write_units(roots: dict[str, Path], unit: Unit, *, overwrite: bool) -> dict[str, Stats]:
    """Write ``unit`` into each of its outputs atomically and mark each done; a unit done in every output is
    skipped unless ``overwrite`` (its recorded stats are returned)."""
    finals = {o: roots[o] / unit.name for o in unit.outputs}
    if not overwrite and all(U.is_done(f) for f in finals.values()):
        return {o: U.read_done(f) for o, f in finals.items()}
    with ExitStack() as stack:  # every folder is removed if writing any of them fails
        tmps = {o: stack.enter_context(U.atomic_dir(f)) for o, f in finals.items()}
        stats = unit.write(tmps)
    for o, f in finals.items():
        U.mark_done(f, stats[o])
    return stats
