"""convert inside one source: parts (JSONL byte ranges, Parquet row groups, Arrow files, hub shards) give the
same documents as reading the source whole, in the same order, with exact file:line; unit boundaries depend
only on the input and --part-size-mb (never on --workers or a kill and resume)."""

from __future__ import annotations

import hashlib
import json
import random
import string
from pathlib import Path

import pytest
from helpers_faults import cli, run_killed_after

from ettin_data import run
from ettin_data.config import ConvertConfig
from ettin_data.errors import UnitFailure
from ettin_data.mds import UnitReader, find_units
from ettin_data.parts import grouped_parts, jsonl_parts

MIB = 1 << 20


def _docs(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)  # incompressible text, so Parquet files are as large as the JSONL
    return [{"text": f"doc {i} " + "".join(rng.choices(string.ascii_letters + " \n'", k=rng.randint(1, 900)))}
            for i in range(n)]


def _jsonl(path: Path, docs: list[dict], blank_every: int = 0) -> Path:
    with open(path, "w") as f:
        for i, d in enumerate(docs):
            if blank_every and i % blank_every == 0:
                f.write("\n")  # blank lines shift line numbers: ids (file:line) must stay exact
            f.write(json.dumps(d) + "\n")
    return path


def _run(inputs, out: Path, **kw) -> dict:
    kw.setdefault("docs_per_shard", 500)
    return run(ConvertConfig(inputs=[str(i) for i in inputs], output=str(out), **kw))


def _read(out: Path) -> list[tuple[str, str]]:
    return [(s["id"], s["text"]) for u in find_units(out) for s in UnitReader(out / u).iter_samples()]


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".ettin_logs" not in p.parts}


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, list[dict]]:
    d = tmp_path_factory.mktemp("parts")
    docs = _docs(7000)
    return _jsonl(d / "big.jsonl", docs, blank_every=997), docs


def test_jsonl_cuts_are_line_starts_with_exact_line_numbers(big):
    path, _ = big
    data = path.read_bytes()
    parts = jsonl_parts(str(path), MIB)
    assert len(parts) == -(-len(data) // MIB) and parts[0].start == 0 and parts[-1].end == len(data)
    for a, b in zip(parts, parts[1:], strict=False):
        assert a.end == b.start and data[b.start - 1:b.start] == b"\n" and b.start >= b.index * MIB
        assert b.first == data[:b.start].count(b"\n") + 1
    assert jsonl_parts(str(path), 64 * MIB)[0].count == 1


def test_grouped_parts_gather_pieces_until_the_size():
    parts = grouped_parts([5, 5, 5, 20, 1, 1], [1, 2, 3, 4, 5, 6], 10)
    assert [(p.start, p.end, p.first) for p in parts] == [(0, 2, 1), (2, 4, 4), (4, 6, 11)]
    assert [(p.index, p.count) for p in parts] == [(0, 3), (1, 3), (2, 3)]


def test_jsonl_parts_give_the_same_documents_for_any_workers_and_part_size(big, tmp_path):
    path, docs = big
    whole = _run([path], tmp_path / "whole")
    assert whole["units_run"] == 1 and not any("part_" in u for u in find_units(tmp_path / "whole"))
    p1 = _run([path], tmp_path / "p1", part_size_mb=1, workers=1)
    p2 = _run([path], tmp_path / "p2", part_size_mb=1, workers=2)
    assert p1["units_run"] == p2["units_run"] == len(jsonl_parts(str(path), MIB)) > 1
    assert _read(tmp_path / "whole") == _read(tmp_path / "p1")  # same ids (file:line) and texts, same order
    assert [t for _, t in _read(tmp_path / "p1")] == [d["text"] for d in docs]
    assert _digest(tmp_path / "p1") == _digest(tmp_path / "p2")
    assert p1["documents"] == whole["documents"] == len(docs)
    assert all(u.startswith("big/part_") for u in find_units(tmp_path / "p1"))


def test_a_bad_line_in_a_later_part_names_its_exact_line(tmp_path):
    docs = _docs(4000, seed=3)
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps(d) for d in docs]
    lines[3500] = '{"text": "broken'
    path.write_text("\n".join(lines) + "\n")
    assert jsonl_parts(str(path), MIB)[-1].start < sum(len(x) + 1 for x in lines[:3500])
    with pytest.raises(UnitFailure, match=r"bad\.jsonl:3501: malformed JSON"):
        _run([path], tmp_path / "out", part_size_mb=1, workers=1)


@pytest.mark.slow
def test_parquet_row_groups_and_arrow_files_are_parts(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = [{"id": f"d{i}", **d} for i, d in enumerate(_docs(6000, seed=5))]
    pq.write_table(pa.Table.from_pylist(docs), tmp_path / "p.parquet", row_group_size=500, compression="none")
    datasets.Dataset.from_list(docs).save_to_disk(tmp_path / "hfds", num_shards=4)
    want = [(d["id"], d["text"]) for d in docs]
    for src in (tmp_path / "p.parquet", tmp_path / "hfds"):
        name = src.stem
        one = _run([src], tmp_path / f"{name}-one")
        many = _run([src], tmp_path / f"{name}-many", part_size_mb=1, workers=2)
        assert one["units_run"] == 1 and many["units_run"] > 1, src
        assert _read(tmp_path / f"{name}-one") == _read(tmp_path / f"{name}-many") == want
    # rows without ids are numbered globally across parts
    nid = [{"text": d["text"]} for d in docs]
    pq.write_table(pa.Table.from_pylist(nid), tmp_path / "n.parquet", row_group_size=500, compression="none")
    _run([tmp_path / "n.parquet"], tmp_path / "n-many", part_size_mb=1, workers=1)
    got = _read(tmp_path / "n-many")
    assert [i for i, _ in got] == [f"{(tmp_path / 'n.parquet').as_posix()}:{k}" for k in range(1, len(docs) + 1)]


def test_hub_dataset_shards_are_parts(tmp_path, monkeypatch):
    import datasets

    from ettin_data import sources

    files = [_jsonl(tmp_path / f"s{i}.jsonl", [{"id": f"{i}-{j}", "text": f"t {i} {j}"} for j in range(30)])
             for i in range(3)]
    monkeypatch.setattr(sources, "_hub_dataset", lambda *a: datasets.load_dataset(
        "json", data_files=[str(f) for f in files], split="train", streaming=True))
    s = _run(["someone/corpus"], tmp_path / "out", docs_per_shard=20, workers=1)
    assert s["units_run"] == 3 and s["documents"] == 90
    units = find_units(tmp_path / "out")
    assert units[0] == "someone__corpus/part_00000/split_00000"
    assert [i for i, _ in _read(tmp_path / "out")] == [f"{i}-{j}" for i in range(3) for j in range(30)]


@pytest.mark.slow
def test_kill_and_resume_inside_a_source_is_byte_identical(big, tmp_path):
    path, _ = big
    args = ["convert", str(path), "--part-size-mb", "1", "--docs-per-shard", "300", "-w", "2", "-q"]
    ref = tmp_path / "ref"
    assert cli(*args, "-o", str(ref)).returncode == 0
    out = tmp_path / "out"
    run_killed_after([*args, "-o", str(out)], out, units_done=3, extra=0.05)
    r = cli(*args, "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert _digest(out) == _digest(ref)
