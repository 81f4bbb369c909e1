"""``sample split``: hold out whole documents as a validation split, touching as few units as possible.

Method (deterministic for a seed, whatever the worker count; planning reads O(units), not O(chunks)):
units are ordered by the stable hash ``blake2b(seed, unit name)``; validation takes whole units in that
order while they fit under ``F x total tokens``, and the first unit that does not fit is *cut*: its
documents are ordered by ``blake2b(seed, id)`` and the prefix whose tokens bring validation nearest to the
target goes to validation (one hash threshold). When that unit's documents are too coarse to land within
``CUT_TOLERANCE`` of the target (a very large document), it stays in train and the next unit is tried
(at most ``CUT_TRIES`` units; the best cut found is used). So the split is within one document of F, every
document lands wholly in one split (documents never span units), and only the cut unit is rewritten:
bytes written <= one unit; every other unit is hard-linked.

Output: ``OUTPUT/train/<unit>`` and ``OUTPUT/validation/<unit>``, each split with its own root
``index.json``, ``stats.json``, ``ettin_meta.json`` (tokenizer copied) and ``tokenizer.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import units as U
from ..config import SplitConfig, recorded_settings
from ..dataset import SPLITS, read_meta
from ..errors import InputError
from ..jsonio import write_json_atomic
from ..sampling import (
    SamplingStage,
    UnitInfo,
    copy_tokenizer,
    dataset_units,
    doc_hash,
    finish_dataset,
    foreign_records,
    out_name,
    place_unit,
    read_input,
    unit_ids_lengths,
    write_split_meta,
    write_subset,
)
from ..stage import Finished
from ..stats import Stats

__all__ = ["Split", "best_cut", "SPLITS"]


@dataclass(frozen=True)
class SplitPart:
    """Where a split task's unit goes: wholly to ``split``, or (``whole`` False) the documents of the cut unit
    on ``split``'s side of ``threshold``; ``limit``: the id range of another tool's data (``UnitInfo.limit``)."""

    split: str
    threshold: int | None  # document hash threshold (see best_cut)
    whole: bool
    limit: int | None = None


CUT_TOLERANCE = 0.05  # a cut landing within 5% of the target is taken at once
CUT_TRIES = 8  # units tried for the cut before the best one is used


def _hashes(ids: list[str], seed: int) -> np.ndarray:
    return np.fromiter((doc_hash(seed, i) for i in ids), np.uint64, len(ids))


@dataclass(frozen=True)
class Cut:
    """The best document prefix of one unit for a token target: validation = documents with hash <= ``thr``
    (``thr`` None: no document), holding ``tokens`` tokens; ``first`` is the first drawn document's size."""

    thr: int | None
    tokens: int
    first: int


def best_cut(hashes: np.ndarray, lengths: np.ndarray, want: float) -> Cut:
    """The prefix of a unit's documents (ordered by hash; ``hashes``/``lengths`` are per chunk, chunks sharing a
    hash are one document) whose token count is nearest to ``want``."""
    docs, inverse = np.unique(hashes, return_inverse=True)
    doc_tokens = np.zeros(len(docs), np.int64)
    np.add.at(doc_tokens, inverse, lengths.astype(np.int64))
    cum = np.concatenate([[0], np.cumsum(doc_tokens)])
    k = int(np.argmin(np.abs(cum - want)))
    return Cut(int(docs[k - 1]) if k else None, int(cum[k]), int(doc_tokens[0]) if len(docs) else 0)


class Split(SamplingStage):
    name = "sample split"
    Config = SplitConfig

    def plan(self, cfg: SplitConfig) -> list[U.Task]:
        root, inp = self.one_input(cfg)
        units = dataset_units(root, inp.check_limit)
        total = sum(u.tokens for u in units)
        if total == 0:
            raise InputError(f"{root}: the input has no samples; nothing to split")
        target = cfg.validation_fraction * total
        whole: set[str] = set()  # units wholly in validation
        taken = 0
        best: tuple[float, UnitInfo, Cut] | None = None
        attempts = 0
        for u in sorted(units, key=lambda u: (doc_hash(cfg.seed, "unit\x00" + u.name), u.name)):
            if best is None and taken + u.tokens <= target:
                whole.add(u.name)
                taken += u.tokens
                continue
            ids, lengths = unit_ids_lengths(Path(u.path), limit=u.limit)
            cut = best_cut(_hashes(ids, cfg.seed), lengths, target - taken)
            err = abs(taken + cut.tokens - target)
            attempts += 1
            if best is None or err < best[0]:
                best = (err, u, cut)
            if err <= CUT_TOLERANCE * target or attempts >= CUT_TRIES:
                break
        cut_unit, cut = (best[1], best[2]) if best else (None, Cut(None, 0, 0))
        val_tokens = taken + cut.tokens
        if val_tokens == 0:
            raise InputError(
                f"{root}: the validation split would be empty: {cfg.validation_fraction} of {total:,} tokens is "
                f"{target:,.0f}, nearer to 0 than to the first drawn document ({cut.first:,} tokens); raise "
                "--validation-fraction or give more data"
            )
        if val_tokens == total:
            raise InputError(
                f"{root}: the train split would be empty ({len(units):,} unit(s), {total:,} tokens); "
                "lower --validation-fraction or give more data"
            )
        if cut_unit is not None and cut.tokens == cut_unit.tokens:  # the cut took the whole unit
            whole.add(cut_unit.name)
        tasks = []
        for u in units:
            if u.name in whole:
                tasks.append(U.Task(f"validation/{out_name(u.name)}", u.path,
                                    SplitPart("validation", None, True, u.limit)))
            elif cut_unit is not None and u.name == cut_unit.name and cut.thr is not None:
                for split in SPLITS:
                    tasks.append(U.Task(f"{split}/{out_name(u.name)}", u.path,
                                        SplitPart(split, cut.thr, False, u.limit)))
            else:
                tasks.append(U.Task(f"train/{out_name(u.name)}", u.path, SplitPart("train", None, True, u.limit)))
        return tasks

    def process_unit(self, task: U.Task, cfg: SplitConfig, dst: Path) -> Stats:
        p: SplitPart = task.params
        split, thr, whole = p.split, p.threshold, p.whole
        if whole:
            st = place_unit(task.source, dst, limit=p.limit)
        else:
            ids, _ = unit_ids_lengths(task.source)
            h = _hashes(ids, cfg.seed)
            mask = h <= np.uint64(thr) if split == "validation" else h > np.uint64(thr)
            st = write_subset(task.source, dst, np.flatnonzero(mask), p.limit)
        st.add(f"{split}.samples", st["samples"])
        st.add(f"{split}.tokens", st["tokens"])
        return st

    def finish(self, cfg: SplitConfig, stats: Stats, tasks: list[U.Task]) -> Finished:
        out = Path(cfg.output)
        src = Path(cfg.inputs[0])
        inp = read_input(src, cfg)
        tok = inp.tokenizer
        totals = {}
        for split in SPLITS:
            root = out / split
            totals[split] = finish_dataset(root, [t.name.split("/", 1)[1] for t in tasks if t.params.split == split])
            copy_tokenizer([src], root, [inp])
            meta = {"stage": self.name, "split": split, "settings": recorded_settings(cfg), "inputs": list(cfg.inputs),
                    "upstream": [m for m in [read_meta(src)] if m], **foreign_records([inp])}
            if tok is not None:
                meta["tokenizer"] = tok
            write_split_meta(root, meta)
        total = sum(t["total_tokens_written"] for t in totals.values())
        summary: dict[str, Any] = {
            "train_samples": totals["train"]["samples"],
            "train_tokens": totals["train"]["total_tokens_written"],
            "validation_samples": totals["validation"]["samples"],
            "validation_tokens": totals["validation"]["total_tokens_written"],
            "validation_fraction": cfg.validation_fraction,
            "validation_fraction_achieved": round(totals["validation"]["total_tokens_written"] / total, 6)
            if total else 0.0,
            "bytes_linked": stats["bytes_linked"],
            "bytes_written": stats["bytes_written"],
            "units_cut": sum(1 for t in tasks if not t.params.whole) // 2,
            "method": "units in blake2b(seed, unit) order wholly to validation while they fit; one unit cut at the "
                      "document (blake2b(seed, id) order) nearest to F x tokens",
        }
        write_json_atomic(out / "split_summary.json", summary)
        return self.finished(summary, tok, [inp])
