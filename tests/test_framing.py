"""Decoder tokenizers (issue 25, last item): ``chunk --bos/--eos`` says which ids frame a chunk. OLMo's dolma2
(cl100k-style) and GPT-NeoX (EOS id 0) define no BOS, a Llama-style tokenizer no EOS. Their chunks are framed as
asked, recorded in the metadata, verified, and round-trip (decode of each document's pieces == its source text)
through sample split, finalize and every loader profile's read path; prepare gives the same chunks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers_chunks import read_chunks
from test_finalize import _modernbert_read
from test_profiles import _llm_foundry_sample, _modernbert_streaming_sample, _numpy_read, _streaming
from typer.testing import CliRunner

from ettin_data import run
from ettin_data.cli import app
from ettin_data.config import ChunkConfig, FinalizeConfig, PrepareConfig, SplitConfig, TokenizeConfig
from ettin_data.corpus import python_docs
from ettin_data.mds import UnitReader, find_units
from ettin_data.tokenizer import _olmo_json_path
from ettin_data.verify import verify

runner = CliRunner()
CHUNK = 512
SIZES = {"chunk_size": CHUNK, "min_chunk_size": 0, "always_skip_size": 0}  # nothing dropped: every token kept


def _llama_style(path: Path) -> Path:
    """GPT-NeoX's BPE with a Llama-style post-processor: ``<s> $A`` (BOS only)."""
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.processors import TemplateProcessing

    tok = Tokenizer.from_file(str(_olmo_json_path().parent / "allenai_eleuther-ai-gpt-neox-20b-pii-special.json"))
    tok.add_special_tokens([AddedToken("<s>", special=True, normalized=False)])
    bos = tok.token_to_id("<s>")
    tok.post_processor = TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)])
    tok.save(str(path))
    return path


# name -> (tokenizer file, chunk framing options, BOS expected, EOS expected)
CASES = {
    "dolma2": ("allenai_dolma2.json", {"bos": "none"}, None, 100257),
    "neox": ("allenai_eleuther-ai-gpt-neox-20b-pii-special.json", {"bos": "none"}, None, 0),
    "llama": (None, {"eos": "none"}, "<s>", None),
}


@pytest.fixture(scope="module", params=[pytest.param(n, marks=[pytest.mark.slow] if n != "dolma2" else [])
                                        for n in CASES])  # the fast suite runs dolma2; the full one all three
def framed(request, text_dataset, tmp_path_factory):
    name = request.param
    base = tmp_path_factory.mktemp(f"framing-{name}")
    file, opts, _, _ = CASES[name]
    tok = _olmo_json_path().parent / file if file else _llama_style(base / "llama.json")
    run(TokenizeConfig(inputs=[str(text_dataset)], output=str(base / "tokens"), tokenizer=str(tok), workers=1))
    summary = run(ChunkConfig(inputs=[str(base / "tokens")], output=str(base / "chunks"), workers=1, **SIZES, **opts))
    return name, base, tok, summary


def _texts() -> dict[str, str]:
    return {d["id"]: d["text"] for d in python_docs()}


def _decode_documents(chunks: list[tuple[str, tuple[int, ...]]], tok: Path, bos: int | None,
                      eos: int | None) -> dict[str, str]:
    """Each document's text from its chunks: the framing ids stripped, the pieces joined in order, decoded."""
    from tokenizers import Tokenizer

    t = Tokenizer.from_file(str(tok))
    pieces: dict[str, list[int]] = {}
    for doc, ids in chunks:
        body = list(ids)
        if bos is not None:
            assert body[0] == bos, (doc, body[:3])
            body = body[1:]
        if eos is not None:
            assert body[-1] == eos, (doc, body[-3:])
            body = body[:-1]
        pieces.setdefault(doc, []).extend(body)
    return {doc: t.decode(ids, skip_special_tokens=False) for doc, ids in pieces.items()}


def test_chunks_are_framed_as_asked_recorded_and_round_trip(framed):
    name, base, tok, summary = framed
    _, opts, bos_token, eos_id = CASES[name]
    meta = json.loads((base / "chunks" / "ettin_meta.json").read_text())
    f = meta["framing"]
    bos_id = f["bos_id"]
    assert (f["bos"], f["eos_id"]) == (bos_token, eos_id) and (bos_id is None) == (bos_token is None)
    assert meta["settings"]["bos"] == opts.get("bos") and meta["settings"]["eos"] == opts.get("eos")
    chunks = read_chunks(base / "chunks")
    assert all(len(ids) <= CHUNK for _, ids in chunks)
    assert sum(len(ids) == CHUNK for _, ids in chunks) > 10  # full chunks: CHUNK - 1 content tokens + 1 framing id
    assert summary["total_tokens_written"] == summary["content_tokens_written"] + len(chunks)
    assert summary["total_tokens_skipped"] == 0
    texts = _texts()
    decoded = _decode_documents(chunks, tok, bos_id, eos_id)
    assert decoded == {d: texts[d] for d in decoded} and len(decoded) == len(texts)
    assert verify(base / "chunks") == []
    r = runner.invoke(app, ["stats", "--verify", str(base / "chunks")])
    assert r.exit_code == 0, r.output


def test_round_trip_through_finalize_and_every_loader_profile(framed, tmp_path):
    name, base, tok, _ = framed
    _, _, _, eos_id = CASES[name]
    meta = json.loads((base / "chunks" / "ettin_meta.json").read_text())
    bos_id = meta["framing"]["bos_id"]
    run(SplitConfig(inputs=[str(base / "chunks")], output=str(tmp_path / "split"), validation_fraction=0.1, workers=1))
    chunks = read_chunks(base / "chunks")
    texts = _texts()
    for profile in ("modernbert", "modernbert-streaming", "llm-foundry", "numpy"):
        out = tmp_path / profile
        s = run(FinalizeConfig(inputs=[str(tmp_path / "split")], output=str(out), workers=1, loader=profile))
        assert s["problems"] == [], (profile, s["problems"])
        m = json.loads((out / "manifest.json").read_text())
        assert m["datasets"]["split"]["stages"][-2]["framing"] == meta["framing"]
        for sp in ("train", "validation"):
            docs = {d for d, _ in read_chunks(tmp_path / "split" / sp)}
            want = [c for c in chunks if c[0] in docs]  # chunk's order, this split's documents
            if profile == "modernbert":
                got = [tuple(a.tolist()) for a in _modernbert_read(out, sp)]
            elif profile == "modernbert-streaming":
                got = [tuple(a.tolist()) for a in _modernbert_read(out, sp)]
                assert _streaming(out, sp, tmp_path / f"cache-{profile}-{sp}",
                                  lambda x: _modernbert_streaming_sample(x, CHUNK)) == got
            elif profile == "llm-foundry":
                got = _streaming(out, sp, tmp_path / f"cache-{profile}-{sp}", lambda x: _llm_foundry_sample(x, CHUNK))
            else:
                header, got, _ = _numpy_read(out / sp)
                assert header["dtype"] == "uint32" if name == "dolma2" else header["dtype"] == "uint16"
            assert got == [ids for _, ids in want], (profile, sp)
            decoded = _decode_documents(list(zip([d for d, _ in want], got, strict=True)), tok, bos_id, eos_id)
            assert decoded == {d: texts[d] for d in docs}, (profile, sp)
        r = runner.invoke(app, ["stats", "--verify", str(out)])
        assert r.exit_code == 0, (profile, r.output)


def test_options_are_checked_in_one_line(framed, tmp_path):
    name, base, _, _ = framed
    if name != "dolma2":
        pytest.skip("the refusals are the same for every tokenizer; checked on dolma2")
    tokens = str(base / "tokens")

    def err(*args: str, code: int) -> str:
        r = runner.invoke(app, ["chunk", tokens, "-o", str(tmp_path / "o"), *args])
        lines = [x for x in r.stderr.strip().splitlines() if not x.startswith("(run with --debug")]
        assert r.exit_code == code and len(lines) == 1, (r.exit_code, r.stderr)
        return lines[0]

    line = err(code=2)
    assert "defines no BOS token (its EOS id is 100257)" in line and "--bos none" in line
    assert "is not a token of tokenizer" in err("--bos", "<nope>", code=2)
    assert "add-eos-token" in err("--bos", "none", "--eos", "none", "--add-eos-token", code=2)
    assert not (tmp_path / "o").exists() or not find_units(tmp_path / "o")
    # any token of the tokenizer can frame: <|im_start|> ... <|im_end|>
    s = run(ChunkConfig(inputs=[tokens], output=str(tmp_path / "im"), workers=1, bos="<|im_start|>",
                        eos="<|im_end|>", **SIZES))
    assert s["framing"] == {"bos": "<|im_start|>", "bos_id": 100264, "eos": "<|im_end|>", "eos_id": 100265}
    got = read_chunks(tmp_path / "im")
    assert all(ids[0] == 100264 and ids[-1] == 100265 for _, ids in got)
    assert verify(tmp_path / "im") == []


def test_prepare_frames_like_tokenize_then_chunk(framed, tmp_path):
    name, base, tok, _ = framed
    if name != "dolma2":
        pytest.skip("prepare composes the same framing code for every tokenizer; checked on dolma2")
    run(PrepareConfig(inputs=["builtin:python-docs"], output=str(tmp_path / "p"), tokenizer=str(tok), workers=1,
                      docs_per_shard=50, bos="none", **SIZES))
    staged, fused = base / "chunks", tmp_path / "p"
    assert find_units(staged) == find_units(fused)
    for u in find_units(staged):
        a, b = UnitReader(staged / u), UnitReader(fused / u)
        assert a.index == b.index  # same shards, same sha1s
    for f in ("stats.json",):
        assert json.loads((staged / f).read_text()) == json.loads((fused / f).read_text())
    assert json.loads((fused / "ettin_meta.json").read_text())["framing"]["eos_id"] == 100257
    assert np.all([ids[-1] == 100257 for _, ids in read_chunks(fused)])
