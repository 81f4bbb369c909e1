"""finalize and verification: the final layout loads with StreamingDataset and with a reader following
ModernBERT's no-streaming rules; every chunk appears exactly once across train and validation; the manifest
records counts, the stage chain, the tokenizer and shard hashes; ``stats --verify`` names broken files."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers_chunks import BOS, EOS, load_json, make_chunks, read_chunks, tokenizer_identity
from typer.testing import CliRunner

from ettin_data import run
from ettin_data.cli import app
from ettin_data.config import FinalizeConfig, SplitConfig
from ettin_data.errors import ConfigError, InputError
from ettin_data.jsonio import write_json_atomic
from ettin_data.mds import TOKEN_COLUMNS, ShardWriter, write_root_index
from ettin_data.stages import finalize
from ettin_data.verify import verify


@pytest.fixture(scope="module")
def final(tmp_path_factory):
    """Two chunked datasets -> split each -> finalize both into one train/validation layout."""
    base = tmp_path_factory.mktemp("final")
    chunks = {}
    for name, seed in (("web", 1), ("books", 2)):
        chunks[name] = make_chunks(base / "chunks" / name, n_units=3, docs_per_unit=25, seed=seed, source=name)
        run(SplitConfig(inputs=[str(base / "chunks" / name)], output=str(base / "split" / name),
                              validation_fraction=0.2, workers=1))
    summary = run(FinalizeConfig(inputs=[str(base / "split" / "web"), str(base / "split" / "books")],
                                          output=str(base / "out"), workers=1))
    return base, chunks, summary


def _modernbert_read(local: Path, split_name: str) -> list[np.ndarray]:
    """ModernBERT's NoStreamingDataset rules: reader_from_json per shard of {local}/{split}/index.json, the
    raw .mds file must exist, shard.validate(True), samples addressed through a Spanner over shard sizes."""
    from streaming.base.format import reader_from_json
    from streaming.base.spanner import Spanner

    obj = json.loads((local / split_name / "index.json").read_text())
    shards = []
    for info in obj["shards"]:
        shard = reader_from_json(str(local), split_name, info)
        raw = os.path.join(shard.dirname, shard.split, shard.raw_data.basename)
        assert os.path.isfile(raw), raw
        shard.validate(True)
        shards.append(shard)
    sizes = np.array([s.samples for s in shards], np.int64)
    spanner = Spanner(sizes)
    out = []
    for i in range(int(sizes.sum())):
        shard_id, idx = spanner[i]
        out.append(np.asarray(shards[shard_id][idx]["input_ids"]))
    return out


def test_final_layout_loads_with_modernbert_rules_and_keeps_every_chunk_once(final):
    base, chunks, summary = final
    out = base / "out"
    assert summary["problems"] == [] and summary["verified"] is True
    got = {s: _modernbert_read(out, s) for s in ("train", "validation")}
    expected = Counter(ids for name in chunks for _, ids in chunks[name])
    assert Counter(tuple(a.tolist()) for s in got for a in got[s]) == expected  # every chunk exactly once
    for s in ("train", "validation"):
        index = load_json(out / s / "index.json")
        assert {sh["raw_data"]["basename"].split("/")[0] for sh in index["shards"]} == {"web", "books"}
        assert all(sh["compression"] is None and sh["zip_data"] is None for sh in index["shards"])
        assert not list((out / s).rglob("*.zstd"))
        assert load_json(out / s / "ettin_meta.json")["tokenizer"] == tokenizer_identity()
        assert (out / s / "tokenizer.json").is_file()
    train_docs = {d for d, _ in read_chunks(out / "train")}
    val_docs = {d for d, _ in read_chunks(out / "validation")}
    assert val_docs and not train_docs & val_docs


def test_final_layout_loads_with_streaming_dataset(final, tmp_path):
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    base, chunks, _ = final
    seen = Counter()
    for s in ("train", "validation"):
        clean_stale_shared_memory()
        ds = StreamingDataset(local=str(base / "out" / s), batch_size=1, shuffle=False)
        for i in range(len(ds)):
            sample = ds[i]
            assert sample["len"] == len(sample["input_ids"])
            seen[(sample["id"], tuple(np.asarray(sample["input_ids"]).tolist()))] += 1
        del ds
    clean_stale_shared_memory()
    assert seen == Counter(c for name in chunks for c in chunks[name])


def test_manifest_records_counts_stages_tokenizer_and_hashes(final):
    base, chunks, summary = final
    out = base / "out"
    m = load_json(out / "manifest.json")
    assert m["tokenizer"] == tokenizer_identity()
    for s in ("train", "validation"):
        got = read_chunks(out / s)
        assert m["splits"][s]["samples"] == len(got) == summary["splits"][s]["samples"]
        assert m["splits"][s]["tokens"] == sum(len(x) for _, x in got)
        for name in ("web", "books"):
            mine = read_chunks(out / s / name) if (out / s / name / "index.json").exists() else [
                c for c in got if c[0].startswith(name)]
            assert m["splits"][s]["datasets"][name]["tokens"] == sum(len(x) for _, x in mine)
        for sh in m["shards"][s]:
            assert hashlib.sha1((out / s / sh["file"]).read_bytes()).hexdigest() == sh["sha1"]
    for name in ("web", "books"):
        stages = [st["stage"] for st in m["datasets"][name]["stages"]]
        assert stages == ["tokenize", "chunk", "sample split"]
        assert m["datasets"][name]["stages"][1]["settings"]["chunk_size"] == 256
        assert m["datasets"][name]["stages"][2]["settings"]["validation_fraction"] == 0.2


def test_keep_compressed_links_and_dtype_columns_narrow(final, tmp_path):
    base, chunks, _ = final
    src = base / "split" / "web"
    run(FinalizeConfig(inputs=[str(src)], output=str(tmp_path / "kc"), keep_compressed=True, workers=1))
    index = load_json(tmp_path / "kc" / "train" / "index.json")
    assert all(sh["compression"] == "zstd" for sh in index["shards"])
    for sh in index["shards"]:
        name = sh["zip_data"]["basename"]  # web/<unit>/shard...
        assert os.stat(tmp_path / "kc" / "train" / name).st_ino == os.stat(src / "train" / name.split("/", 1)[1]).st_ino
    assert verify(tmp_path / "kc") == []
    s = run(FinalizeConfig(inputs=[str(src)], output=str(tmp_path / "narrow"), dtype="uint16",
                                    columns=["input_ids", "len"], name=["w"], workers=1))
    assert s["problems"] == []
    index = load_json(tmp_path / "narrow" / "train" / "index.json")
    assert all(sh["column_names"] == ["input_ids", "len"] for sh in index["shards"])
    assert all(sh["column_encodings"][0] == "ndarray:uint16" for sh in index["shards"])
    got = sorted(tuple(a.tolist()) for sp in ("train", "validation") for a in _modernbert_read(tmp_path / "narrow", sp))
    assert got == sorted(ids for _, ids in chunks["web"])


def test_finalize_option_errors(final, tmp_path):
    base, _, _ = final
    with pytest.raises(ConfigError, match="one per INPUT"):
        finalize.Finalize().plan(FinalizeConfig(inputs=[str(base / "split" / "web")], output=str(tmp_path / "o"),
                                                name=["a", "b"]))
    with pytest.raises(ConfigError, match="both named"):
        finalize.Finalize().plan(FinalizeConfig(inputs=[str(base / "split" / "web")] * 2, output=str(tmp_path / "o")))
    with pytest.raises(InputError, match="no train/"):
        finalize.Finalize().plan(FinalizeConfig(inputs=[str(base / "chunks" / "web")], output=str(tmp_path / "o")))
    big = tmp_path / "big"
    with ShardWriter(big / "train" / "u", TOKEN_COLUMNS) as w:
        w.write({"id": "d", "input_ids": np.array([BOS, 70000, EOS], np.uint32), "len": 3})
    with pytest.raises(InputError, match="big/train has no ettin_meta.json.*pass --tokenizer"):  # another tool's
        run(FinalizeConfig(inputs=[str(big)], output=str(tmp_path / "b"), dtype="uint16", workers=1))
    (big / "ettin_meta.json").write_text('{"stage": "sample split"}')  # ours, recording no tokenizer
    with pytest.raises(Exception, match="sample 0: token id 70,000 does not fit uint16"):
        run(FinalizeConfig(inputs=[str(big)], output=str(tmp_path / "b"), dtype="uint16", workers=1))


def test_finalize_unknown_column_stops_at_plan_time(final, tmp_path):
    """--columns naming a column no unit has: one line before any work (it used to fail every unit)."""
    base, _, _ = final
    r = CliRunner().invoke(app, ["finalize", str(base / "split" / "web"), "-o", str(tmp_path / "o"), "--columns",
                                 "input_ids", "--columns", "nope", "-w", "1"])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "--columns" in errors[0] and "no column(s) nope" in errors[0], r.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("index.json"))


# ---------------------------------------------------------------- verification

def _copy_final(final, tmp_path) -> Path:
    import shutil

    base, _, _ = final
    dst = tmp_path / "copy"
    shutil.copytree(base / "out", dst)
    return dst


@pytest.mark.parametrize("damage", ["missing", "truncated", "bad_hash"])
def test_stats_verify_names_broken_shards(final, tmp_path, damage):
    out = _copy_final(final, tmp_path)
    r = CliRunner().invoke(app, ["stats", "--verify", str(out)])
    assert r.exit_code == 0, r.output
    shard = sorted((out / "train" / "books").rglob("shard.*.mds"))[0]
    if damage == "missing":
        shard.unlink()
    elif damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:-10])
    else:
        data = bytearray(shard.read_bytes())
        data[-1] ^= 0xFF  # same size, different bytes
        shard.write_bytes(bytes(data))
    problems = verify(out)
    assert problems and all(str(shard) in p for p in problems[:1])
    word = {"missing": "missing", "truncated": "bytes", "bad_hash": "hash"}[damage]
    assert word in problems[0]
    for target in (out, out / "train"):
        r = CliRunner().invoke(app, ["stats", "--verify", str(target), "--json"])
        assert r.exit_code == 1
        assert str(shard) in " ".join(json.loads(r.output)["problems"])


def test_verify_checks_chunk_invariants_and_stats(tmp_path):
    root = tmp_path / "bad"
    with ShardWriter(root / "u", TOKEN_COLUMNS, compression=None) as w:
        w.write({"id": "a", "input_ids": np.array([BOS, 5, 6, EOS], np.uint32), "len": 4})
        w.write({"id": "b", "input_ids": np.array([BOS, 5, 6, 7], np.uint32), "len": 4})  # no EOS
        w.write({"id": "c", "input_ids": np.array([9, 5, 6, EOS], np.uint32), "len": 4})  # no BOS
        w.write({"id": "d", "input_ids": np.array([BOS, *range(10), EOS], np.uint32), "len": 12})  # > chunk size
        w.write({"id": "e", "input_ids": np.array([BOS, 5, EOS], np.uint32), "len": 7})  # len column wrong
    write_root_index(root, ["u"])
    write_json_atomic(root / "stats.json", {"samples": 5, "total_tokens_written": 999})
    write_json_atomic(root / "ettin_meta.json", {"stage": "chunk", "settings": {"chunk_size": 8},
                                                 "tokenizer": tokenizer_identity(), "upstream": []})
    text = "\n".join(verify(root))
    for what in ("last token is not EOS", "first token is not BOS", "longer than the chunk size 8",
                 "len column != number of tokens", "records 999 tokens"):
        assert what in text, text
    assert "shard.00000.mds" in text


def test_end_to_end_tokenize_chunk_split_finalize(token_dataset, tmp_path):
    from ettin_data.config import ChunkConfig

    run(ChunkConfig(inputs=[str(token_dataset)], output=str(tmp_path / "chunks"), chunk_size=256,
                          min_chunk_size=64, always_skip_size=16, workers=1))
    chunked = read_chunks(tmp_path / "chunks")
    run(SplitConfig(inputs=[str(tmp_path / "chunks")], output=str(tmp_path / "docs"), validation_fraction=0.1,
                          workers=1))
    s = run(FinalizeConfig(inputs=[str(tmp_path / "docs")], output=str(tmp_path / "final"), workers=1))
    assert s["problems"] == []
    got = {sp: _modernbert_read(tmp_path / "final", sp) for sp in ("train", "validation")}
    assert Counter(tuple(a.tolist()) for sp in got for a in got[sp]) == Counter(ids for _, ids in chunked)
    assert all(a[0] == 50281 and a[-1] == 50282 and len(a) <= 256 for sp in got for a in got[sp])
    m = load_json(tmp_path / "final" / "manifest.json")
    assert [st["stage"] for st in m["datasets"]["docs"]["stages"]] == ["convert", "tokenize", "chunk", "sample split"]
    assert m["tokenizer"]["name"] == "builtin:modernbert" and m["tokenizer"]["bos_id"] == 50281
    total = m["splits"]["train"]["tokens"] + m["splits"]["validation"]["tokens"]
    assert abs(m["splits"]["validation"]["tokens"] - 0.1 * total) < 0.05 * total


def test_verify_names_damaged_zstd_shards_of_a_chunk_dataset(tmp_path):
    root = tmp_path / "chunks"
    make_chunks(root, n_units=2, docs_per_unit=10)
    assert verify(root) == []
    shards = sorted(root.rglob("shard.*.mds.zstd"))
    data = bytearray(shards[0].read_bytes())
    data[len(data) // 2] ^= 0x01
    shards[0].write_bytes(bytes(data))
    shards[-1].write_bytes(shards[-1].read_bytes()[:100])
    problems = verify(root)
    assert any(str(shards[0]) in p and "hash" in p for p in problems), problems
    assert any(str(shards[-1]) in p and "bytes" in p for p in problems), problems
    r = CliRunner().invoke(app, ["stats", "--verify", str(root)])
    assert r.exit_code == 1
