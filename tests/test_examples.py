"""examples/Makefile end to end: the three Ettin phases on the built-in corpus, a second make is a
no-op, touching one stage's output redoes exactly the stages that depend on it, and a redo gives the
same bytes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ettin_data.mds import UnitReader
from ettin_data.stages.export import iter_records

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ETTIN = Path(sys.executable).parent / "ettin-data"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("make") is None, reason="make not installed"),
    pytest.mark.skipif(not ETTIN.exists(), reason="console script not installed (pip install -e .)"),
]


def _make(out: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = ["make", "-C", str(EXAMPLES), f"OUT={out}", f"ETTIN={ETTIN}", "FLAGS=-q -w 1", "DOCS_PER_SHARD=50",
           "CONTEXT_TOKENS=60000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "ETTIN_DATA_LOGS": "1"})


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every MDS file (indexes and shards) under root."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and (p.name == "index.json" or ".mds" in p.name)}


def _would_run(out: Path) -> list[str]:
    """The stage commands `make -n` would run, as 'stage output' pairs."""
    res = _make(out, "-n")
    assert res.returncode == 0, res.stderr
    runs = []
    for line in res.stdout.splitlines():
        if line.startswith(str(ETTIN)):
            words = line.split()
            stage = " ".join(words[1:3]) if words[1] == "sample" else words[1]
            runs.append(f"{stage} {Path(words[words.index('-o') + 1]).relative_to(out)}")
    return runs


def test_three_phase_recipe(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _make(out)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]

    # every phase ends in a finalized train/validation dataset with a manifest, verified by finalize
    for phase, name in (("phase1", "pretrain"), ("phase2", "context-extension"), ("phase3", "decay")):
        final = out / phase / "final"
        manifest = json.loads((final / "manifest.json").read_text())
        assert name in json.dumps(manifest)
        for split in ("train", "validation"):
            assert len(UnitReader(final / split)) > 0
            assert list((final / split).rglob("*.mds")), "finalize writes raw .mds shards"
    p1 = json.loads((out / "phase1/chunks/ettin_meta.json").read_text())["settings"]
    assert (p1["chunk_size"], p1["min_chunk_size"], p1["always_skip_size"]) == (1024, 512, 128)
    assert p1["backfill"] and p1["backfill_no_duplicates"] and not p1["add_eos_token"]
    p2 = json.loads((out / "phase2/chunks/ettin_meta.json").read_text())["settings"]
    assert (p2["chunk_size"], p2["min_chunk_size"], p2["always_skip_size"], p2["add_eos_token"]) == (8192, 512, 32,
                                                                                                     True)
    longest = max(len(s["input_ids"]) for s in UnitReader(out / "phase1/final/train").iter_samples(["input_ids"]))
    assert longest <= 1024
    ctx = [len(s["input_ids"]) for s in UnitReader(out / "phase2/context").iter_samples(["input_ids"])]
    assert min(ctx) >= 2048 and max(ctx) <= 8192
    mix = json.loads((out / "phase3/mix/sampling_summary.json").read_text())
    assert "pretrain-1k" in json.dumps(mix) and "long-8k" in json.dumps(mix)
    # decoded samples are real English text, not special tokens
    first = next(iter_records(out / "phase1/final/train"))
    assert "[CLS]" not in first["text"] and len(first["text"].split()) > 50

    # a second make has nothing to do
    assert _make(out, "-q").returncode == 0
    again = _make(out)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout
    assert _would_run(out) == []

    # touching one stage's output redoes exactly what depends on it
    later = (out / "phase3/final/ettin_meta.json").stat().st_mtime + 10
    for touched, expected in (
        ("phase2/chunks", ["sample context phase2/context", "sample split phase2/split", "finalize phase2/final",
                           "sample mix phase3/mix", "sample split phase3/split", "finalize phase3/final"]),
        ("phase1/split", ["finalize phase1/final"]),
        ("tokens", ["chunk phase1/chunks", "sample split phase1/split", "finalize phase1/final",
                    "chunk phase2/chunks", "sample context phase2/context", "sample split phase2/split",
                    "finalize phase2/final", "sample mix phase3/mix", "sample split phase3/split",
                    "finalize phase3/final"]),
    ):
        meta = out / touched / "ettin_meta.json"
        st = meta.stat()
        os.utime(meta, (later, later))
        assert _make(out, "-q").returncode == 1
        assert _would_run(out) == expected, touched
        os.utime(meta, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert _would_run(out) == []

    # redoing a stage (from scratch) gives the same bytes downstream
    before = _digest(out / "phase2")
    os.utime(out / "phase2/context/ettin_meta.json")  # touch: now
    assert _would_run(out) == ["sample split phase2/split", "finalize phase2/final"]
    old_final = (out / "phase2/final/ettin_meta.json").stat().st_mtime_ns
    res = _make(out, "phase2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "phase2/final/ettin_meta.json").stat().st_mtime_ns > old_final
    assert _digest(out / "phase2") == before
    assert _make(out, "-q").returncode == 0
