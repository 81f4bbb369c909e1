"""Reliability under damaged data, broken accounting, full disks and read-only outputs.

Corrupt data: a truncated or bit-flipped shard or a missing shard fails only its unit (named, with what
is wrong), the other units finish, the run exits 1; a broken index.json is named before any work;
``stats`` fails with one line and ``stats --verify`` lists every problem.
Accounting: every stage refuses to mark a unit done when its numbers do not add up, and the summaries
of a real run add up from stage to stage.
Disk full / read-only: one readable line naming the output; finished units are left untouched.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers_faults import (
    check_partial_state,
    cli,
    flip_bit,
    mounted_tmpfs,
    remount_readonly,
    tree,
    tree_diff,
    truncate,
)
from typer.testing import CliRunner

from ettin_data import run
from ettin_data.cli import app
from ettin_data.errors import EttinError, UnitFailure
from ettin_data.mds import ShardWriter, UnitReader, find_units
from ettin_data.stats import Stats

runner = CliRunner()
UNIT = "python-docs/split_00002"  # the unit we damage (of 5)


def invoke(*args: str):
    r = runner.invoke(app, [*args, "-w", "1", "-q"])
    assert "Traceback" not in r.output, r.output
    return r


def errors(r) -> list[str]:
    return [ln for ln in r.output.splitlines() if ln.startswith("error:")]


def shard_of(root: Path, unit: str = UNIT) -> Path:
    (f,) = sorted((root / unit).glob("shard.*"))
    return f


def damage(root: Path, how: str, unit: str = UNIT) -> tuple[Path, str]:
    """Damage one unit of a dataset copy; returns (file named in the error, what the error says)."""
    shard = shard_of(root, unit)
    if how == "truncated":
        truncate(shard, 0.6)
        return shard, "truncated"
    if how == "bitflip":
        flip_bit(shard, shard.stat().st_size // 2)
        return shard, "hash does not match"
    if how == "missing":
        shard.unlink()
        return shard, "missing"
    if how == "index_not_json":
        idx = root / unit / "index.json"
        idx.write_text(idx.read_text()[:100])
        return idx, "not valid JSON"
    raise ValueError(how)


@pytest.fixture()
def text_copy(text_dataset, tmp_path) -> Path:
    dst = tmp_path / "text"
    shutil.copytree(text_dataset, dst)
    return dst


@pytest.fixture()
def token_copy(token_dataset, tmp_path) -> Path:
    dst = tmp_path / "tokens"
    shutil.copytree(token_dataset, dst)
    return dst


# ---------------------------------------------------------------- corrupt data


@pytest.mark.parametrize("how", ["truncated", "bitflip", "missing"])
def test_bit_flips_and_truncation_are_detected_by_the_reader(text_copy, how):
    """The native reader checks size and sha1 of every shard file it reads (zstd frames carry no checksum,
    so a flipped bit could otherwise decode into silently different text)."""
    path, what = damage(text_copy, how)
    with pytest.raises(EttinError, match=what) as e:
        list(UnitReader(text_copy / UNIT).iter_samples())
    assert str(path) in str(e.value)
    others = [u for u in find_units(text_copy) if u != UNIT]
    assert sum(len(list(UnitReader(text_copy / u).iter_samples())) for u in others) == 247 - 50


def test_raw_shard_bit_flip_is_detected(tmp_path):
    with ShardWriter(tmp_path, {"id": "str", "input_ids": "ndarray:uint32"}, compression=None) as w:
        for i in range(20):
            w.write({"id": str(i), "input_ids": np.arange(1, 100 + i, dtype=np.uint32)})
    flip_bit(tmp_path / "shard.00000.mds", (tmp_path / "shard.00000.mds").stat().st_size - 10)
    with pytest.raises(EttinError, match="sha1 hash does not match"):
        list(UnitReader(tmp_path).iter_samples())


@pytest.mark.parametrize("how", ["truncated", "bitflip", "missing", "index_not_json"])
def test_stats_names_the_damaged_file(text_copy, how):
    path, what = damage(text_copy, how)
    # plain stats reads through the (intact) root index; a broken unit index.json is a --verify finding
    r = runner.invoke(app, ["stats", str(text_copy), *(["--verify", "--json"] if how == "index_not_json" else [])])
    assert r.exit_code == 1 and "Traceback" not in r.output
    if how == "index_not_json":
        assert str(path) in r.output and what in r.output
        return
    (line,) = errors(r)
    assert str(path) in line and what in line


def test_stats_verify_reports_every_problem(token_copy):
    damaged = [damage(token_copy, how, f"python-docs/split_{k:05d}")
               for k, how in enumerate(["truncated", "bitflip", "missing"])]
    r = runner.invoke(app, ["stats", str(token_copy), "--verify", "--json"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    out = r.output
    for path, _ in damaged:
        assert str(path) in out, (path, out)
    # a unit index.json that is not JSON is reported too
    idx, _ = damage(token_copy, "index_not_json", "python-docs/split_00003")
    r = runner.invoke(app, ["stats", str(token_copy), "--verify", "--json"])
    assert r.exit_code == 1 and str(idx) in r.output and "not valid JSON" in r.output


@pytest.mark.parametrize("stage", ["tokenize", "chunk"])
@pytest.mark.parametrize("how", ["truncated", "bitflip", "missing"])
def test_stage_fails_only_the_damaged_unit(stage, how, text_copy, token_copy, tmp_path):
    src = text_copy if stage == "tokenize" else token_copy
    path, what = damage(src, how)
    out = tmp_path / "out"
    args = [stage, str(src), "-o", str(out)] + (["-t", "builtin:modernbert"] if stage == "tokenize" else [])
    r = invoke(*args)
    assert r.exit_code == 1, r.output
    lines = errors(r)
    assert any(f"unit {UNIT}:" in ln and str(path) in ln and what in ln for ln in lines), lines
    assert "1 of 5 units failed" in lines[-1]
    assert sorted(u for u in find_units(out)) == [u for u in find_units(src) if u != UNIT]
    assert all((out / u / ".done").is_file() for u in find_units(out))
    assert not (out / UNIT).exists() and not (out / "index.json").exists()


@pytest.mark.parametrize("stage", ["tokenize", "chunk"])
def test_broken_unit_index_fails_that_unit_only(stage, text_copy, token_copy, tmp_path):
    src = text_copy if stage == "tokenize" else token_copy
    path, what = damage(src, "index_not_json")
    out = tmp_path / "out"
    args = [stage, str(src), "-o", str(out)] + (["-t", "builtin:modernbert"] if stage == "tokenize" else [])
    r = invoke(*args)
    assert r.exit_code == 1
    lines = errors(r)
    assert any(f"unit {UNIT}:" in ln and str(path) in ln and what in ln for ln in lines), lines
    assert "1 of 5 units failed" in lines[-1]
    assert sorted(find_units(out)) == [u for u in find_units(src) if u != UNIT]
    assert all((out / u / ".done").is_file() for u in find_units(out))
    assert not (out / "index.json").exists()


# ---------------------------------------------------------------- token accounting


@pytest.fixture(scope="module")
def chain(token_dataset, tmp_path_factory):
    """chunk -> sample split -> finalize on the shared token dataset; (paths, summaries)."""
    from ettin_data.config import ChunkConfig, FinalizeConfig, SplitConfig

    root = tmp_path_factory.mktemp("chain")
    p = {"tokens": token_dataset, "chunks": root / "chunks", "split": root / "split", "final": root / "final"}
    s = {"chunk": run(ChunkConfig(inputs=[str(token_dataset)], output=str(p["chunks"]), workers=1,
                                        **CHUNK_SETTINGS))}
    s["split"] = run(SplitConfig(inputs=[str(p["chunks"])], output=str(p["split"]), workers=1,
                                       validation_fraction=0.1))
    s["finalize"] = run(FinalizeConfig(inputs=[str(p["split"])], output=str(p["final"]), workers=1))
    return p, s


CHUNK_SETTINGS = {"chunk_size": 256, "min_chunk_size": 64, "always_skip_size": 16, "backfill": True}


def _read(root: Path) -> list[dict]:
    return list(UnitReader(root).iter_samples())


def test_accounting_closes_on_real_data(text_dataset, chain):
    from ettin_data.units import read_done

    paths, summ = chain
    conv = json.loads((text_dataset / "convert_stats.json").read_text())
    assert conv["documents_in"] == conv["documents"] + sum(conv["skipped"].values()) == 247
    assert len(_read(text_dataset)) == conv["documents"]

    tok = sum((read_done(paths["tokens"] / u) for u in find_units(paths["tokens"])), Stats())
    assert tok["documents_in"] == conv["documents"]
    assert tok["documents_in"] == tok["documents_written"] + tok["skipped.empty_tokens"]
    docs = _read(paths["tokens"])
    num_tokens = json.loads((paths["tokens"] / "num_tokens.json").read_text())
    assert len(docs) == tok["documents_written"] == num_tokens["documents"]
    assert sum(len(d["input_ids"]) for d in docs) == sum(d["len"] for d in docs) == num_tokens["total_tokens"]

    ch = summ["chunk"]
    assert ch["documents"] == len(docs)
    assert ch["content_tokens_in"] == num_tokens["total_tokens"] - 2 * len(docs)  # [CLS] and [SEP] stripped
    assert ch["content_tokens_in"] == (ch["content_tokens_written"] + ch["total_tokens_skipped"]
                                       - ch["total_duplicated_tokens"])
    chunks = _read(paths["chunks"])
    assert len(chunks) == ch["samples"]
    assert sum(len(c["input_ids"]) for c in chunks) == ch["total_tokens_written"]
    assert ch["total_tokens_written"] == ch["content_tokens_written"] + 2 * ch["samples"]

    sp = summ["split"]
    assert sp["train_samples"] + sp["validation_samples"] == ch["samples"]
    assert sp["train_tokens"] + sp["validation_tokens"] == ch["total_tokens_written"]
    train, val = _read(paths["split"] / "train"), _read(paths["split"] / "validation")
    assert (len(train), len(val)) == (sp["train_samples"], sp["validation_samples"])
    assert not {c["id"] for c in train} & {c["id"] for c in val}  # whole documents: no leakage
    assert sorted(c["input_ids"].tobytes() for c in train + val) == sorted(c["input_ids"].tobytes() for c in chunks)

    manifest = json.loads((paths["final"] / "manifest.json").read_text())
    for split_name in ("train", "validation"):
        assert manifest["splits"][split_name]["samples"] == sp[f"{split_name}_samples"]
        assert manifest["splits"][split_name]["tokens"] == sp[f"{split_name}_tokens"]
        final = _read(paths["final"] / split_name)
        assert [c["input_ids"].tobytes() for c in final] == [
            c["input_ids"].tobytes() for c in (train if split_name == "train" else val)]


@pytest.fixture()
def drop_third_write(monkeypatch):
    """Make the shard writer silently lose the 3rd sample it is given (a simulated bug). ``write_raw`` is
    where every sample goes (``write`` encodes a dict and calls it; tokenize's flat path calls it directly),
    and ``write_shard`` (finalize's whole shards) is made to go there too."""
    orig = ShardWriter.write_raw
    calls = {"n": 0}

    def write_raw(self, data):
        calls["n"] += 1
        if calls["n"] != 3:
            orig(self, data)

    def write_shard(self, shard):
        for sample in shard.raw_samples():
            self.write_raw(sample)

    monkeypatch.setattr(ShardWriter, "write_raw", write_raw)
    monkeypatch.setattr(ShardWriter, "write_shard", write_shard)
    return calls


@pytest.mark.parametrize("stage", ["convert", "tokenize", "chunk", "split", "finalize"])
def test_a_lost_sample_fails_the_unit(stage, drop_third_write, text_dataset, chain, tmp_path):
    from ettin_data import config as C

    paths, _ = chain
    out = str(tmp_path / "out")
    cfg = {
        "convert": lambda: C.ConvertConfig(inputs=["builtin:python-docs"], output=out, docs_per_shard=50, workers=1),
        "tokenize": lambda: C.TokenizeConfig(inputs=[str(text_dataset)], output=out, tokenizer="builtin:modernbert",
                                             workers=1),
        "chunk": lambda: C.ChunkConfig(inputs=[str(paths["tokens"])], output=out, workers=1, **CHUNK_SETTINGS),
        "split": lambda: C.SplitConfig(inputs=[str(paths["chunks"])], output=out, workers=1, validation_fraction=0.1),
        "finalize": lambda: C.FinalizeConfig(inputs=[str(paths["split"])], output=out, workers=1),
    }[stage]
    with pytest.raises(UnitFailure, match="accounting does not close") as e:
        run(cfg())
    assert drop_third_write["n"] > 3
    (unit, msg), *_ = e.value.failures
    assert not (Path(out) / unit / ".done").exists() or stage == "convert"
    assert not (Path(out) / "index.json").exists()


# ---------------------------------------------------------------- disk full and read-only outputs


@pytest.fixture(scope="module")
def convert_ref(tmp_path_factory) -> Path:
    from ettin_data.config import ConvertConfig

    out = tmp_path_factory.mktemp("convert_ref") / "out"
    run(ConvertConfig(inputs=["builtin:python-docs"], output=str(out), docs_per_shard=10, workers=1))
    return out


def _stage_args(stage: str, text_dataset: Path, out: Path) -> list[str]:
    if stage == "convert":
        return ["convert", "builtin:python-docs", "--docs-per-shard", "10", "-o", str(out), "-w", "1", "-q"]
    return ["tokenize", str(text_dataset), "-t", "builtin:modernbert", "-o", str(out), "-w", "1", "-q"]


def _done_files(root: Path) -> dict[str, int]:
    """inode of every file in a finished unit (an unchanged inode: the file was not rewritten)."""
    return {p.relative_to(root).as_posix(): p.stat().st_ino for d in root.rglob(".done")
            for p in d.parent.iterdir() if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("stage,size", [("convert", "400k"), ("tokenize", "1800k")])
def test_disk_full_is_one_line_and_keeps_finished_units(stage, size, text_dataset, token_dataset, convert_ref,
                                                        tmp_path):
    ref = tree(convert_ref if stage == "convert" else token_dataset)
    with mounted_tmpfs(tmp_path / "mnt", size=size) as mnt:
        out = mnt / "out"
        res = cli(*_stage_args(stage, text_dataset, out))
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
        assert f"no space left on the device of {out}" in res.stderr, res.stderr
        check_partial_state(out, ref)  # finished units are complete and equal to a normal run's
        kept = _done_files(out)
        assert kept, "the disk filled before any unit finished: make the tmpfs bigger"
        assert not (out / "index.json").exists()
        r = os.system(f"mount -o remount,size=16m {mnt}")
        assert r == 0
        res = cli(*_stage_args(stage, text_dataset, out))
        assert res.returncode == 0, res.stderr
        assert not tree_diff(ref, tree(out))
        now = _done_files(out)
        assert {k: now[k] for k in kept} == kept  # units finished before the disk filled were not rewritten


def test_read_only_output_is_one_line_and_changes_nothing(convert_ref, tmp_path):
    ref = tree(convert_ref)
    with mounted_tmpfs(tmp_path / "mnt", size="8m") as mnt:
        out = mnt / "out"
        shutil.copytree(convert_ref, out)
        for name in ("index.json", "ettin_meta.json", "convert_stats.json", "python-docs/.done"):
            (out / name).unlink()  # as left by an interrupted run: the last unit unfinished
        shutil.rmtree(out / "python-docs" / "split_00024")
        before = tree(out)
        remount_readonly(mnt)
        res = cli(*_stage_args("convert", Path(), out))
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
        lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and f"{out} is on a read-only file system" in lines[0], res.stderr
        assert tree(out) == before
        assert os.system(f"mount -o remount,rw {mnt}") == 0
        res = cli(*_stage_args("convert", Path(), out))
        assert res.returncode == 0, res.stderr
        assert not tree_diff(ref, tree(out))


def test_output_folder_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("x")
    res = cli("convert", "builtin:python-docs", "-o", str(tmp_path / "file" / "out"), "-w", "1", "-q")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert str(tmp_path / "file") in line


# ---------------------------------------------------------------- --overwrite never leaves stale data visible


@pytest.mark.slow
def test_overwrite_with_fewer_units_leaves_no_stale_units_or_index(tmp_path, monkeypatch, convert_ref):
    from ettin_data.config import ConvertConfig

    out = tmp_path / "out"
    shutil.copytree(convert_ref, out)  # a finished run with 25 units of 10 documents
    cfg = ConvertConfig(inputs=["builtin:python-docs"], output=str(out), docs_per_shard=20, workers=1,
                        overwrite=True)
    orig, calls = ShardWriter.write, {"n": 0}

    def failing_write(self, sample):
        calls["n"] += 1
        if calls["n"] == 70:
            raise OSError(28, "No space left on device")
        orig(self, sample)

    monkeypatch.setattr(ShardWriter, "write", failing_write)
    with pytest.raises(UnitFailure, match="no space left on the device of"):
        run(cfg)
    assert not (out / "index.json").exists()  # the old root index named units that are being replaced
    monkeypatch.setattr(ShardWriter, "write", orig)
    s = run(cfg)
    assert s["units"] == 13 and s["documents"] == 247
    assert find_units(out) == [f"python-docs/split_{i:05d}" for i in range(13)]
    assert len(_read(out)) == 247
    fresh = tmp_path / "fresh"
    run(ConvertConfig(inputs=["builtin:python-docs"], output=str(fresh), docs_per_shard=20, workers=1))
    assert not tree_diff(tree(fresh), tree(out))


@pytest.mark.parametrize("stage", ["tokenize", "chunk"])
def test_a_document_lost_while_reading_fails_the_unit(stage, monkeypatch, text_dataset, chain, tmp_path):
    """documents in (the input unit's index) = written + skipped: a reader that loses one is caught."""
    from ettin_data import config as C
    from ettin_data.stages import chunk

    paths, _ = chain
    if stage == "tokenize":
        from ettin_data.stages import tokenize

        orig = tokenize._batches

        def lossy(reader, has_domain, batch_size):
            for k, (ids, texts, domains) in enumerate(orig(reader, has_domain, batch_size)):
                if k == 0:  # the third document of the unit is lost
                    ids, texts = ids[:2] + ids[3:], texts[:2] + texts[3:]
                    domains = domains[:2] + domains[3:] if domains is not None else None
                yield ids, texts, domains

        monkeypatch.setattr(tokenize, "_batches", lossy)
        cfg = C.TokenizeConfig(inputs=[str(text_dataset)], output=str(tmp_path / "o"), tokenizer="builtin:modernbert",
                               workers=1)
    else:
        orig_batches = chunk._batches

        def lossy_docs(*args):
            for k, (ids, flat, lengths, domains) in enumerate(orig_batches(*args)):
                if k == 0:  # the third document of the unit is lost
                    a, b = int(lengths[:2].sum()), int(lengths[:3].sum())
                    ids, flat, lengths = ids[:2] + ids[3:], np.concatenate([flat[:a], flat[b:]]), \
                        np.concatenate([lengths[:2], lengths[3:]])
                    domains = domains[:2] + domains[3:] if domains is not None else None
                yield ids, flat, lengths, domains

        monkeypatch.setattr(chunk, "_batches", lossy_docs)
        cfg = C.ChunkConfig(inputs=[str(paths["tokens"])], output=str(tmp_path / "o"), workers=1, **CHUNK_SETTINGS)
    with pytest.raises(UnitFailure, match="accounting does not close"):
        run(cfg)
    assert not list((tmp_path / "o").rglob(".done"))
