"""convert: every input format reads back identical through streaming; layout, resume and errors."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
import zstandard
from typer.testing import CliRunner

from ettin_data import hub, run
from ettin_data.cli import app
from ettin_data.config import ConvertConfig
from ettin_data.corpus import python_docs
from ettin_data.errors import InputError
from ettin_data.stages import convert

DOCS = list(python_docs())[:60]


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def _run(inputs, out, **kw):
    kw.setdefault("workers", 1)
    return run(ConvertConfig(inputs=[str(i) for i in inputs], output=str(out), **kw))


def _read_back(root: Path) -> list[dict]:
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    ds = StreamingDataset(local=str(root), batch_size=1, shuffle=False)
    return [ds[i] for i in range(len(ds))]


def _tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "_logs" not in p.parts}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["docs.jsonl", "docs.jsonl.gz", "docs.jsonl.zst"])
def test_jsonl_round_trip_through_streaming(tmp_path, name):
    src = _write_jsonl(tmp_path / name, [{"id": d["id"], "text": d["text"]} for d in DOCS])
    summary = _run([src], tmp_path / "out", docs_per_shard=25)
    assert summary["documents"] == len(DOCS) and summary["units"] == 3
    got = _read_back(tmp_path / "out")
    assert [(g["id"], g["text"]) for g in got] == [(d["id"], d["text"]) for d in DOCS]


def test_dolma_parquet_and_hf_disk_round_trip(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = [{"id": d["id"], "text": d["text"], "source": d["source"], "metadata": {"x": 1}} for d in DOCS]
    dolma = _write_jsonl(tmp_path / "books-0000.json.gz", recs)
    pq.write_table(pa.Table.from_pylist([{"id": d["id"], "text": d["text"]} for d in DOCS]), tmp_path / "p.parquet")
    datasets.Dataset.from_list([{"text": d["text"], "id": d["id"]} for d in DOCS]).save_to_disk(tmp_path / "hfds")

    _run([dolma], tmp_path / "o1", domain_field="source")
    got = _read_back(tmp_path / "o1")
    assert [(g["id"], g["text"], g["domain"]) for g in got] == [(d["id"], d["text"], d["source"]) for d in DOCS]
    for src, out in ((tmp_path / "p.parquet", "o2"), (tmp_path / "hfds", "o3")):
        _run([src], tmp_path / out)
        got = _read_back(tmp_path / out)
        assert [(g["id"], g["text"]) for g in got] == [(d["id"], d["text"]) for d in DOCS], src


def test_ids_generated_integer_ids_and_skips_counted(tmp_path):
    recs = [{"text": "first doc"}, {"text": "   \n"}, {"text": ""}, {"text": None}, {"id": 7, "text": "int id"},
            {"id": 7, "text": "dup id"}, {"text": "lone \ud800 surrogate"}]
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = _run([src], tmp_path / "out")
    assert s["documents_in"] == 7 and s["documents"] == 4
    assert s["skipped"] == {"empty": 2, "null_text": 1}
    assert s["duplicate_ids"] == 1 and s["lone_surrogates_fixed"] == 1
    got = _read_back(tmp_path / "out")
    assert [g["id"] for g in got] == [f"{src.as_posix()}:1", "7", "7", f"{src.as_posix()}:7"]
    assert got[3]["text"] == "lone \ufffd surrogate"
    stats = json.loads((tmp_path / "out" / "convert_stats.json").read_text())
    assert stats["documents"] == 4 and stats["skipped"]["empty"] == 2


def test_layout_does_not_depend_on_workers(tmp_path):
    (tmp_path / "in").mkdir()
    files = [_write_jsonl(tmp_path / "in" / f"part{i}.jsonl", [{"text": d["text"]} for d in DOCS[i::3]])
             for i in range(3)]
    _run([tmp_path / "in"], tmp_path / "w1", docs_per_shard=7, workers=1)
    _run([tmp_path / "in"], tmp_path / "w2", docs_per_shard=7, workers=2)
    assert _tree_digest(tmp_path / "w1") == _tree_digest(tmp_path / "w2")
    assert (tmp_path / "w1" / "part0" / "split_00002" / "index.json").exists()
    assert len(files) == 3


def test_partial_unit_is_not_finished_and_rerun_resumes(tmp_path):
    src = _write_jsonl(tmp_path / "d.jsonl", [{"text": d["text"]} for d in DOCS])
    _run([src], tmp_path / "ref", docs_per_shard=10)
    out = tmp_path / "out"
    _run([src], out, docs_per_shard=10)
    # Simulate a kill: one unit half-written (its temp folder), one unit renamed but without .done,
    # no source marker and no root index.
    (out / "index.json").unlink()
    (out / "d" / ".done").unlink()
    (out / "d" / "split_00003" / ".done").unlink()
    (out / "d" / "split_00005").rename(out / "d" / ".split_00005.partial")
    from ettin_data.mds import find_units

    assert "d/split_00005" not in find_units(out)
    s = _run([src], out, docs_per_shard=10)
    assert s["units_run"] == 1
    assert _tree_digest(out) == _tree_digest(tmp_path / "ref")


def test_convert_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": broken\n{"body": "x"}\n')
    runner = CliRunner()
    r = runner.invoke(app, ["convert", str(bad), "-o", str(tmp_path / "o"), "-w", "1"])
    assert r.exit_code == 1
    assert f"{bad.as_posix()}:2: malformed JSON" in r.output and "--skip-bad-lines" in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(app, ["convert", str(bad), "-o", str(tmp_path / "o2"), "-w", "1", "--skip-bad-lines", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["skipped"] == {"bad_line": 1, "no_text_field": 1}
    r = runner.invoke(app, ["convert", str(bad), "-o", str(tmp_path / "o2b"), "-w", "1", "--skip-bad-lines",
                            "--text-field", "txt"])  # no record has it: a wrong --text-field, even when skipping
    assert r.exit_code == 1 and "no field 'txt' (fields: text)" in r.output and "--text-field" in r.output
    r = runner.invoke(app, ["convert", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o3")])
    assert r.exit_code == 1 and "does not exist" in r.output
    r = runner.invoke(app, ["convert", str(bad), "-o", str(tmp_path / "o4"), "--docs-per-shard", "0", "-w", "x"])
    assert r.exit_code == 2
    gz = tmp_path / "t.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"text": "x"}\n' * 10000)[:300])
    r = runner.invoke(app, ["convert", str(gz), "-o", str(tmp_path / "o5"), "-w", "1"])
    assert r.exit_code == 1 and "truncated or corrupt compressed file" in r.output and "t.jsonl.gz" in r.output


def test_validation_errors_list_each_field(tmp_path):
    r = CliRunner().invoke(app, ["convert", "x.jsonl", "-o", str(tmp_path), "--docs-per-shard", "0",
                                 "--rank", "3", "--world", "2"])
    assert r.exit_code == 2
    lines = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert any("--docs-per-shard" in x for x in lines)
    assert "Traceback" not in r.output


def test_hub_dataset_without_network_is_one_line(tmp_path, monkeypatch):
    # no HF_HUB_OFFLINE: without a network the hub host does not resolve and convert goes offline itself
    # (cached datasets still load) instead of retrying for ~45 s per request
    import datasets
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "reachable", lambda timeout=3.0: False)
    r = CliRunner().invoke(app, ["convert", "some-org/some-dataset", "-o", str(tmp_path / "o"), "-w", "1"])
    assert r.exit_code == 1
    assert "cannot read Hugging Face hub dataset 'some-org/some-dataset'" in r.output
    assert "Traceback" not in r.output


def test_unknown_input_type(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="unknown input type"):
        convert.Convert().plan(ConvertConfig(inputs=[str(tmp_path / "x.csv")], output=str(tmp_path / "o")))
