"""The digest of a full chain: every stage and finalize profile on a fixed corpus, the sha1 of every file it
writes. ``tests/data/chain_digest.json`` holds the digests the code had when a change was meant not to alter
any output byte (``tests/test_digest.py`` compares against it). Regenerate it only for a change of output
that is intended and explained in the commit:

    PYTHONPATH=$PWD .venv/bin/python tests/chain_digest.py --write
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

EXPECTED = Path(__file__).parent / "data" / "chain_digest.json"
# per-run bookkeeping (paths, settings, timings), not data
SKIP = {".done", "ettin_meta.json", ".ettin_settings.json", ".ettin_units.json", ".ettin_lock"}
_MANIFEST_KEYS = ("format", "profile", "splits", "tokenizer", "shards")
CHUNK_A = dict(chunk_size=256, min_chunk_size=64, always_skip_size=16, backfill=True, backfill_no_duplicates=True)
CHUNK_B = dict(chunk_size=128, min_chunk_size=32, always_skip_size=8, backfill=True, add_eos_token=True,
               enforce_min_chunk_size_zeroth=True)
CHUNK_C = dict(chunk_size=512, min_chunk_size=100, always_skip_size=50, word_boundaries=False)
FINALIZE = {
    "default": dict(),
    "default_b": dict(),
    "keep_compressed": dict(keep_compressed=True),
    "dtype_uint16": dict(dtype="uint16"),
    "columns": dict(columns=["input_ids"]),
    "mb_streaming": dict(loader="modernbert-streaming"),
    "mb_streaming_zstd": dict(loader="modernbert-streaming", keep_compressed=True),
    "llm_foundry": dict(loader="llm-foundry"),
    "llm_foundry_zstd_u32": dict(loader="llm-foundry", keep_compressed=True, dtype="uint32"),
    "numpy": dict(loader="numpy"),
}


def _file_digest(p: Path) -> str:
    if p.name == "manifest.json":  # inputs are absolute paths: only the data entries
        m = json.loads(p.read_text())
        return hashlib.sha1(json.dumps({k: m.get(k) for k in _MANIFEST_KEYS}, sort_keys=True).encode()).hexdigest()
    return hashlib.sha1(p.read_bytes()).hexdigest()


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): _file_digest(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in SKIP and ".ettin_logs" not in p.parts}


def raw_corpus(d: Path) -> Path:
    """The built-in corpus with a domain field, a duplicate id and special-token text."""
    from ettin_data.corpus import python_docs

    lines = [{"id": doc["id"], "text": doc["text"], "src": f"s{i % 3}"} for i, doc in enumerate(python_docs())]
    lines[3] = {"id": lines[2]["id"], "text": "a [SEP] inside " + lines[3]["text"], "src": "x"}
    path = d / "raw.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def build_chain(base: Path, **extra: Any) -> dict[str, Path]:
    """Every output of the chain under ``base``; ``extra`` options go to chunk and prepare (new options that
    must leave the bytes alone at their default)."""
    from ettin_data import run
    from ettin_data.config import (
        BudgetConfig,
        ChunkConfig,
        ContextConfig,
        ConvertConfig,
        FinalizeConfig,
        PrepareConfig,
        SplitConfig,
        TokenizeConfig,
    )

    raw = raw_corpus(base)
    w = dict(workers=1)
    names = ("text_a", "text_b", "tokens_a", "tokens_b", "chunks_a", "chunks_b", "chunks_c", "prepare_a", "split_a",
             "split_b", "split_c", "budget", "context")
    o: dict[str, Path] = {k: base / k for k in names}
    run(ConvertConfig(inputs=[str(raw)], output=str(o["text_a"]), domain_field="src", docs_per_shard=40, **w))
    run(ConvertConfig(inputs=[str(raw)], output=str(o["text_b"]), docs_per_shard=100, **w))
    tok = "builtin:modernbert"
    run(TokenizeConfig(inputs=[str(o["text_a"])], output=str(o["tokens_a"]), tokenizer=tok, **w))
    run(TokenizeConfig(inputs=[str(o["text_b"])], output=str(o["tokens_b"]), tokenizer=tok, dtype="uint16",
                       prefix_space=True, **w))
    run(ChunkConfig(inputs=[str(o["tokens_a"])], output=str(o["chunks_a"]), **CHUNK_A, **extra, **w))
    run(ChunkConfig(inputs=[str(o["tokens_b"])], output=str(o["chunks_b"]), **CHUNK_B, **extra, **w))
    run(ChunkConfig(inputs=[str(o["tokens_a"])], output=str(o["chunks_c"]), **CHUNK_C, **extra, **w))
    run(PrepareConfig(inputs=[str(raw)], output=str(o["prepare_a"]), tokenizer=tok, domain_field="src",
                      docs_per_shard=40, **CHUNK_A, **extra, **w))
    run(SplitConfig(inputs=[str(o["chunks_a"])], output=str(o["split_a"]), validation_fraction=0.2, **w))
    run(SplitConfig(inputs=[str(o["chunks_b"])], output=str(o["split_b"]), validation_fraction=0.1, seed=7, **w))
    run(SplitConfig(inputs=[str(o["chunks_c"])], output=str(o["split_c"]), validation_fraction=0.3, **w))
    run(BudgetConfig(inputs=[str(o["chunks_c"])], output=str(o["budget"]), target_tokens=500_000, upsample=True,
                     exact=True, **w))
    run(ContextConfig(inputs=[str(o["chunks_c"])], output=str(o["context"]), num_tokens=50_000, min_length=300, **w))
    for name, opts in FINALIZE.items():
        o[f"final_{name}"] = base / f"final_{name}"
        inputs = {"default": [str(o["split_a"]), str(o["split_c"])], "default_b": [str(o["split_b"])]}.get(
            name, [str(o["split_a"])])
        summary = run(FinalizeConfig(inputs=inputs, output=str(o[f"final_{name}"]), **opts, **w))
        if summary.get("problems"):
            raise AssertionError(f"finalize {name}: {summary['problems']}")
    return o


def chain_digest(base: Path, **extra: Any) -> dict[str, dict[str, str]]:
    return {name: tree_digest(path) for name, path in build_chain(base, **extra).items()}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        got = chain_digest(Path(d))
    if "--write" in sys.argv:
        EXPECTED.parent.mkdir(exist_ok=True)
        EXPECTED.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        print(f"wrote {EXPECTED}: {sum(len(v) for v in got.values())} files")
    else:
        want = json.loads(EXPECTED.read_text())
        bad = [f"{k}/{f}" for k in want for f in set(want[k]) | set(got.get(k, {}))
               if want[k].get(f) != got.get(k, {}).get(f)]
        print("identical" if not bad else "differ:\n" + "\n".join(sorted(bad)))
