"""``sample split``: hold out whole documents as a validation split.

Method (deterministic for a seed, whatever the worker count): every document id gets the stable hash
``blake2b(seed, id)``; documents are ordered by that hash, and validation takes the prefix of this order
whose token count is nearest to ``F x total tokens`` (so it is within one document of the target).
That prefix is one hash threshold: a chunk goes to validation when its document's hash is at or below
it, so all chunks of a document land in the same split. The plan scans the ``id``/``len`` columns once.

Units wholly in one split are hard-linked (no bytes copied); mixed units are rewritten per split.
Output: ``OUTPUT/train/<unit>`` and ``OUTPUT/validation/<unit>``, each split with its own root
``index.json``, ``stats.json``, ``ettin_meta.json`` (tokenizer copied) and ``tokenizer.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import units as U
from ..config import SplitConfig, recorded_settings
from ..errors import InputError
from ..mds import write_json_atomic
from ..pipeline import read_meta
from ..stats import Stats
from .common import (
    copy_tokenizer,
    dataset_tokenizer,
    dataset_units,
    doc_hash,
    finish_dataset,
    out_name,
    place_unit,
    render,
    single_input,
    unit_ids_lengths,
    write_split_meta,
    write_subset,
)

__all__ = ["render", "NAME", "plan", "process_unit", "finish", "run", "choose_threshold", "SPLITS"]

NAME = "sample split"
SPLITS = ("train", "validation")


def _hashes(ids: list[str], seed: int) -> np.ndarray:
    return np.fromiter((doc_hash(seed, i) for i in ids), np.uint64, len(ids))


def choose_threshold(hashes: np.ndarray, lengths: np.ndarray, fraction: float, where: str = "") -> int:
    """The hash threshold whose documents (hash <= threshold) hold the token count nearest to
    ``fraction`` of the total. ``hashes``/``lengths`` are per chunk; chunks sharing a hash are one document."""
    if hashes.size == 0:
        raise InputError(f"{where}: the input has no samples; nothing to split")
    docs, inverse = np.unique(hashes, return_inverse=True)
    doc_tokens = np.zeros(len(docs), np.int64)
    np.add.at(doc_tokens, inverse, lengths.astype(np.int64))
    cum = np.concatenate([[0], np.cumsum(doc_tokens)])
    total = int(cum[-1])
    target = fraction * total
    k = int(np.argmin(np.abs(cum - target)))  # documents in validation
    if k == 0:
        raise InputError(
            f"{where}: the validation split would be empty: {fraction} of {total:,} tokens is "
            f"{target:,.0f}, nearer to 0 than to the first drawn document ({int(doc_tokens[0]):,} tokens) of "
            f"{len(docs):,} documents; raise --validation-fraction or give more data"
        )
    if k == len(docs):
        raise InputError(
            f"{where}: the train split would be empty ({len(docs):,} document(s), {total:,} tokens); "
            "lower --validation-fraction or give more data"
        )
    return int(docs[k - 1])


def plan(cfg: SplitConfig) -> list[U.Task]:
    root = single_input(cfg)
    per_unit = []
    for unit in dataset_units(root):
        ids, lengths = unit_ids_lengths(Path(unit.path))
        per_unit.append((unit.name, Path(unit.path), _hashes(ids, cfg.seed), lengths))
    thr = choose_threshold(np.concatenate([h for _, _, h, _ in per_unit]),
                           np.concatenate([n for _, _, _, n in per_unit]), cfg.validation_fraction, str(root))
    tasks = []
    for name, path, h, _ in per_unit:
        n_val = int((h <= np.uint64(thr)).sum())
        for split, n in (("train", len(h) - n_val), ("validation", n_val)):
            if n:
                tasks.append(U.Task(f"{split}/{out_name(name)}", str(path), (split, thr, n == len(h))))
    return tasks


def process_unit(task: U.Task, cfg: SplitConfig) -> Stats:
    split, thr, whole = task.params
    dst = Path(cfg.output) / task.name
    with U.atomic_dir(dst) as tmp:
        if whole:
            st = place_unit(task.source, tmp)
        else:
            ids, _ = unit_ids_lengths(task.source)
            h = _hashes(ids, cfg.seed)
            mask = h <= np.uint64(thr) if split == "validation" else h > np.uint64(thr)
            st = write_subset(task.source, tmp, np.flatnonzero(mask))
    st.add(f"{split}.samples", st["samples"])
    st.add(f"{split}.tokens", st["tokens"])
    U.mark_done(dst, st)
    return st


def finish(cfg: SplitConfig, stats: Stats, tasks: list[U.Task]) -> dict[str, Any]:
    out = Path(cfg.output)
    src = Path(cfg.inputs[0])
    tok = dataset_tokenizer(src)
    totals = {}
    for split in SPLITS:
        root = out / split
        totals[split] = finish_dataset(root, [t.name.split("/", 1)[1] for t in tasks if t.params[0] == split])
        copy_tokenizer([src], root)
        meta = {"stage": NAME, "split": split, "settings": recorded_settings(cfg), "inputs": list(cfg.inputs),
                "upstream": [m for m in [read_meta(src)] if m]}
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
        "method": "documents ordered by blake2b(seed, id); validation = prefix nearest to F x tokens",
    }
    write_json_atomic(out / "split_summary.json", summary)
    if tok is not None:
        summary["tokenizer"] = tok
    return summary


def run(cfg: SplitConfig, quiet: bool = True) -> dict[str, Any]:
    from ..pipeline import run_stage

    return run_stage(__import__(__name__, fromlist=["NAME"]), cfg, quiet=quiet)
