"""``ettin-data index FOLDER`` (issue 23): after datasets were added to or removed from a folder, one root
index over every unit below it, which StreamingDataset reads completely and ``stats --verify`` accepts; root
indexes of the datasets inside are rebuilt too; unsafe or unfinished data is refused before anything is
written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers_chunks import make_chunks, read_chunks
from helpers_cli import cli, one_line

from ettin_data import run
from ettin_data.config import ChunkConfig, SplitConfig
from ettin_data.mds import ShardWriter, find_units


def _streaming(root: Path, cache: Path) -> list[tuple[str, tuple[int, ...]]]:
    """Every sample through mosaicml-streaming's StreamingDataset (remote=root: the folder is not modified)."""
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    ds = StreamingDataset(remote=str(root), local=str(cache), shuffle=False, batch_size=1)
    got = [(ds[i]["id"], tuple(np.asarray(ds[i]["input_ids"]).tolist())) for i in range(len(ds))]
    del ds
    clean_stale_shared_memory()
    return got


@pytest.fixture(scope="module")
def parts(tmp_path_factory, token_dataset):
    """Three datasets: a real chunk output (settings, stats.json, .done), a synthetic chunk dataset, and units
    written by mosaicml-streaming's MDSWriter (no ettin files at all)."""
    from streaming import MDSWriter

    base = tmp_path_factory.mktemp("index")
    run(ChunkConfig(inputs=[str(token_dataset)], output=str(base / "web"), workers=1, chunk_size=256,
                    min_chunk_size=0, always_skip_size=0))
    make_chunks(base / "books", n_units=3, docs_per_unit=10, seed=5, source="books")
    rng = np.random.default_rng(0)
    for sub in ("x", "y"):
        with MDSWriter(out=str(base / "mds" / sub), columns={"id": "str", "input_ids": "ndarray:uint32", "len": "int"},
                       compression="zstd") as w:
            for d in range(15):
                w.write({"id": f"mds-{sub}-{d}", "input_ids": rng.integers(0, 50000, 40).astype(np.uint32), "len": 40})
    return base


def _collection(parts: Path, dst: Path, names: tuple[str, ...] = ("web", "books", "mds")) -> Path:
    dst.mkdir()
    for n in names:
        shutil.copytree(parts / n, dst / n)
    return dst


def _samples(parts: Path, names: tuple[str, ...]) -> list[tuple[str, tuple[int, ...]]]:
    out = []  # in root index order: units sorted by their path
    for n in sorted(names):
        for u in find_units(parts / n):
            out += read_chunks(parts / n / u)
    return out


def test_index_after_adding_and_removing_datasets_streams_completely(parts, tmp_path):
    coll = _collection(parts, tmp_path / "coll")
    res = cli("index", coll, "--json")
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    everything = ("web", "books", "mds")
    assert s["units"] == sum(len(find_units(parts / n)) for n in everything)
    assert s["nested_root_indexes"] == ["books", "web"] and s["root_indexes_removed"] == []
    got = _streaming(coll, tmp_path / "c1")
    assert got == _samples(parts, everything) and len(got) == s["samples"]
    assert cli("stats", "--verify", coll).exit_code == 0
    shutil.rmtree(coll / "books")  # a source removed: the root index names missing shards
    assert cli("stats", "--verify", coll).exit_code == 1
    assert cli("index", coll, "-q").exit_code == 0
    assert _streaming(coll, tmp_path / "c2") == _samples(parts, ("web", "mds"))
    assert cli("stats", "--verify", coll).exit_code == 0
    shutil.copytree(parts / "books", coll / "more" / "books")  # a source added, one level deeper
    assert cli("index", coll).exit_code == 0
    got = _streaming(coll, tmp_path / "c3")
    assert sorted(got) == sorted(_samples(parts, everything))
    assert cli("stats", "--verify", coll).exit_code == 0


def test_nested_root_indexes_and_stats_are_rebuilt(parts, tmp_path):
    coll = _collection(parts, tmp_path / "coll", ("web",))
    web = coll / "web"
    units = find_units(web)
    stale = json.loads((web / "stats.json").read_text())
    shutil.rmtree(web / units[0])  # one unit of the dataset removed
    assert cli("stats", "--verify", web).exit_code == 1
    res = cli("index", coll, "--json")
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["nested_root_indexes"] == ["web"] and s["stats_rewritten"] == ["web"]
    stats = json.loads((web / "stats.json").read_text())
    assert stats["units"] == len(units) - 1 and stats["samples"] < stale["samples"]
    assert cli("stats", "--verify", web).exit_code == 0 and cli("stats", "--verify", coll).exit_code == 0
    assert read_chunks(web) == [c for u in units[1:] for c in read_chunks(parts / "web" / u)]
    for u in units[1:]:  # every unit removed: the dataset's root index goes too
        shutil.rmtree(web / u)
    (coll / "other").mkdir()
    shutil.copytree(parts / "mds", coll / "other" / "mds")
    s = json.loads(cli("index", coll, "--json").stdout)
    assert s["root_indexes_removed"] == ["web"] and not (web / "index.json").exists()


def test_unsafe_unfinished_or_split_folders_are_refused_before_writing(parts, tmp_path):
    coll = _collection(parts, tmp_path / "coll", ("books", "mds"))
    assert cli("index", coll).exit_code == 0
    before = (coll / "index.json").read_bytes()
    unit = coll / "mds" / "x"
    index = json.loads((unit / "index.json").read_text())
    index["shards"][0]["zip_data"]["basename"] = "../../../outside.mds.zstd"
    (unit / "index.json").write_text(json.dumps(index))
    one_line(cli("index", coll), 1, str(unit / "index.json"), "leaves its folder")
    assert (coll / "index.json").read_bytes() == before and not (coll / ".ettin_lock").exists()
    shutil.rmtree(coll / "mds")
    # units of another layout (no len column): one root index would not be one dataset
    with ShardWriter(coll / "bare" / "u", {"id": "str", "input_ids": "ndarray:uint32"}) as w:
        w.write({"id": "d", "input_ids": np.arange(5, dtype=np.uint32)})
    one_line(cli("index", coll), 1, "have different columns", "bare/u")
    assert (coll / "index.json").read_bytes() == before
    shutil.rmtree(coll / "bare")
    # a unit of an ettin-data output that is not finished (its run was interrupted)
    out = tmp_path / "partial"
    shutil.copytree(parts / "web", out / "web")
    assert (out / "web" / ".ettin_settings.json").is_file()
    victim = out / "web" / find_units(out / "web")[0]
    (victim / ".done").unlink()
    one_line(cli("index", out), 1, str(victim), "is not finished")
    assert not (out / "index.json").exists()
    # a split output: one index over train and validation would mix them
    run(SplitConfig(inputs=[str(parts / "books")], output=str(tmp_path / "split"), validation_fraction=0.2,
                    workers=1))
    one_line(cli("index", tmp_path / "split"), 1, "train/ and validation/", "mix")
    # one unit is not a collection; nothing to index is said so
    one_line(cli("index", parts / "mds" / "x"), 1, "is one MDS unit")
    (tmp_path / "empty").mkdir()
    one_line(cli("index", tmp_path / "empty"), 1, "no MDS units")


def test_dry_run_writes_nothing(parts, tmp_path):
    coll = _collection(parts, tmp_path / "coll", ("books", "mds"))
    res = cli("index", coll, "--dry-run", "--json")
    assert res.exit_code == 0, res.output
    (plan,) = json.loads(res.stdout)["plan"]["index"]
    assert plan["units"] == 5 and plan["nested_root_indexes"] == ["books"]
    assert not (coll / "index.json").exists()
