"""The counts files of a token dataset, written here for every stage (chunk, prepare, sample, finalize, index).

- a unit's ``stats.json``: ``samples``, ``total_tokens_written``, ``documents`` and ``length_percentiles`` in
  every unit (what readers rely on: the sample stages plan with the first two, ``stats --verify`` checks them);
  a unit chunk or prepare wrote adds chunk's accounting (:func:`chunk_stats`: content tokens in and written,
  tokens skipped and duplicated, empty documents, pieces skipped and backfilled, cuts moved). ``documents``:
  the documents chunked (chunk), the distinct ids among the samples (a unit sampled or finalized here);
- a unit's ``token_decile.json``: ``{str(length // 1000): [indices of the unit's samples]}``, non-empty buckets
  only (``sample context`` skips units without long chunks);
- a dataset's root ``stats.json``: chunk and prepare write :func:`chunk_stats` of the summed units; a sampled or
  finalized dataset and a rebuilt root index have :func:`dataset_totals` (``samples``, ``total_tokens_written``,
  ``units``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import DECILE_FILE, STATS_FILE
from .jsonio import write_json_atomic
from .stats import Stats, percentiles

__all__ = ["CHUNK_KEYS", "chunk_stats", "unit_stats", "token_decile", "write_unit_files", "dataset_totals",
           "write_dataset_stats", "recorded_tokens"]

CHUNK_KEYS = ("total_tokens_written", "total_tokens_skipped", "total_duplicated_tokens", "content_tokens_in",
              "content_tokens_written", "samples", "documents", "documents_empty", "pieces_skipped",
              "pieces_backfilled", "cuts_moved")


def chunk_stats(st: Stats) -> dict[str, Any]:
    """``stats.json`` of chunked data (a unit's, or the dataset's from the summed units): chunk's accounting."""
    return {**{k: st[k] for k in CHUNK_KEYS}, "length_percentiles": st.percentiles()}


def unit_stats(ids: list[Any], lengths: np.ndarray | list[int]) -> dict[str, Any]:
    """``stats.json`` of a unit sampled or finalized here: its samples' ``ids`` and token ``lengths``."""
    lengths = np.asarray(lengths, np.int64)
    values, counts = np.unique(lengths, return_counts=True)
    hist = dict(zip(values.tolist(), counts.tolist(), strict=True))
    return {"samples": len(lengths), "total_tokens_written": int(lengths.sum()), "documents": len(set(ids)),
            "length_percentiles": percentiles(hist)}


def token_decile(lengths: np.ndarray | list[int]) -> dict[str, list[int]]:
    """``token_decile.json``: ``{str(length // 1000): [sample indices in the unit]}`` (non-empty buckets only)."""
    buckets = np.asarray(lengths, np.int64) // 1000
    return {str(b): np.flatnonzero(buckets == b).tolist() for b in np.unique(buckets).tolist()}


def write_unit_files(dst: Path, stats: dict[str, Any], lengths: np.ndarray | list[int]) -> None:
    """A unit's ``stats.json`` (``stats``: :func:`chunk_stats` or :func:`unit_stats`) and ``token_decile.json``
    (from its samples' token ``lengths``, in sample order)."""
    write_json_atomic(dst / STATS_FILE, stats)
    write_json_atomic(dst / DECILE_FILE, token_decile(lengths))


def dataset_totals(samples: int, tokens: int, units: int) -> dict[str, int]:
    """A sampled or finalized dataset's root ``stats.json`` (and a rebuilt one's: ``index``)."""
    return {"samples": samples, "total_tokens_written": tokens, "units": units}


def write_dataset_stats(root: Path, stats: dict[str, Any]) -> None:
    """A dataset's root ``stats.json`` (``stats``: :func:`chunk_stats` or :func:`dataset_totals`)."""
    write_json_atomic(root / STATS_FILE, stats)


def recorded_tokens(path: Path, samples: int) -> int | None:
    """The tokens a unit's ``stats.json`` records, when it records ``samples`` samples (None: no such file, not
    readable, or another sample count)."""
    f = path / STATS_FILE
    if not f.is_file():
        return None
    try:
        d = json.loads(f.read_text())
        if int(d.get("samples", samples)) == samples and "total_tokens_written" in d:
            return int(d["total_tokens_written"])
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError):
        pass
    return None
