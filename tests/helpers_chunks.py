"""Synthetic chunked token datasets that follow the chunk contract (docs/contract): unit folders with
shards, ``.done``, ``stats.json`` and ``token_decile.json``; a root index, ``ettin_meta.json`` (stage
chunk, chunk_size, tokenizer with bos/eos ids) and ``tokenizer.json``."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from ettin_data import units as U
from ettin_data.jsonio import write_json_atomic
from ettin_data.mds import TOKEN_COLUMNS, ShardWriter, UnitReader, write_root_index
from ettin_data.stats import Stats
from ettin_data.tokenstats import token_decile, unit_stats

BOS, EOS = 50281, 50282
TOKENIZER_BYTES = b'{"version": "1.0", "fake": "tokenizer for tests"}'


def tokenizer_identity(name: str = "test-tok", sha: str = "ab" * 32) -> dict:
    return {"name": name, "sha256": sha, "vocab_size": 50368, "bos_id": BOS, "eos_id": EOS, "pad_id": 50283,
            "special_ids": [50280, BOS, EOS, 50283, 50284], "special_tokens_added": True, "prefix_space": False}


def make_chunks(root: Path, n_units: int = 4, docs_per_unit: int = 20, chunk_size: int = 256, min_len: int = 8,
                seed: int = 0, compression: str | None = "zstd", size_limit: int = 1 << 16, source: str = "src",
                tokenizer: dict | None = None, max_chunks: int = 3) -> list[tuple[str, tuple[int, ...]]]:
    """Write a chunk-stage-like dataset at ``root``; returns every chunk as (document id, token ids)."""
    rng = np.random.default_rng(seed)
    chunks = []
    names = []
    for u in range(n_units):
        name = f"{source}/split_{u:05d}"
        names.append(name)
        ids, lengths = [], []
        with ShardWriter(root / name, TOKEN_COLUMNS, compression, size_limit=size_limit) as w:
            for d in range(docs_per_unit):
                doc = f"{source}-doc-{seed}-{u}-{d}"
                for _ in range(int(rng.integers(1, max_chunks + 1))):
                    n = int(rng.integers(min_len, chunk_size + 1))
                    arr = np.concatenate([[BOS], rng.integers(0, 50000, n - 2), [EOS]]).astype(np.uint32)
                    w.write({"id": doc, "input_ids": arr, "len": n})
                    chunks.append((doc, tuple(arr.tolist())))
                    ids.append(doc)
                    lengths.append(n)
        stats, deciles = unit_stats(ids, np.asarray(lengths)), token_decile(lengths)
        stats.update(total_tokens_skipped=0, total_duplicated_tokens=0, content_tokens_in=stats["total_tokens_written"]
                     - 2 * len(lengths))
        write_json_atomic(root / name / "stats.json", stats)
        write_json_atomic(root / name / "token_decile.json", deciles)
        st = Stats()
        st.add("samples", len(ids))
        U.mark_done(root / name, st)
    write_root_index(root, names)
    tok = tokenizer or tokenizer_identity()
    meta = {"stage": "chunk", "settings": {"chunk_size": chunk_size, "min_chunk_size": 0, "seed": 42},
            "inputs": [str(root) + "-tokens"],
            "upstream": [{"stage": "tokenize", "settings": {"tokenizer": tok["name"], "dtype": "uint32"},
                          "inputs": ["text"], "upstream": [], "tokenizer": tok}],
            "tokenizer": tok}
    write_json_atomic(root / "ettin_meta.json", meta)
    (root / "tokenizer.json").write_bytes(TOKENIZER_BYTES)
    return chunks


def read_chunks(root: Path) -> list[tuple[str, tuple[int, ...]]]:
    """Every sample of a dataset (through its root index) as (id, token ids)."""
    return [(s["id"], tuple(np.asarray(s["input_ids"]).tolist()))
            for s in UnitReader(root).iter_samples(["id", "input_ids"])]


def inodes(root: Path) -> set[int]:
    return {p.stat().st_ino for p in root.rglob("*") if p.is_file()}


def new_bytes(out: Path, *inputs: Path) -> tuple[int, int]:
    """(bytes in files of ``out`` sharing an inode with ``inputs``, bytes in files that do not)."""
    shared = set().union(*(inodes(i) for i in inputs))
    linked = new = 0
    seen: set[int] = set()
    for p in out.rglob("*"):
        if not p.is_file():
            continue
        st = os.stat(p)
        if st.st_ino in seen:
            continue
        seen.add(st.st_ino)
        if st.st_ino in shared:
            linked += st.st_size
        else:
            new += st.st_size
    return linked, new


def doc_tokens(chunks: list[tuple[str, tuple[int, ...]]]) -> Counter:
    c: Counter = Counter()
    for doc, ids in chunks:
        c[doc] += len(ids)
    return c


def load_json(p: Path) -> dict:
    return json.loads(p.read_text())
