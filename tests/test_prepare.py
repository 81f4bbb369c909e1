"""prepare (convert + tokenize + chunk in one pass) gives the chunks of the three stages byte for byte, the
same metadata chain and closed accounting; it resumes per unit and its output feeds sample/finalize."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from helpers_faults import cli, run_killed_after

from ettin_data import run
from ettin_data.config import ChunkConfig, ConvertConfig, PrepareConfig, TokenizeConfig
from ettin_data.rules import stage_chain

CHUNK = dict(chunk_size=256, min_chunk_size=64, always_skip_size=16, backfill=True, backfill_no_duplicates=True)
SKIP = {".done", "ettin_meta.json", ".ettin_settings.json", ".ettin_units.json"}  # per-run bookkeeping


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in SKIP and ".ettin_logs" not in p.parts}


def _staged(inputs: list[str], out: Path, workers: int = 1, **kw) -> Path:
    conv = {k: v for k, v in kw.items() if k in ConvertConfig.model_fields}
    tok = {k: v for k, v in kw.items() if k in TokenizeConfig.model_fields}
    ch = {k: v for k, v in kw.items() if k in ChunkConfig.model_fields}
    run(ConvertConfig(inputs=inputs, output=str(out / "text"), workers=workers, **conv))
    run(TokenizeConfig(inputs=[str(out / "text")], output=str(out / "tokens"), workers=workers,
                                tokenizer="builtin:modernbert", **tok))
    run(ChunkConfig(inputs=[str(out / "tokens")], output=str(out / "chunks"), workers=workers, **ch))
    return out / "chunks"


def _fused(inputs: list[str], out: Path, workers: int = 1, **kw) -> dict:
    return run(PrepareConfig(inputs=inputs, output=str(out), workers=workers,
                                     tokenizer="builtin:modernbert", **kw))


def _plain(meta: dict) -> dict:
    """A metadata chain without the inputs (folders differ by nature) and the 'via' marks."""
    return {k: ([_plain(u) for u in v] if k == "upstream" else v) for k, v in meta.items()
            if k not in ("inputs", "via")}


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """A JSONL source with every kind of skip, a domain field, duplicate ids, special-token text, and enough
    documents for several units and (with --part-size-mb 1) several parts."""
    from ettin_data.corpus import python_docs

    d = tmp_path_factory.mktemp("raw")
    docs = list(python_docs())
    lines = []
    for k in range(4):
        for i, doc in enumerate(docs):
            lines.append({"id": f"{doc['id']}#{k}", "text": doc["text"], "src": f"s{i % 3}"})
    lines[3] = {"id": "dup", "text": "a [SEP] inside", "src": "x"}
    lines[4] = {"id": "dup", "text": "   ", "src": "x"}
    lines[5] = {"id": "n", "text": None, "src": "x"}
    lines[6] = {"text": "no id here", "src": "y"}
    lines[7] = {"id": "dup", "text": "another document with the same id", "src": "x"}
    path = d / "corpus.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert path.stat().st_size > 3 << 20
    return path


@pytest.mark.slow
@pytest.mark.parametrize("kw", [dict(docs_per_shard=60), dict(docs_per_shard=100, part_size_mb=1)])
def test_fused_equals_three_stages_byte_for_byte(raw, tmp_path, kw):
    opts = dict(CHUNK, domain_field="src", **kw)
    staged = _staged([str(raw)], tmp_path / "staged", **opts)
    s = _fused([str(raw)], tmp_path / "fused", workers=2, **opts)
    assert _digest(tmp_path / "fused") == _digest(staged)
    parts = -(-raw.stat().st_size // (1 << 20))
    assert s["units_run"] == (parts if "part_size_mb" in kw else 1) and (parts > 1 or "part_size_mb" not in kw)
    # the same metadata chain: chunk <- tokenize <- convert, with the same settings and tokenizer
    meta_s = json.loads((staged / "ettin_meta.json").read_text())
    meta_f = json.loads((tmp_path / "fused" / "ettin_meta.json").read_text())
    assert _plain(meta_f) == _plain(meta_s)
    assert [st["stage"] for st in stage_chain(meta_f)] == ["convert", "tokenize", "chunk"]
    # accounting: documents in = chunked + skipped by reason; tokens as chunk counts them
    assert s["documents_in"] == s["documents"] + sum(s["skipped"].values())
    assert s["skipped"] == {"empty": 1, "null_text": 1}
    assert s["duplicate_ids"] >= 1 and s["documents_with_special_token_text"] == 1
    assert s["content_tokens_in"] == s["content_tokens_written"] + s["total_tokens_skipped"] - \
        s["total_duplicated_tokens"]


@pytest.mark.slow
def test_fused_output_feeds_split_finalize_and_verify(raw, tmp_path):
    _fused([str(raw)], tmp_path / "chunks", docs_per_shard=100, **CHUNK)
    assert cli("sample", "split", str(tmp_path / "chunks"), "-o", str(tmp_path / "split"),
               "--validation-fraction", "0.1", "-q").returncode == 0
    r = cli("finalize", str(tmp_path / "split"), "-o", str(tmp_path / "final"), "-q", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["verified"] is True
    r = cli("stats", "--verify", str(tmp_path / "chunks"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_config_file_tables_of_the_three_stages_apply(raw, tmp_path):
    conf = tmp_path / "p.toml"
    conf.write_text('[convert]\ndocs_per_shard = 80\noutput = "ignored"\n[tokenize]\ntokenizer = "builtin:modernbert"\n'
                    '[chunk]\nchunk_size = 300\nmin_chunk_size = 10\n[prepare]\nmin_chunk_size = 20\n')
    r = cli("prepare", str(raw), "-o", str(tmp_path / "o"), "--config", str(conf), "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)["config"]
    assert got["docs_per_shard"] == {"value": 80, "from": "config file"}
    assert got["chunk_size"]["value"] == 300 and got["min_chunk_size"]["value"] == 20
    assert got["output"]["value"] == str(tmp_path / "o")
    conf.write_text("[chunk]\nbogus = 1\n")
    r = cli("prepare", str(raw), "-o", str(tmp_path / "o"), "-t", "builtin:modernbert", "--config", str(conf))
    assert r.returncode == 2 and "bogus" in r.stderr and "[chunk]" in r.stderr


@pytest.mark.slow
def test_kill_and_resume_is_byte_identical(raw, tmp_path):
    args = ["prepare", str(raw), "-t", "builtin:modernbert", "--docs-per-shard", "40", "--part-size-mb", "1",
            "-c", "256", "-m", "64", "-a", "16", "-w", "2", "-q"]
    ref = tmp_path / "ref"
    r = cli(*args, "-o", str(ref))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    run_killed_after([*args, "-o", str(out)], out, units_done=6, extra=0.1)
    assert not (out / "index.json").exists() or (out / "ettin_meta.json").exists()
    r = cli(*args, "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert _digest(out) == _digest(ref)


def test_a_tokenizer_without_bos_eos_is_refused_before_writing(tmp_path, raw):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tok.json"))
    r = cli("prepare", str(raw), "-o", str(tmp_path / "o"), "-t", str(tmp_path / "tok.json"))
    assert r.returncode == 2 and "defines no BOS token" in r.stderr and "--bos none" in r.stderr
    assert not (tmp_path / "o" / "tokenizer.json").exists()


@pytest.mark.slow
def test_kept_intermediates_equal_the_stages_outputs(raw, tmp_path):
    opts = dict(CHUNK, docs_per_shard=100, part_size_mb=1)
    staged = _staged([str(raw)], tmp_path / "staged", **opts)
    s = _fused([str(raw)], tmp_path / "fused", workers=2, keep_text=str(tmp_path / "text"),
               keep_tokens=str(tmp_path / "tokens"), **opts)
    assert _digest(tmp_path / "fused") == _digest(staged)
    assert _digest(tmp_path / "text") == _digest(tmp_path / "staged" / "text")
    assert _digest(tmp_path / "tokens") == _digest(tmp_path / "staged" / "tokens")
    assert s["units_skipped"] == 0
    again = _fused([str(raw)], tmp_path / "fused", keep_text=str(tmp_path / "text"),
                   keep_tokens=str(tmp_path / "tokens"), **opts)
    assert again["units_run"] == 0 and _digest(tmp_path / "tokens") == _digest(tmp_path / "staged" / "tokens")
    r = cli("prepare", str(raw), "-o", str(tmp_path / "o"), "-t", "builtin:modernbert", "--keep-text",
            str(tmp_path / "o" / "text"))
    assert r.returncode == 2 and "separate folders" in r.stderr
