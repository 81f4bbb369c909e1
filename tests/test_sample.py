"""sample split / budget / context / mix on synthetic chunk datasets: exact chunk accounting, document
integrity, budgets landing where specified, determinism, and zero-copy (shared inodes)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers_chunks import doc_tokens, inodes, load_json, make_chunks, new_bytes, read_chunks, tokenizer_identity
from typer.testing import CliRunner

from ettin_data import run
from ettin_data.cli import app
from ettin_data.config import BudgetConfig, ContextConfig, MixConfig, SplitConfig
from ettin_data.errors import ConfigError, InputError
from ettin_data.stages import sample_mix as mix
from ettin_data.stages import sample_split as split
from ettin_data.verify import verify


@pytest.fixture(scope="module")
def chunks(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "chunks"
    return root, make_chunks(root, n_units=5, docs_per_unit=40)


def _split(src, out, fraction=0.2, seed=42, workers=1):
    return run(SplitConfig(inputs=[str(src)], output=str(out), validation_fraction=fraction, seed=seed,
                                 workers=workers))


def _tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "seconds" not in p.name}


# ---------------------------------------------------------------- split

@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5])
def test_split_holds_out_whole_documents_and_keeps_every_chunk_once(chunks, tmp_path, fraction):
    src, all_chunks = chunks
    s = _split(src, tmp_path / "out", fraction)
    train, val = read_chunks(tmp_path / "out" / "train"), read_chunks(tmp_path / "out" / "validation")
    assert Counter(train) + Counter(val) == Counter(all_chunks)  # every chunk exactly once
    assert not {d for d, _ in train} & {d for d, _ in val}  # no document in both splits
    per_doc = doc_tokens(all_chunks)
    total = sum(per_doc.values())
    val_tokens = sum(len(ids) for _, ids in val)
    assert s["validation_tokens"] == val_tokens and s["train_tokens"] == total - val_tokens
    assert abs(val_tokens - fraction * total) <= max(per_doc.values())  # within one document
    for part in ("train", "validation"):
        root = tmp_path / "out" / part
        meta = load_json(root / "ettin_meta.json")
        assert meta["tokenizer"] == tokenizer_identity() and meta["split"] == part
        assert meta["upstream"][0]["stage"] == "chunk"
        assert (root / "tokenizer.json").read_bytes() == (src / "tokenizer.json").read_bytes()
        stats = load_json(root / "stats.json")
        assert stats["total_tokens_written"] == sum(len(ids) for _, ids in read_chunks(root))


def test_split_is_deterministic_for_a_seed_whatever_the_workers(chunks, tmp_path):
    src, _ = chunks
    _split(src, tmp_path / "a", workers=1)
    _split(src, tmp_path / "b", workers=2)
    _split(src, tmp_path / "c", seed=7, workers=1)
    a, b = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "b")
    a = {k: v for k, v in a.items() if not k.startswith(".ettin")}
    b = {k: v for k, v in b.items() if not k.startswith(".ettin")}
    assert a == b
    val_docs = lambda p: {d for d, _ in read_chunks(p / "validation")}  # noqa: E731
    assert val_docs(tmp_path / "a") != val_docs(tmp_path / "c")


def test_split_links_units_that_fall_wholly_in_one_split(chunks, tmp_path):
    src, _ = chunks
    _split(src, tmp_path / "out", fraction=0.01)
    # with 5 units and 1% held out (2 of 200 documents), at least one unit has no validation document: it is hard-linked
    train_units = sorted(p.parent for p in (tmp_path / "out" / "train").rglob("index.json") if p.parent.name
                         .startswith("split_"))
    val_units = {p.parent.relative_to(tmp_path / "out" / "validation")
                 for p in (tmp_path / "out" / "validation").rglob("index.json") if p.parent.name.startswith("split_")}
    whole = [u for u in train_units if u.relative_to(tmp_path / "out" / "train") not in val_units]
    assert whole
    for u in whole:
        rel = u.relative_to(tmp_path / "out" / "train")
        for shard in u.glob("shard.*"):
            assert os.stat(shard).st_ino == os.stat(src / rel / shard.name).st_ino


def test_split_errors_when_validation_would_be_empty(tmp_path):
    one = tmp_path / "one"
    make_chunks(one, n_units=1, docs_per_unit=1)
    with pytest.raises(InputError, match="split would be empty"):
        _split(one, tmp_path / "o1", 0.3)
    few = tmp_path / "few"
    make_chunks(few, n_units=1, docs_per_unit=3)
    with pytest.raises(InputError, match="validation split would be empty"):
        _split(few, tmp_path / "o2", 0.001)
    assert not (tmp_path / "o2" / "train").exists()


@pytest.fixture(scope="module")
def lumpy(tmp_path_factory):
    """Many units, some holding very large documents (up to 60 chunks): a plain prefix-of-documents split
    stops at the first large document and misses F."""
    root = tmp_path_factory.mktemp("lumpy") / "chunks"
    chunks = make_chunks(root, n_units=24, docs_per_unit=30, source="small", seed=1)
    chunks += make_chunks(root, n_units=8, docs_per_unit=6, source="large", seed=2, max_chunks=60)
    return root, chunks


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.2])
def test_split_at_scale_meets_fraction_and_rewrites_at_most_one_unit(lumpy, tmp_path, fraction, monkeypatch):
    src, all_chunks = lumpy
    reads = []
    real = split.unit_ids_lengths
    monkeypatch.setattr(split, "unit_ids_lengths", lambda p, *a, **k: reads.append(p) or real(p, *a, **k))
    s = _split(src, tmp_path / "out", fraction)
    assert len({str(p) for p in reads}) <= split.CUT_TRIES + 1  # planning reads ids of the cut candidates only
    train, val = read_chunks(tmp_path / "out" / "train"), read_chunks(tmp_path / "out" / "validation")
    assert Counter(train) + Counter(val) == Counter(all_chunks)
    assert not {d for d, _ in train} & {d for d, _ in val}
    total = sum(len(ids) for _, ids in all_chunks)
    achieved = sum(len(ids) for _, ids in val) / total
    assert abs(achieved - fraction) <= 0.1 * fraction, (achieved, fraction)
    assert s["units_cut"] <= 1
    unit_bytes = [sum(f.stat().st_size for f in d.glob("shard.*")) for d in src.rglob("split_*")]
    src_inodes = inodes(src)
    shard_written = sum(f.stat().st_size for f in (tmp_path / "out").rglob("shard.*")
                        if f.stat().st_ino not in src_inodes)
    assert shard_written == s["bytes_written"] <= fraction * sum(unit_bytes) + max(unit_bytes)


# ---------------------------------------------------------------- budget

def _units_tokens(src: Path) -> dict[str, int]:
    return {p.parent.relative_to(src).as_posix(): load_json(p)["total_tokens_written"]
            for p in src.rglob("split_*/stats.json")}


def test_budget_downsamples_whole_units_within_one_unit(chunks, tmp_path):
    src, _ = chunks
    unit_tokens = _units_tokens(src)
    total = sum(unit_tokens.values())
    target = total // 2
    s = run(BudgetConfig(inputs=[str(src)], output=str(tmp_path / "out"), target_tokens=target, workers=1))
    got = read_chunks(tmp_path / "out")
    assert s["achieved_tokens"] == sum(len(ids) for _, ids in got)
    assert target <= s["achieved_tokens"] < target + max(unit_tokens.values())
    summary = load_json(tmp_path / "out" / "sampling_summary.json")
    assert summary["repeats"] == 0 and len({u["unit"] for u in summary["units"]}) == len(summary["units"])
    for u in summary["units"]:  # whole units, hard-linked
        assert u["tokens"] == unit_tokens[u["unit"]]
        for shard in (tmp_path / "out" / u["output"]).glob("shard.*"):
            assert os.stat(shard).st_ino == os.stat(src / u["unit"] / shard.name).st_ino
    again = run(BudgetConfig(inputs=[str(src)], output=str(tmp_path / "again"), target_tokens=target,
                                    workers=2))
    assert read_chunks(tmp_path / "again") == got and again["achieved_tokens"] == s["achieved_tokens"]


def test_budget_exact_trims_the_last_unit_to_within_one_sample(chunks, tmp_path):
    src, all_chunks = chunks
    target = 12_345
    s = run(BudgetConfig(inputs=[str(src)], output=str(tmp_path / "out"), target_tokens=target, exact=True,
                                workers=1))
    got = read_chunks(tmp_path / "out")
    longest = max(len(ids) for _, ids in all_chunks)
    assert target <= s["achieved_tokens"] == sum(len(ids) for _, ids in got) < target + longest
    assert not Counter(got) - Counter(all_chunks)  # only input chunks, none twice
    trimmed = [u for u in load_json(tmp_path / "out" / "sampling_summary.json")["units"] if u["trimmed_to_samples"]]
    assert len(trimmed) == 1


def test_budget_upsamples_with_hard_links_and_records_repeats(chunks, tmp_path):
    src, all_chunks = chunks
    total = sum(len(ids) for _, ids in all_chunks)
    target = int(2.5 * total)
    with pytest.raises(InputError, match="--upsample"):
        run(BudgetConfig(inputs=[str(src)], output=str(tmp_path / "no"), target_tokens=target, workers=1))
    s = run(BudgetConfig(inputs=[str(src)], output=str(tmp_path / "out"), target_tokens=target,
                                upsample=True, workers=1))
    got = Counter(read_chunks(tmp_path / "out"))
    assert target <= s["achieved_tokens"] < target + max(_units_tokens(src).values())
    assert all(got[c] >= 2 for c in all_chunks)  # two full passes, then part of a third
    summary = load_json(tmp_path / "out" / "sampling_summary.json")
    assert summary["repeats"] == s["repeats"] == sum(1 for u in summary["units"] if u["repeat"]) > 0
    assert {u["output"] for u in summary["units"] if u["repeat"] == 2} == {
        f"{u['unit']}-rep2" for u in summary["units"] if u["repeat"] == 2}
    # zero-copy: every shard file of the output is an inode of the input; only small JSON files are new
    shard_inodes = {os.stat(p).st_ino for p in (tmp_path / "out").rglob("shard.*")}
    assert shard_inodes <= inodes(src)
    linked, new = new_bytes(tmp_path / "out", src)
    input_bytes = sum(p.stat().st_size for p in src.rglob("shard.*"))
    assert input_bytes <= linked <= input_bytes + 100  # the shards (+ tokenizer.json), each inode once
    # the only new files are small JSON metadata (index, stats, length buckets, .done: ~2 KB per unit here,
    # whatever the unit's size): the 2.5x output adds no shard bytes
    shared = inodes(src)
    new_files = {p.name for p in (tmp_path / "out").rglob("*") if p.is_file() and os.stat(p).st_ino not in shared}
    assert new_files <= {"index.json", "stats.json", "token_decile.json", ".done", "sampling_summary.json",
                         "ettin_meta.json", ".ettin_settings.json", ".ettin_units.json"}
    assert new < 0.25 * input_bytes


# ---------------------------------------------------------------- context

def test_context_draws_long_chunks_until_n_tokens(tmp_path):
    src = tmp_path / "long"
    all_chunks = make_chunks(src, n_units=3, docs_per_unit=30, chunk_size=3000, seed=3)
    # a unit without any chunk of 2000+ tokens: its length buckets say so, and it is never read
    short = tmp_path / "long" / "zshort" / "split_00000"
    make_chunks(tmp_path / "tmp_short", n_units=1, docs_per_unit=5, chunk_size=900, seed=4)
    shutil.copytree(tmp_path / "tmp_short" / "src" / "split_00000", short)
    for shard in short.glob("shard.*"):
        shard.write_bytes(b"unreadable")
    n = 40_000
    s = run(ContextConfig(inputs=[str(src)], output=str(tmp_path / "out"), num_tokens=n, min_length=2000,
                                  workers=1))
    got = read_chunks(tmp_path / "out")
    assert all(len(ids) >= 2000 for _, ids in got)
    assert n <= s["achieved_tokens"] == sum(len(ids) for _, ids in got) < n + 3000
    assert not Counter(got) - Counter(all_chunks)  # drawn without replacement from the input
    assert not (tmp_path / "out" / "zshort").exists()
    with pytest.raises(InputError, match="fewer than --num-tokens"):
        run(ContextConfig(inputs=[str(src)], output=str(tmp_path / "x"), num_tokens=10**8, min_length=2000,
                                  workers=1))


# ---------------------------------------------------------------- mix

def test_mix_plans_and_achieves_each_source_share(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    ca = make_chunks(a, n_units=6, docs_per_unit=15, source="web", seed=1)
    cb = make_chunks(b, n_units=2, docs_per_unit=10, source="code", seed=2)
    ta, tb = sum(len(x) for _, x in ca), sum(len(x) for _, x in cb)
    total = ta  # web is downsampled to 60% of its size, code upsampled
    (tmp_path / "mix.toml").write_text(
        f'total_tokens = {total}\n[sources.web]\npath = "a"\nproportion = 0.6\n'
        f'[sources.code]\npath = "{b}"\nproportion = 0.4\n')
    s = run(MixConfig(inputs=[str(tmp_path / "mix.toml")], output=str(tmp_path / "out"), workers=1))
    unit_max = {n: max(_units_tokens(p).values()) for n, p in (("web", a), ("code", b))}
    for name, share in (("web", 0.6), ("code", 0.4)):
        src = s["sources"][name]
        assert src["planned"] == round(share * total)
        assert src["planned"] <= src["achieved"] < src["planned"] + unit_max[name]
        got = read_chunks(tmp_path / "out" / name)
        assert sum(len(x) for _, x in got) == src["achieved"]
    assert s["sources"]["code"]["repeats"] > 0 and 0.4 * total > tb
    written = load_json(tmp_path / "out" / "sampling_summary.json")
    assert written["sources"] == s["sources"]
    meta = load_json(tmp_path / "out" / "ettin_meta.json")
    assert [m["stage"] for m in meta["upstream"]] == ["chunk", "chunk"] and meta["tokenizer"]["bos_id"] == 50281
    assert {os.stat(p).st_ino for p in (tmp_path / "out").rglob("shard.*")} <= inodes(a) | inodes(b)


def test_mix_file_errors(tmp_path):
    make_chunks(tmp_path / "a", n_units=1, docs_per_unit=3)
    make_chunks(tmp_path / "b", n_units=1, docs_per_unit=3, tokenizer=tokenizer_identity("other", "cd" * 32))
    cases = {
        "bad = 1\n": "unknown key",
        "total_tokens = 10\n[sources.a]\npath = 'a'\n": "exactly one of proportion or tokens",
        "total_tokens = 10\n[sources.a]\npath = 'a'\nproportion = 0.5\n": "add up",
        "[sources.a]\npath = 'a'\nproportion = 0.5\n": "total_tokens is required",
    }
    for i, (text, msg) in enumerate(cases.items()):
        (tmp_path / f"m{i}.toml").write_text(text)
        with pytest.raises(ConfigError, match=msg):
            mix.Mix().plan(MixConfig(inputs=[str(tmp_path / f"m{i}.toml")], output=str(tmp_path / "o"), workers=1))
    (tmp_path / "tok.toml").write_text("[sources.a]\npath='a'\ntokens=100\n[sources.b]\npath='b'\ntokens=100\n")
    with pytest.raises(InputError, match="share a tokenizer"):
        mix.Mix().plan(MixConfig(inputs=[str(tmp_path / "tok.toml")], output=str(tmp_path / "o"), workers=1))


# ---------------------------------------------------------------- CLI

def test_cli_sample_commands(chunks, tmp_path):
    src, _ = chunks
    r = CliRunner().invoke(app, ["sample", "split", str(src), "-o", str(tmp_path / "s"), "--validation-fraction",
                                 "0.1", "-w", "1", "-q", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["validation_tokens"] > 0
    r = CliRunner().invoke(app, ["sample", "split", str(src), "-o", str(tmp_path / "s2"), "--validation-fraction",
                                 "1.5"])
    assert r.exit_code == 2 and "--validation-fraction" in r.output
    r = CliRunner().invoke(app, ["sample", "budget", str(src), "-o", str(tmp_path / "b"), "--target-tokens",
                                 str(10**9), "-w", "1", "-q"])
    assert r.exit_code == 1 and "--upsample" in r.output
    r = CliRunner().invoke(app, ["sample", "budget", str(src), "-o", str(tmp_path / "b"), "--target-tokens",
                                 "5000", "--upsample", "--exact", "-w", "1", "-q", "--json"])
    assert r.exit_code == 0 and 5000 <= json.loads(r.output)["achieved_tokens"] < 5000 + 256
    assert np.isclose(json.loads(r.output)["achieved_tokens"], 5000, atol=256)


def test_rerun_resumes_and_changed_settings_are_refused(chunks, tmp_path):
    src, _ = chunks
    first = _split(src, tmp_path / "out", 0.2)
    before = _tree_digest(tmp_path / "out" / "train")
    again = _split(src, tmp_path / "out", 0.2)
    assert again["units_skipped"] == first["units"] and again["units_run"] == 0
    assert _tree_digest(tmp_path / "out" / "train") == before
    assert verify(tmp_path / "out") == []
    with pytest.raises(ConfigError, match="other settings"):
        _split(src, tmp_path / "out", 0.3)
    mixfile = tmp_path / "mix.toml"
    mixfile.write_text(f'[sources.a]\npath = "{src}"\ntokens = 5000\n')
    run(MixConfig(inputs=[str(mixfile)], output=str(tmp_path / "mix"), workers=1))
    mixfile.write_text(f'[sources.a]\npath = "{src}"\ntokens = 9000\n')
    with pytest.raises(ConfigError, match="another mix"):
        run(MixConfig(inputs=[str(mixfile)], output=str(tmp_path / "mix"), workers=1))
    s = run(MixConfig(inputs=[str(mixfile)], output=str(tmp_path / "mix"), workers=1, overwrite=True))
    assert 9000 <= s["sources"]["a"]["achieved"] == s["achieved_tokens"]
    # --overwrite with a smaller plan: units of the earlier plan are removed, the index covers the new plan only
    run(BudgetConfig(inputs=[str(src)], output=str(tmp_path / "b"), target_tokens=40_000, workers=1))
    small = run(BudgetConfig(inputs=[str(src)], output=str(tmp_path / "b"), target_tokens=5_000, workers=1,
                                    overwrite=True))
    got = sum(len(x) for _, x in read_chunks(tmp_path / "b"))
    assert got == small["achieved_tokens"] < 5_000 + max(_units_tokens(src).values())
    assert len(list((tmp_path / "b").rglob("split_*/index.json"))) == small["units_chosen"]
    assert verify(tmp_path / "b") == []
