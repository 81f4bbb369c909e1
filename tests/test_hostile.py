"""Hostile and unlucky inputs (issue 14): indexes naming files outside the dataset, broken index entries,
outputs that hold other data or overlap the input, concurrent runs, silently wrong data. Every refusal
is one line with the right exit code, and no file outside the given folders is created, changed or
removed."""

from __future__ import annotations

import fcntl
import json
import shutil

import pytest
from helpers_chunks import read_chunks
from helpers_cli import one_line, runner
from helpers_faults import tree
from helpers_hostile import Canary, chunk_dataset, copy_dataset, edit_shard, first_unit, load, point_outside, save

from ettin_data import units as U
from ettin_data.cli import app
from ettin_data.errors import InputError
from ettin_data.mds import UnitReader, find_units, read_index


def run(*args):
    args = [str(a) for a in args]
    if args[:2] == ["sample", "split"] and "--validation-fraction" not in args:
        args += ["--validation-fraction", "0.3"]
    return runner.invoke(app, args)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    chunks = chunk_dataset(root / "chunks")
    assert run("sample", "split", chunks, "-o", root / "split", "--validation-fraction", "0.3").exit_code == 0
    return root


# ---------------------------------------------------------------- the sandbox: every command, hostile paths

COMMANDS = {
    "tokenize": lambda d: ("tokenize", d["text"], "-o", d["out"], "--tokenizer", "builtin:modernbert"),
    "chunk": lambda d: ("chunk", d["tokens"], "-o", d["out"]),
    "sample split": lambda d: ("sample", "split", d["chunks"], "-o", d["out"]),
    "sample budget": lambda d: ("sample", "budget", d["chunks"], "-o", d["out"], "--target-tokens", "1000"),
    "finalize --keep-compressed": lambda d: ("finalize", d["split"], "-o", d["out"], "--keep-compressed"),
    "stats": lambda d: ("stats", d["chunks"]),
    "stats --verify": lambda d: ("stats", d["chunks"], "--verify", "--json"),
}
_INPUT = {"tokenize": "text", "chunk": "tokens", "finalize --keep-compressed": "split"}


@pytest.mark.parametrize("absolute", [False, True], ids=["dotdot", "absolute"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_sandbox_no_file_outside_the_folders_is_touched(command, absolute, clean, text_dataset, token_dataset,
                                                        tmp_path):
    box = tmp_path / "box"
    box.mkdir()
    d = {"text": box / "text", "tokens": box / "tokens", "chunks": box / "chunks", "split": box / "split",
         "out": box / "out"}
    key = _INPUT.get(command, "chunks")
    src = {"text": text_dataset, "tokens": token_dataset, "chunks": clean / "chunks", "split": clean / "split"}[key]
    copy_dataset(src, d[key])
    unit = first_unit(d[key] / "train" if key == "split" else d[key])
    canary = Canary(box / "canary.mds.zstd", b"")
    point_outside(unit, canary, absolute)
    outside = {p: p.read_bytes() for p in box.iterdir() if p.is_file()}
    res = run(*COMMANDS[command](d))
    why = "absolute path" if absolute else "'..'"
    if command == "stats --verify":  # verification lists its problems on stdout, exit 1
        problems = json.loads(res.stdout)["problems"]
        assert res.exit_code == 1 and len(problems) == 1, res.stdout
        assert why in problems[0] and str(unit / "index.json") in problems[0]
    else:
        one_line(res, 1, str(unit / "index.json"), why)
    assert canary.intact()
    assert {p: p.read_bytes() for p in box.iterdir() if p.is_file()} == outside  # nothing created or removed
    assert not d["out"].exists() or not list(d["out"].rglob("*.mds*"))  # nothing linked into the output


# ---------------------------------------------------------------- the index check, case by case

@pytest.mark.parametrize("change, words", [
    ({"raw_data": None}, "has no raw_data"),
    ({"raw_data.bytes": -5}, "not a non-negative integer"),
    ({"samples": "7"}, "samples is '7'"),
    ({"column_encodings": ["str", "ndarray:uint32", "bogus"]}, "unknown encoding 'bogus'"),
    ({"zip_data.basename": "other.mds.zstd"}, "not the compressed name"),
    ({"compression": None}, "compression is None but zip_data is set"),
    ({"raw_data.basename": "sub/../shard.00000.mds"}, "'..'"),
])
def test_bad_index_entry_is_one_line_naming_the_file(change, words, clean, tmp_path):
    ds = copy_dataset(clean / "chunks", tmp_path / "chunks")
    unit = first_unit(ds)
    edit_shard(unit, **change)
    with pytest.raises(InputError, match=words) as e:
        read_index(unit)
    assert str(unit / "index.json") in str(e.value) and "\n" not in str(e.value)
    res = run("sample", "budget", ds, "-o", tmp_path / "out", "--target-tokens", "1000")
    one_line(res, 1, str(unit / "index.json"))


def test_symlinked_shard_leaving_the_unit_and_another_units_shard_are_refused(clean, tmp_path):
    ds = copy_dataset(clean / "chunks", tmp_path / "chunks")
    unit = first_unit(ds)
    canary = Canary(tmp_path / "canary", b"unrelated")
    shard = unit / load(unit / "index.json")["shards"][0]["zip_data"]["basename"]
    shard.unlink()
    shard.symlink_to(canary.path)
    res = run("sample", "budget", ds, "-o", tmp_path / "out", "--target-tokens", "100000", "--upsample")
    one_line(res, 1, "symlink", str(canary.path))
    assert canary.intact() and canary.path.stat().st_nlink == 1
    shard.unlink()
    other = sorted(p for p in unit.parent.iterdir() if p.is_dir() and p != unit)[0]
    edit_shard(unit, **{"zip_data.basename": f"../{other.name}/shard.00000.mds.zstd",
                        "raw_data.basename": f"../{other.name}/shard.00000.mds"})
    one_line(run("stats", ds), 1, "'..'")


def test_deeply_nested_and_non_json_indexes_are_one_line(tmp_path):
    unit = tmp_path / "u"
    unit.mkdir()
    (unit / "index.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="nested too deeply"):
        UnitReader(unit)


# ---------------------------------------------------------------- outputs

def test_output_equal_to_or_overlapping_the_input_is_refused_even_with_overwrite(clean, tmp_path):
    ds = copy_dataset(clean / "chunks", tmp_path / "chunks")
    before = tree(ds)
    for out in (ds, ds / "sub", tmp_path):
        for extra in ((), ("--overwrite",)):
            line = one_line(run("sample", "split", ds, "-o", out, *extra), 2, str(out), str(ds))
            assert "--overwrite" not in line
    assert tree(ds) == before


def test_tokenize_refused_before_writing_tokenizer_json(text_dataset, tmp_path):
    ds = copy_dataset(text_dataset, tmp_path / "text")
    before = tree(ds)
    one_line(run("tokenize", ds, "-o", ds, "--tokenizer", "builtin:modernbert", "--overwrite"), 2, "destroy")
    assert tree(ds) == before and not (ds / "tokenizer.json").exists()


def test_output_that_is_a_file_is_exit_2(clean, tmp_path):
    f = tmp_path / "out"
    f.write_text("mine")
    one_line(run("sample", "split", clean / "chunks", "-o", f), 2, "is a file")
    assert f.read_text() == "mine"


def test_foreign_units_under_output_are_refused_not_deleted(clean, tmp_path):
    out = copy_dataset(clean / "chunks", tmp_path / "out")  # another dataset lives in the output folder
    before = tree(out)
    for extra in ((), ("--overwrite",)):
        line = one_line(run("sample", "split", clean / "chunks", "-o", out, *extra), 2, "did not write")
        assert "src/split_00000" in line
    assert tree(out) == before


def test_overwrite_and_rerun_delete_only_own_units(clean, tmp_path):
    out = tmp_path / "out"
    res = run("sample", "budget", clean / "chunks", "-o", out, "--target-tokens", "100000", "--upsample")
    assert res.exit_code == 0, res.stderr
    own = set(find_units(out))
    assert set(load(out / ".ettin_units.json")["units"]) >= own
    res = run("sample", "budget", clean / "chunks", "-o", out, "--target-tokens", "500", "--overwrite")
    assert res.exit_code == 0, res.stderr
    assert set(find_units(out)) < own  # units of the earlier plan, recorded as this dataset's, were removed


def test_second_run_on_a_locked_output_stops_at_once(clean, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    lock = out / ".ettin_lock"
    with open(lock, "w") as f:
        f.write("pid 4242 on otherhost\n")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_EX)
        one_line(run("sample", "split", clean / "chunks", "-o", out), 2, "in use by another run", "pid 4242")
    assert not list(out.rglob("index.json"))
    assert run("sample", "split", clean / "chunks", "-o", out).exit_code == 0  # released: the next run works
    assert not lock.exists()


def test_rank_locks_are_per_rank(clean, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".ettin_lock.rank0", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        res = run("sample", "split", clean / "chunks", "-o", out, "--rank", "1", "--world", "2")
        assert res.exit_code == 0, res.stderr
        one_line(run("sample", "split", clean / "chunks", "-o", out, "--rank", "0", "--world", "2"), 2, "in use")


# ---------------------------------------------------------------- silently wrong data

def test_convert_root_index_lists_only_its_own_units(tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text("".join(json.dumps({"id": f"a{i}", "text": f"doc {i}"}) + "\n" for i in range(6)))
    out = tmp_path / "out"
    assert run("convert", src, "-o", out, "--docs-per-shard", "2").exit_code == 0
    src.write_text("".join(json.dumps({"id": f"a{i}", "text": f"doc {i}"}) + "\n" for i in range(2)))
    res = run("convert", src, "-o", out, "--docs-per-shard", "2", "--overwrite")
    assert res.exit_code == 0, res.stderr
    samples = sum(s["samples"] for s in load(out / "index.json")["shards"])
    assert samples == 2 == load(out / "convert_stats.json")["documents"]


def test_convert_counts_an_empty_input_file(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"id": "x", "text": "hello"}) + "\n")
    (tmp_path / "b.jsonl").write_text("")
    res = run("convert", tmp_path / "a.jsonl", tmp_path / "b.jsonl", "-o", tmp_path / "out", "--json")
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["empty_sources"] == 1 and "b.jsonl" in summary["warnings"][0]


def test_symlinked_unit_folders_are_followed(clean, tmp_path):
    ds = tmp_path / "chunks"
    ds.mkdir()
    elsewhere = copy_dataset(clean / "chunks", tmp_path / "elsewhere")
    for p in elsewhere.iterdir():
        (ds / p.name).symlink_to(p)
    (ds / "index.json").unlink()
    shutil.copy(elsewhere / "index.json", ds / "index.json")
    assert find_units(ds) == find_units(elsewhere)
    res = run("sample", "split", ds, "-o", tmp_path / "out", "--validation-fraction", "0.3")
    assert res.exit_code == 0, res.stderr
    got = read_chunks(tmp_path / "out" / "train") + read_chunks(tmp_path / "out" / "validation")
    assert sorted(got) == sorted(read_chunks(elsewhere))


def test_deleted_shard_of_a_finished_unit_is_redone(clean, tmp_path):
    out = tmp_path / "out"
    args = ("sample", "split", clean / "chunks", "-o", out, "--validation-fraction", "0.3")
    assert run(*args).exit_code == 0
    unit = first_unit(out / "train")
    ref = tree(out)
    assert U.is_done(unit)
    next(unit.glob("shard.*")).unlink()
    assert not U.is_done(unit)
    res = run(*args, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["units_run"] >= 1
    assert {k: v for k, v in tree(out).items() if "seconds" not in k} == {k: v for k, v in ref.items()
                                                                         if "seconds" not in k}


def test_edited_bos_eos_ids_are_refused_by_chunk(token_dataset, tmp_path):
    ds = copy_dataset(token_dataset, tmp_path / "tokens")
    meta = load(ds / "ettin_meta.json")
    meta["tokenizer"]["bos_id"], meta["tokenizer"]["eos_id"] = 7, 8
    save(ds / "ettin_meta.json", meta)
    one_line(run("chunk", ds, "-o", tmp_path / "out"), 1, "bos_id 7", "not a special token")
    assert not (tmp_path / "out").exists()


def test_prepare_keep_folders_follow_the_same_rules(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jsonl").write_text(json.dumps({"id": "x", "text": "hello world"}) + "\n")
    before = tree(raw)
    line = one_line(run("prepare", raw / "a.jsonl", "-o", tmp_path / "out", "--tokenizer", "builtin:modernbert",
                        "--keep-text", raw, "--overwrite"), 2, str(raw))
    assert "--overwrite" not in line
    assert tree(raw) == before and not (tmp_path / "out").exists()


def test_output_of_an_earlier_version_is_adopted_only_for_the_same_stage_and_inputs(clean, tmp_path):
    out = tmp_path / "out"
    assert run("sample", "split", clean / "chunks", "-o", out).exit_code == 0
    (out / ".ettin_units.json").unlink()  # written before the record existed
    res = run("sample", "split", clean / "chunks", "-o", out, "--overwrite")
    assert res.exit_code == 0, res.stderr
    (out / ".ettin_units.json").unlink()
    before = tree(out)
    one_line(run("sample", "budget", clean / "chunks", "-o", out, "--target-tokens", "500", "--overwrite"), 2,
             "did not write")
    assert tree(out) == before
