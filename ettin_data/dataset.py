"""The on-disk dataset contract, in one place: the file names every stage reads and writes and the reader
of ``ettin_meta.json`` (what is inside an MDS index is the format package's, ``mds/``; the dataset's state,
complete or being written, is ``state.py``'s).

Low-level modules import names from here, never from the driver (``driver.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = ["META", "SETTINGS", "TOKENIZER_FILE", "INDEX", "INCOMPLETE", "DONE", "STATS_FILE", "DECILE_FILE",
           "STATS_FILES", "CONVERT_STATS", "NUM_TOKENS", "MANIFEST", "LOG_DIR", "SPLITS", "read_meta",
           "dataset_tokenizer"]

INDEX = "index.json"  # MDS index (a unit's shards, or the root index over every unit's shards)
META = "ettin_meta.json"  # what wrote the dataset: stage, settings, counts, tokenizer identity
SETTINGS = ".ettin_settings.json"  # the run's recorded settings: a resume with other settings is refused
TOKENIZER_FILE = "tokenizer.json"  # the exact tokenizer bytes a token dataset was written with
INCOMPLETE = ".ettin_incomplete"  # present while a run (re)writes the dataset, or after it stopped unfinished
DONE = ".done"  # in a unit (or a convert/prepare task's folder): finished, with its stats; written last
STATS_FILE = "stats.json"  # a token dataset's counts, per unit and at the root (tokenstats.py)
DECILE_FILE = "token_decile.json"  # per token unit: its sample indices by length // 1000 (tokenstats.py)
STATS_FILES = (STATS_FILE, DECILE_FILE)  # what a token unit holds beside its index and shards
CONVERT_STATS = "convert_stats.json"  # convert's document counts
NUM_TOKENS = "num_tokens.json"  # tokenize's token counts
MANIFEST = "manifest.json"  # finalize's record of the final dataset
LOG_DIR = ".ettin_logs"  # the run logs (logs.py): never part of the dataset
SPLITS = ("train", "validation")  # the datasets of a split folder (sample split, finalize: OUTPUT/<split>/...)


def read_meta(path: str | Path, strict: bool = False) -> dict[str, Any] | None:
    """``FOLDER/ettin_meta.json`` as a dict; None when it is missing or not a JSON object. ``strict``: a file
    that is not valid JSON is an :class:`InputError` naming it (where the run depends on what it says)."""
    p = Path(path) / META
    if not p.is_file():
        return None
    try:
        meta = json.loads(p.read_text())
    except (OSError, ValueError, RecursionError):
        if strict:
            raise InputError(f"{p} is not valid JSON; rerun the stage that wrote it") from None
        return None
    return meta if isinstance(meta, dict) else None


def dataset_tokenizer(path: str | Path) -> dict[str, Any] | None:
    """The tokenizer identity a token dataset records (``ettin_meta.json["tokenizer"]``): name, sha256 of its
    ``tokenizer.json``, vocab size, BOS/EOS and special ids. None when the dataset records none; unreadable
    metadata is an :class:`InputError`. The one reader of it."""
    meta = read_meta(path, strict=True)
    tok = meta.get("tokenizer") if meta else None
    return tok if isinstance(tok, dict) else None
