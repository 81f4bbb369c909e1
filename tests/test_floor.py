"""Fast paths beside their references, byte for byte: vectorized verification == the sample-by-sample scan,
finalize's whole-shard path == the per-sample rewrite, linked uncompressed chunks == decompressed ones."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ettin_data.mds import ShardWriter, UnitReader
from ettin_data.rules import check_samples, check_samples_slow

BOS, EOS = 7, 9


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), dtype=st.sampled_from(["uint16", "uint32", "int64"]),
       column=st.sampled_from(["input_ids", "tokens"]), with_len=st.booleans(),
       rules=st.sampled_from([(BOS, EOS, 12), (None, None, 12), (BOS, None, None), (None, None, None)]))
def test_vectorized_rules_equal_the_sample_scan(tmp_path_factory, data, dtype, column, with_len, rules):
    cols = {"id": "str", column: f"ndarray:{dtype}", **({"len": "int"} if with_len else {})}
    root = tmp_path_factory.mktemp("rules")
    with ShardWriter(root, cols, size_limit=1 << 12) as w:
        for i in range(data.draw(st.integers(1, 40))):
            n = data.draw(st.integers(1, 300 if i % 7 == 0 else 16))
            ids = np.array(data.draw(st.lists(st.sampled_from([1, 2, BOS, EOS, 300]), min_size=n, max_size=n)), dtype)
            row = {"id": "d" * (i % 5), column: ids}
            if with_len:
                row["len"] = n + data.draw(st.sampled_from([0, 0, 0, 1]))
            w.write(row)
    for shard in UnitReader(root).shards():
        assert check_samples(shard.path, shard, rules) == check_samples_slow(shard.path, shard, rules)


# ---------------------------------------------------------------- finalize: whole shards, links, checks

import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from ettin_data import run  # noqa: E402
from ettin_data.config import ChunkConfig, FinalizeConfig, SplitConfig  # noqa: E402
from ettin_data.stages import finalize as F  # noqa: E402

CHUNK = dict(chunk_size=256, min_chunk_size=64, always_skip_size=16, backfill=True, backfill_no_duplicates=True)
SKIP = {".done", "ettin_meta.json", ".ettin_settings.json", ".ettin_units.json", "manifest.json"}


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in SKIP and ".ettin_logs" not in p.parts}


@pytest.fixture(scope="module")
def splits(tmp_path_factory, token_dataset):
    """The built-in corpus chunked with zstd and with --compression none, each split the same way."""
    base = tmp_path_factory.mktemp("floor")
    for comp in ("zstd", "none"):
        run(ChunkConfig(inputs=[str(token_dataset)], output=str(base / f"chunks-{comp}"), compression=comp, workers=1,
                        **CHUNK))
        run(SplitConfig(inputs=[str(base / f"chunks-{comp}")], output=str(base / f"split-{comp}"),
                        validation_fraction=0.2, workers=1))
    return base


def _whole_flushes(monkeypatch) -> list[bool]:
    from ettin_data.mds import ShardWriter

    seen: list[bool] = []
    flush = ShardWriter._flush

    def spy(self):
        seen.append(self._whole is not None)
        return flush(self)

    monkeypatch.setattr(ShardWriter, "_flush", spy)
    return seen


@pytest.mark.parametrize("opts", [{}, {"dtype": "uint32"}, {"loader": "modernbert-streaming"},
                                  {"loader": "llm-foundry", "keep_compressed": True}])
def test_finalize_whole_shards_equal_the_per_sample_rewrite(splits, tmp_path, monkeypatch, opts):
    fast = run(FinalizeConfig(inputs=[str(splits / "split-zstd")], output=str(tmp_path / "fast"), workers=1, **opts))
    monkeypatch.setattr(F, "_whole_shards", lambda cols: False)  # the reference: every sample decoded and encoded
    ref = run(FinalizeConfig(inputs=[str(splits / "split-zstd")], output=str(tmp_path / "ref"), workers=1, **opts))
    assert fast["problems"] == ref["problems"] == []
    assert _digest(tmp_path / "fast") == _digest(tmp_path / "ref")


def test_finalize_default_writes_whole_shards_with_two_workers(splits, tmp_path, monkeypatch):
    seen = _whole_flushes(monkeypatch)
    run(FinalizeConfig(inputs=[str(splits / "split-zstd")], output=str(tmp_path / "one"), workers=1))
    assert seen and all(seen)  # every shard written whole (no per-sample work)
    run(FinalizeConfig(inputs=[str(splits / "split-zstd")], output=str(tmp_path / "two"), workers=2))
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")


def test_finalize_reads_no_shard_after_its_workers(splits, tmp_path, monkeypatch):
    """Verification costs no second read: finish opens no shard file (the workers checked them in memory)."""
    opened: list[str] = []
    real_open = io.open
    finish = F.Finalize.finish

    def spy_open(file, *a, **kw):
        opened.append(str(file))
        return real_open(file, *a, **kw)

    def spy_finish(self, *a, **kw):
        monkeypatch.setattr(io, "open", spy_open)
        try:
            return finish(self, *a, **kw)
        finally:
            monkeypatch.setattr(io, "open", real_open)

    monkeypatch.setattr(F.Finalize, "finish", spy_finish)
    s = run(FinalizeConfig(inputs=[str(splits / "split-zstd")], output=str(tmp_path / "out"), workers=1))
    assert s["verified"] is True
    assert opened and not [p for p in opened if ".mds" in Path(p).name], opened


def test_uncompressed_chunks_link_into_the_bytes_decompression_writes(splits, tmp_path, monkeypatch):
    from ettin_data.mds import UnitReader

    zstd, raw = splits / "chunks-zstd", splits / "chunks-none"
    same = [(a["id"], a["input_ids"].tolist()) for a in UnitReader(zstd).iter_samples()]
    assert same == [(b["id"], b["input_ids"].tolist()) for b in UnitReader(raw).iter_samples()]
    assert not list(raw.rglob("*.zstd")) and all(json.loads(p.read_text())["shards"][0]["compression"] is None
                                                 for p in raw.rglob("index.json"))
    seen = _whole_flushes(monkeypatch)
    a = run(FinalizeConfig(inputs=[str(splits / "split-zstd")], output=str(tmp_path / "decompressed"), workers=1,
                           name=["docs"]))
    n_written = len(seen)
    b = run(FinalizeConfig(inputs=[str(splits / "split-none")], output=str(tmp_path / "linked"), workers=1,
                           name=["docs"]))
    assert len(seen) == n_written  # nothing written: every unit whose shards are raw is hard-linked
    assert a["verified"] and b["verified"] and b["bytes_written"] == 0 and b["bytes_linked"] > 0
    assert _digest(tmp_path / "decompressed") == _digest(tmp_path / "linked")


def test_streaming_dataset_reads_uncompressed_chunks(splits):
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    from ettin_data.mds import UnitReader

    for root in (splits / "chunks-none", splits / "split-none" / "train"):
        want = [(s["id"], s["input_ids"].tolist()) for s in UnitReader(root).iter_samples()]
        clean_stale_shared_memory()
        ds = StreamingDataset(local=str(root), batch_size=1, shuffle=False)
        assert [(ds[i]["id"], ds[i]["input_ids"].tolist()) for i in range(len(ds))] == want
        del ds
    clean_stale_shared_memory()


def test_finalize_names_the_problems_verify_finds(tmp_path):
    """A chunk without its EOS and a stats.json that lies: finalize's worker checks flag the units and the
    summary names each problem exactly as a full `stats --verify` of the output does."""
    from helpers_chunks import make_chunks

    from ettin_data.mds import ShardWriter, write_root_index
    from ettin_data.verify import verify

    chunks = tmp_path / "chunks"
    make_chunks(chunks, n_units=3, docs_per_unit=10, compression="zstd")
    unit = chunks / "src" / "split_00001"
    samples = list(UnitReader(unit).iter_samples())
    samples[2]["input_ids"] = samples[2]["input_ids"][:-1].copy()
    samples[2]["len"] = len(samples[2]["input_ids"])
    for p in unit.glob("shard.*"):
        p.unlink()
    with ShardWriter(unit, {"id": "str", "input_ids": "ndarray:uint32", "len": "int"}) as w:
        for s in samples:
            w.write(s)
    write_root_index(chunks, ["src/split_00000", "src/split_00001", "src/split_00002"])
    run(SplitConfig(inputs=[str(chunks)], output=str(tmp_path / "split"), validation_fraction=0.2, workers=1))
    stats = next((tmp_path / "split" / "train").rglob("stats.json"))
    d = json.loads(stats.read_text())
    d["total_tokens_written"] += 1
    stats.write_text(json.dumps(d))
    for opts in ({}, {"keep_compressed": True}):
        out = tmp_path / f"final{len(opts)}"
        s = run(FinalizeConfig(inputs=[str(tmp_path / "split")], output=str(out), workers=1, **opts))
        assert s["problems"] and sorted(s["problems"]) == sorted(verify(out)), (s["problems"], verify(out))


@pytest.mark.parametrize("bos,eos,dtype,domains", [(7, 9, "uint32", False), (None, 9, "uint16", True),
                                                    (7, None, "uint32", True), (None, None, "uint16", False)])
def test_chunk_rows_equal_token_row_per_chunk(bos, eos, dtype, domains):
    """chunk's rows sliced from one bytes copy == token_row of each chunk (every framing, dtype, domain)."""
    from ettin_data.chunking import ChunkParams, chunk_batch
    from ettin_data.token_rows import chunk_rows, token_row

    rng = np.random.default_rng(5)
    lengths = rng.integers(0, 60, 40)
    ids = rng.integers(0, 300, int(lengths.sum())).astype(dtype)
    p = ChunkParams(chunk_size=16, bos_id=bos, eos_id=eos, min_chunk_size=4, always_skip_size=2, backfill=True)
    doc_ids = [f"doc-{i}-é" for i in range(len(lengths))]
    doms = [f"d{i % 3}" for i in range(len(lengths))] if domains else None
    ch = chunk_batch(ids, lengths, doc_ids, p)
    dt = np.dtype(dtype)
    want = [token_row(doc_ids[d].encode(), ch.chunk(k), dt, doms[d].encode() if doms else None)
            for k, d in enumerate(ch.doc.tolist())]
    assert want and list(chunk_rows(ch, doc_ids, doms, dt)) == want
