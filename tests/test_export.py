"""Inspection: ``export MDS -o FILE.jsonl`` (text and token data), ``stats --show N`` and
``stats --plot FILE.png``."""

from __future__ import annotations

import gzip
import json
import struct
import unicodedata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ettin_data import run
from ettin_data.cli import app
from ettin_data.config import ConvertConfig, TokenizeConfig
from ettin_data.mds import TOKEN_COLUMNS, ShardWriter

runner = CliRunner()

DOCS = [
    {"id": "plain", "text": "The quick brown fox jumps over the lazy dog.", "domain": "web"},
    {"id": "spaces", "text": "  two leading spaces,\ttabs\tand\n\nblank lines  \n", "domain": "web"},
    {"id": "unicode", "text": "Cafe\u0301 na\u00efve \u2014 \u65e5\u672c\u8a9e \U0001F600 \u00e9t\u00e9",
     "domain": "wiki"},
    {"id": 7, "text": "an integer id becomes a string", "domain": "wiki"},
    {"id": "brackets", "text": "literal [CLS] and [SEP] text stays text", "domain": "code"},
] + [{"id": f"d{i:03d}", "text": f"document {i}: " + "lorem ipsum dolor sit amet " * (i % 7 + 1), "domain": "web"}
     for i in range(40)]


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def small_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    src = root / "docs.jsonl"
    src.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in DOCS), encoding="utf-8")
    out = root / "text"
    run(ConvertConfig(inputs=[str(src)], output=str(out), docs_per_shard=8, domain_field="domain", workers=1))
    return out


@pytest.fixture(scope="module")
def small_tokens(small_text: Path) -> Path:
    out = small_text.parent / "tokens"
    run(TokenizeConfig(inputs=[str(small_text)], output=str(out), tokenizer="builtin:modernbert", workers=1))
    return out


def test_round_trip_jsonl_mds_jsonl(small_text: Path, tmp_path: Path) -> None:
    dst = tmp_path / "back.jsonl"
    res = runner.invoke(app, ["export", str(small_text), "-o", str(dst), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["records"] == len(DOCS) and summary["format"] == "jsonl"
    back = _read_jsonl(dst)
    assert back == [{"id": str(d["id"]), "text": d["text"], "domain": d["domain"]} for d in DOCS]
    # exporting again needs --overwrite; then the file is identical
    res = runner.invoke(app, ["export", str(small_text), "-o", str(dst)])
    assert res.exit_code == 2 and "--overwrite" in res.stderr
    first = dst.read_bytes()
    res = runner.invoke(app, ["export", str(small_text), "-o", str(dst), "--overwrite", "-q"])
    assert res.exit_code == 0 and dst.read_bytes() == first
    # compressed by extension, same content; gzip without a timestamp, so the same bytes every time
    import zstandard

    for name in ("back.jsonl.zst", "back.jsonl.gz"):
        res = runner.invoke(app, ["export", str(small_text), "-o", str(tmp_path / name), "-q"])
        assert res.exit_code == 0, res.output
    zst = (tmp_path / "back.jsonl.zst").read_bytes()
    assert zstandard.ZstdDecompressor().decompressobj().decompress(zst) == first
    assert gzip.decompress((tmp_path / "back.jsonl.gz").read_bytes()) == first
    gz = (tmp_path / "back.jsonl.gz").read_bytes()
    runner.invoke(app, ["export", str(small_text), "-o", str(tmp_path / "back.jsonl.gz"), "-q",
                        "--overwrite"])
    assert (tmp_path / "back.jsonl.gz").read_bytes() == gz
    # and the export converts back to the same MDS bytes
    again = tmp_path / "again"
    res = runner.invoke(app, ["convert", str(dst), "-o", str(again), "--docs-per-shard", "8", "--domain-field",
                              "domain", "-w", "1", "-q"])
    assert res.exit_code == 0, res.output
    shards = sorted(p.relative_to(again / "back") for p in (again / "back").rglob("*.mds.zstd"))
    assert shards == sorted(p.relative_to(small_text / "docs") for p in (small_text / "docs").rglob("*.mds.zstd"))
    assert len(shards) == 6
    for rel in shards:
        assert (again / "back" / rel).read_bytes() == (small_text / "docs" / rel).read_bytes()


def test_token_data_decodes_with_the_datasets_own_tokenizer(small_tokens: Path, tmp_path: Path) -> None:
    assert (small_tokens / "tokenizer.json").is_file()
    dst = tmp_path / "decoded.jsonl.gz"  # compressed by extension
    res = runner.invoke(app, ["export", str(small_tokens), "-o", str(dst), "-q"])
    assert res.exit_code == 0, res.output
    back = _read_jsonl(dst)
    assert [r["id"] for r in back] == [str(d["id"]) for d in DOCS]
    # byte-level BPE: decode(tokenize(text)) == NFC(text); [CLS]/[SEP] added by tokenize are dropped,
    # while the literal text "[CLS]" in a document is special too, so it is the one expected difference
    for rec, doc in zip(back, DOCS, strict=True):
        want = unicodedata.normalize("NFC", doc["text"])
        if doc["id"] == "brackets":
            want = want.replace("[CLS]", "").replace("[SEP]", "")
        assert rec["text"] == want, doc["id"]
        assert rec["domain"] == doc["domain"]


def test_explicit_tokenizer_and_missing_tokenizer(small_tokens: Path, modernbert_json: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"  # token MDS without a tokenizer.json (another tool's data)
    with ShardWriter(bare, TOKEN_COLUMNS) as w:
        w.write({"id": "x", "input_ids": __import__("numpy").array([50281, 510, 5347, 50282], "uint32"), "len": 4})
    res = runner.invoke(app, ["export", str(bare), "-o", str(tmp_path / "a.jsonl")])
    assert res.exit_code == 1 and "--tokenizer" in res.stderr
    assert not (tmp_path / "a.jsonl").exists()
    for spec in (str(modernbert_json), str(modernbert_json.parent), "builtin:modernbert"):
        out = tmp_path / "b.jsonl"
        res = runner.invoke(app, ["export", str(bare), "-o", str(out), "--tokenizer", spec,
                                  "--overwrite", "-q"])
        assert res.exit_code == 0, res.output
        assert _read_jsonl(out) == [{"id": "x", "text": "The capital"}]


def test_export_refuses_bad_targets(small_text: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["export", str(small_text), "-o", str(tmp_path)])
    assert res.exit_code == 2 and "is a folder" in res.stderr
    res = runner.invoke(app, ["export", str(tmp_path / "nope"), "-o", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 1 and "does not exist" in res.stderr
    assert not (tmp_path / "x.jsonl").exists() and not list(tmp_path.glob(".*partial"))


def test_stats_show_text_and_tokens(small_text: Path, small_tokens: Path) -> None:
    res = runner.invoke(app, ["stats", str(small_text), "--show", "3", "--json"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)["shown"][str(small_text)]
    assert [r["id"] for r in shown] == ["plain", "spaces", "unicode"]
    assert shown[2]["text"] == DOCS[2]["text"]
    res = runner.invoke(app, ["stats", str(small_tokens), "--show", "2", "--json"])
    shown = json.loads(res.stdout)["shown"][str(small_tokens)]
    assert [r["text"] for r in shown] == [DOCS[0]["text"], DOCS[1]["text"]]
    res = runner.invoke(app, ["stats", str(small_tokens), "--show", "1"])  # the table form prints the text
    assert res.exit_code == 0 and "The quick brown fox jumps over the lazy dog." in res.stdout
    assert "id=plain" in res.stdout


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", data[16:24])


def test_stats_plot_png(small_text: Path, small_tokens: Path, tmp_path: Path) -> None:
    one = tmp_path / "one.png"
    res = runner.invoke(app, ["stats", str(small_tokens), "--plot", str(one), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["plot"] == str(one)
    assert _png_size(one) == (800, 480)
    two = tmp_path / "sub" / "two.png"  # several datasets: histogram plus tokens per dataset
    res = runner.invoke(app, ["stats", str(small_tokens), str(small_text.parent / "tokens"), "--plot", str(two), "-q"])
    assert res.exit_code == 0, res.output
    assert _png_size(two) == (1300, 480) and two.stat().st_size > 10_000
    assert not list(tmp_path.rglob(".*partial*"))


def test_tokens_by_group(small_tokens: Path, tmp_path: Path) -> None:
    import shutil

    from ettin_data.plot import histogram_bins, tokens_by_group

    both = tmp_path / "both"  # one PATH holding two datasets, like a finalize split
    shutil.copytree(small_tokens, both / "small")
    shutil.copytree(small_tokens, both / "again")
    total = json.loads((small_tokens / "num_tokens.json").read_text())["total_tokens"]
    assert tokens_by_group(both) == {"again": total, "small": total}
    assert tokens_by_group(small_tokens) == {}  # one group: no bar chart
    edges, counts = histogram_bins({3: 2, 10: 1, 100: 5}, bins=10)
    assert counts.sum() == 8 and edges[0] == 3 and edges[-1] >= 101


def test_plot_labels_tell_paths_apart() -> None:
    from ettin_data.plot import labels

    assert labels(["out/phase1/final/train", "out/phase2/final/train"]) == ["phase1/final/train",
                                                                            "phase2/final/train"]
    assert labels(["a/x", "b/y"]) == ["x", "y"]
