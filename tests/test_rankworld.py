"""--rank R --world W (Slurm arrays and other schedulers without Ray): W runs in any order produce the
bytes of one plain run; only the run that completes the set (or a later plain run) writes the root files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ettin_data import run
from ettin_data.config import ConvertConfig
from ettin_data.corpus import python_docs
from ettin_data.errors import ConfigError
from ettin_data.mds import find_units, read_index

ROOT_FILES = ("index.json", "ettin_meta.json", "convert_stats.json")


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """Four JSONL files (four convert tasks) and a plain single-run conversion of them."""
    src = tmp_path_factory.mktemp("rw") / "src"
    src.mkdir()
    docs = list(python_docs())
    for k in range(4):
        with open(src / f"part{k}.jsonl", "w") as f:
            for doc in docs[k::4]:
                f.write(json.dumps(doc) + "\n")
    plain = src.parent / "plain"
    run(ConvertConfig(inputs=[str(src)], output=str(plain), docs_per_shard=25, workers=1))
    return src, plain


def _cfg(src: Path, out: Path, **kw) -> ConvertConfig:
    return ConvertConfig(inputs=[str(src)], output=str(out), docs_per_shard=25, **{"workers": 1, **kw})


@pytest.mark.slow
def test_ranks_in_any_order_equal_a_plain_run(corpus, tmp_path):
    src, plain = corpus
    out = tmp_path / "ranked"
    seen: list[str] = []
    for step, rank in enumerate((2, 0, 1)):
        s = run(_cfg(src, out, rank=rank, world=3, workers=2 if rank == 0 else 1))
        mine = [f"part{k}" for k in range(4)][rank::3]
        assert s["units_run"] == len(mine) and s["units_skipped"] == 0
        seen += mine
        for name in mine:  # each rank wrote exactly its own tasks
            assert (out / name / ".done").is_file()
        if step < 2:
            assert s["complete"] is False and s["units"] == 4 and s["units_pending"] == 4 - len(seen)
            assert not any((out / f).exists() for f in ROOT_FILES)
        else:
            assert s["complete"] is True and s["sources"] == 4 and s["documents"] == len(list(python_docs()))
    assert sorted(seen) == [f"part{k}" for k in range(4)]
    a, b = tree(plain), tree(out)
    assert sorted(a) == sorted(b) and [k for k in a if a[k] != b[k]] == []
    root = read_index(out)
    assert len(root.shards) == len(find_units(out)) == sum(1 for k in a if k.endswith("/index.json"))


def test_later_plain_run_writes_the_root_files(corpus, tmp_path):
    src, plain = corpus
    out = tmp_path / "ranked"
    for rank in (0, 1):
        run(_cfg(src, out, rank=rank, world=2))
    for f in ROOT_FILES:  # as if the completing rank was killed before it wrote the dataset files
        (out / f).unlink()
    s = run(_cfg(src, out))
    assert s["complete"] and s["units_run"] == 0 and s["units_skipped"] == 4
    assert tree(out) == tree(plain)


def test_a_rank_with_other_settings_is_refused(corpus, tmp_path):
    src, _ = corpus
    out = tmp_path / "ranked"
    run(_cfg(src, out, rank=0, world=2))
    with pytest.raises(ConfigError, match="other settings.*docs_per_shard: 25 -> 26"):
        run(ConvertConfig(inputs=[str(src)], output=str(out), docs_per_shard=26, rank=1, world=2, workers=1))


def test_cli_rank_world_flags(corpus, tmp_path):
    from typer.testing import CliRunner

    from ettin_data.cli import app

    src, plain = corpus
    out = tmp_path / "cli"
    runner = CliRunner()
    for rank in (1, 0):
        r = runner.invoke(app, ["convert", str(src), "-o", str(out), "--docs-per-shard", "25", "-w", "1",
                                "--rank", str(rank), "--world", "2", "--json", "-q"])
        assert r.exit_code == 0, r.output
        summary = json.loads(r.stdout)
        assert summary["complete"] is (rank == 0)
    logs = {k: v for k, v in tree(out).items() if k.startswith(".ettin_logs/")}  # one run log per rank
    assert sorted(k.rsplit("-", 1)[1] for k in logs) == ["rank0.jsonl", "rank1.jsonl"]
    assert {k: v for k, v in tree(out).items() if k not in logs} == tree(plain)
    r = runner.invoke(app, ["convert", str(src), "-o", str(out), "--rank", "2", "--world", "2"])
    assert r.exit_code == 2 and "rank 2 must be smaller than world 2" in r.output
