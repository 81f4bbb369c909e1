"""finalize --for LOADER: each profile's output read the way its loader reads it (the read paths are
re-implemented here from the loaders' source, see ettin_data/profiles.py) gives exactly the chunks that
``chunk`` wrote, per split and in order; ``stats --verify`` checks each profile's invariants and flags
columns a known loader would misread (the default output read by ModernBERT's streaming loader)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers_chunks import load_json, make_chunks, read_chunks, tokenizer_identity
from pydantic import ValidationError
from test_finalize import _modernbert_read
from typer.testing import CliRunner

from ettin_data import run
from ettin_data.cli import app
from ettin_data.config import FinalizeConfig, SplitConfig
from ettin_data.verify import verify

SPLITS = ("train", "validation")
CHUNK = 256
PAD = 50283


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two chunked datasets, each split; the chunks each split must hold, in order: per dataset (INPUT
    order) the chunks as `chunk` wrote them, keeping those of the split's documents."""
    base = tmp_path_factory.mktemp("profiles")
    chunks = {}
    for name, seed in (("web", 3), ("books", 4)):
        chunks[name] = make_chunks(base / "chunks" / name, n_units=3, docs_per_unit=20, seed=seed, source=name,
                                   chunk_size=CHUNK)
        run(SplitConfig(inputs=[str(base / "chunks" / name)], output=str(base / "split" / name),
                              validation_fraction=0.25, workers=1))
    expected = {}
    for s in SPLITS:
        expected[s] = []
        for name in chunks:
            docs = {d for d, _ in read_chunks(base / "split" / name / s)}
            expected[s] += [c for c in chunks[name] if c[0] in docs]
    assert expected["train"] and expected["validation"]
    assert sorted(expected["train"] + expected["validation"]) == sorted(c for n in chunks for c in chunks[n])
    return base, expected


def _finalize(data, out: Path, **kw) -> dict:
    base, _ = data
    return run(FinalizeConfig(inputs=[str(base / "split" / "web"), str(base / "split" / "books")],
                                       output=str(out), workers=1, **kw))


def _streaming(out: Path, split_name: str, local: Path, read) -> list:
    """Every sample of a split through mosaicml-streaming's StreamingDataset (remote=out, local cache)."""
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    ds = StreamingDataset(remote=str(out), local=str(local), split=split_name, shuffle=False, batch_size=1)
    got = [read(ds[i]) for i in range(len(ds))]
    del ds
    clean_stale_shared_memory()
    return got


def _modernbert_streaming_sample(sample: dict, max_seq_len: int = CHUNK) -> tuple[int, ...]:
    """ModernBERT src/text_data.py StreamingTextDataset._read_binary_tokenized_sample (streaming: true):
    length from `len` (else len(input_ids)), ids = np.frombuffer(input_ids, int64), padded/truncated to
    max_seq_len with an attention mask; returns the unpadded ids the model sees."""
    seq_len = sample["len"] if "len" in sample else len(sample["input_ids"])
    input_ids = np.frombuffer(sample["input_ids"], dtype=np.int64).copy()
    attention_mask = np.ones_like(input_ids)
    pad_len = max_seq_len - seq_len
    if pad_len > 0:
        input_ids = np.pad(input_ids, (0, pad_len), constant_values=PAD)
        attention_mask = np.pad(attention_mask, (0, pad_len), constant_values=0)
    elif pad_len < 0:
        input_ids, attention_mask = input_ids[:max_seq_len], attention_mask[:max_seq_len]
    assert len(input_ids) == max_seq_len, "collation needs every sample at max_seq_len"
    return tuple(input_ids[attention_mask.astype(bool)].tolist())


def _llm_foundry_sample(sample: dict, max_seq_len: int = CHUNK) -> tuple[int, ...]:
    """llm-foundry llmfoundry/data/text_data.py StreamingTextDataset.__getitem__: `text` first, else `tokens`;
    an ndarray is cut to max_seq_len and cast to int64, bytes are np.frombuffer(tokens, token_encoding_type
    = int64). Older releases always do np.frombuffer(tokens, int64): both must give the same ids."""
    assert "text" not in sample and "tokens" in sample
    tokens = sample["tokens"]
    if isinstance(tokens, np.ndarray):
        ids = tokens[:max_seq_len].copy().astype(np.int64)
    else:
        ids = np.frombuffer(tokens, dtype=np.int64)[:max_seq_len].copy()
    old = np.frombuffer(tokens, dtype=np.int64)[:max_seq_len].copy()
    assert np.array_equal(ids, old)
    return tuple(ids.tolist())


def _ids(chunks: list) -> list[tuple[int, ...]]:
    return [ids for _, ids in chunks]


@pytest.mark.parametrize("compressed", [False, True])
def test_modernbert_streaming_reads_every_chunk_in_order(data, tmp_path, compressed):
    out = tmp_path / "out"
    s = _finalize(data, out, loader="modernbert-streaming", keep_compressed=compressed)
    assert s["problems"] == [] and s["warnings"] == [] and s["profile"] == "modernbert-streaming"
    for sp in SPLITS:
        index = load_json(out / sp / "index.json")
        assert {dict(zip(sh["column_names"], sh["column_encodings"], strict=True))["input_ids"]
                for sh in index["shards"]} == {"ndarray:int64"}
        assert {sh["compression"] for sh in index["shards"]} == {"zstd" if compressed else None}
        got = _streaming(out, sp, tmp_path / f"cache-{sp}", _modernbert_streaming_sample)
        assert got == _ids(data[1][sp])
        if not compressed:  # the same files read by streaming: false too (any integer array)
            assert [tuple(a.tolist()) for a in _modernbert_read(out, sp)] == _ids(data[1][sp])
    m = load_json(out / "manifest.json")
    assert m["profile"] == "modernbert-streaming"
    assert {sp: (m["splits"][sp]["samples"], m["splits"][sp]["tokens"]) for sp in SPLITS} == \
        {sp: (len(data[1][sp]), sum(len(x) for x in _ids(data[1][sp]))) for sp in SPLITS}


def test_llm_foundry_reads_the_tokens_column(data, tmp_path):
    out = tmp_path / "out"
    s = _finalize(data, out, loader="llm-foundry")
    assert s["problems"] == [] and s["warnings"] == []
    for sp in SPLITS:
        index = load_json(out / sp / "index.json")
        assert all(sh["column_names"] == ["id", "len", "tokens"] for sh in index["shards"])
        assert all(sh["column_encodings"][2] == "ndarray:int64" for sh in index["shards"])
        assert _streaming(out, sp, tmp_path / f"cache-{sp}", _llm_foundry_sample) == _ids(data[1][sp])
    assert [st["stage"] for st in load_json(out / "manifest.json")["datasets"]["web"]["stages"]] == \
        ["tokenize", "chunk", "sample split"]
    r = CliRunner().invoke(app, ["stats", "--verify", str(out), "--json"])
    assert r.exit_code == 0, r.output
    body = json.loads(r.output)
    assert body["tokens"] == sum(len(x) for sp in SPLITS for x in _ids(data[1][sp])) and "warnings" not in body


def _numpy_read(root: Path) -> tuple[dict, list[tuple[int, ...]], np.ndarray]:
    """OLMo MemMapDataset-style: np.memmap of the raw token file with the header's dtype; chunk
    boundaries from offsets.npy."""
    header = json.loads((root / "header.json").read_text())
    tokens = np.memmap(root / header["files"]["tokens"], dtype=header["dtype"], mode="r")
    offsets = np.load(root / header["files"]["offsets"])
    return header, [tuple(tokens[a:b].tolist()) for a, b in zip(offsets[:-1], offsets[1:], strict=True)], tokens


def test_numpy_flat_files_hold_every_chunk_in_order(data, tmp_path):
    out = tmp_path / "out"
    s = _finalize(data, out, loader="numpy")
    assert s["problems"] == [] and s["warnings"] == []
    m = load_json(out / "manifest.json")
    assert m["profile"] == "numpy"
    for sp in SPLITS:
        header, got, tokens = _numpy_read(out / sp)
        want = data[1][sp]
        assert got == _ids(want)
        assert header["dtype"] == "uint16" and tokens.dtype == np.uint16  # vocabulary 50,368 fits
        assert (out / sp / "tokens.npy").stat().st_size == 2 * sum(len(x) for x in _ids(want))
        assert header["chunks"] == len(want) == m["splits"][sp]["samples"]
        assert header["tokens"] == len(tokens) == m["splits"][sp]["tokens"]
        assert header["vocab_size"] == 50368 and header["tokenizer"] == tokenizer_identity()
        # OLMo's MemMapDataset reads fixed windows of chunk_size ids (np.frombuffer of a byte range of the
        # raw file, ceil(file_size / (itemsize * chunk_size)) instances): back to back they are the chunks
        raw, item = (out / sp / "tokens.npy").read_bytes(), np.dtype(header["dtype"]).itemsize
        windows = [np.frombuffer(raw[i * item * CHUNK:(i + 1) * item * CHUNK], header["dtype"]).astype(np.int64)
                   for i in range(-(-len(raw) // (item * CHUNK)))]
        assert np.concatenate(windows).tolist() == [t for x in _ids(want) for t in x]
        rows = gzip.decompress((out / sp / "metadata.csv.gz").read_bytes()).decode().splitlines()
        assert [r.split(",")[2] for r in rows] == [d for d, _ in want]
        assert {r.split(",")[3] for r in rows} == {"web", "books"}
        assert not (out / sp / "index.json").exists() and not (out / sp / "web").exists()
        assert {e["file"] for e in m["shards"][sp]} >= {"tokens.npy", "offsets.npy", "header.json"}
    r = CliRunner().invoke(app, ["stats", "--verify", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["samples"] == sum(len(data[1][sp]) for sp in SPLITS)


def test_numpy_output_is_identical_for_any_worker_count_and_uint32_for_big_vocabularies(data, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _finalize(data, a, loader="numpy")
    base, _ = data
    run(FinalizeConfig(inputs=[str(base / "split" / "web"), str(base / "split" / "books")],
                                output=str(b), workers=2, loader="numpy"))
    for sp in SPLITS:
        for f in ("tokens.npy", "offsets.npy", "metadata.csv.gz"):
            assert (a / sp / f).read_bytes() == (b / sp / f).read_bytes(), f
    big = tmp_path / "big"
    tok = dict(tokenizer_identity(), vocab_size=100_000)
    chunks = make_chunks(big / "chunks", n_units=2, docs_per_unit=8, seed=9, tokenizer=tok)
    run(SplitConfig(inputs=[str(big / "chunks")], output=str(big / "split"), validation_fraction=0.3,
                          workers=1))
    s = run(FinalizeConfig(inputs=[str(big / "split")], output=str(big / "out"), workers=1, loader="numpy"))
    assert s["problems"] == []
    got = []
    for sp in SPLITS:
        header, ids, _ = _numpy_read(big / "out" / sp)
        assert header["dtype"] == "uint32"
        got += ids
    assert sorted(got) == sorted(_ids(chunks))


def test_default_output_is_flagged_for_modernbert_streaming_with_the_fix(data, tmp_path):
    out = tmp_path / "out"
    s = _finalize(data, out)
    assert s["profile"] == "modernbert" and s["problems"] == []
    assert len(s["warnings"]) == 1 and "finalize --for modernbert-streaming" in s["warnings"][0]
    # what a new user gets with streaming: true on the default output: not the chunks
    def as_int64(smp: dict) -> tuple[int, ...] | None:
        try:
            return tuple(np.frombuffer(smp["input_ids"], np.int64).tolist())
        except ValueError:  # an odd number of uint32 ids: "buffer size must be a multiple of element size"
            return None

    got = _streaming(out, "train", tmp_path / "cache", as_int64)
    assert all(g != w for g, w in zip(got, _ids(data[1]["train"]), strict=True))  # not one chunk read right
    assert None in got and max(max(x) for x in got if x) > 50368  # crashes, and ids no embedding table has
    r = CliRunner().invoke(app, ["stats", "--verify", str(out)])
    assert r.exit_code == 0, r.output  # a warning, not a failed verification: streaming: false reads it
    assert "warning" in r.output and "modernbert-streaming" in r.output.replace("\n", "")
    r = CliRunner().invoke(app, ["stats", "--verify", str(out / "train"), "--json"])
    assert r.exit_code == 0
    (w,) = json.loads(r.output)["warnings"]
    assert "ndarray:uint32" in w and "np.frombuffer(input_ids, int64)" in w and w.endswith(
        "`ettin-data finalize --for modernbert-streaming`")
    # a foreign MDS dataset (no ettin metadata) is checked the same way; our intermediate outputs are not
    base, _ = data
    foreign = tmp_path / "foreign"
    shutil.copytree(base / "chunks" / "web" / "web" / "split_00000", foreign)
    assert "warnings" in json.loads(CliRunner().invoke(app, ["stats", "--verify", str(foreign), "--json"]).output)
    assert "warnings" not in json.loads(CliRunner().invoke(
        app, ["stats", "--verify", str(base / "chunks" / "web"), "--json"]).output)


def test_verify_checks_each_profiles_invariants(data, tmp_path):
    # numpy: the flat file must hold exactly offsets[-1] ids
    out = tmp_path / "np"
    _finalize(data, out, loader="numpy")
    f = out / "train" / "tokens.npy"
    f.write_bytes(f.read_bytes()[:-4])
    problems = verify(out)
    assert any(str(out / "train" / "offsets.npy") in p and "holds" in p for p in problems), problems
    r = CliRunner().invoke(app, ["stats", "--verify", str(out / "train"), "--json"])
    assert r.exit_code == 1 and "offsets.npy" in " ".join(json.loads(r.output)["problems"])
    # modernbert-streaming: uint32 ids under that profile are what the loader misreads
    out = tmp_path / "relabelled"
    _finalize(data, out)
    m = load_json(out / "manifest.json")
    (out / "manifest.json").write_text(json.dumps(dict(m, profile="modernbert-streaming")))
    assert any("input_ids is ndarray:uint32" in p and "ndarray:int64" in p for p in verify(out))
    # llm-foundry: ids as the loader decodes them must be below the vocabulary
    out = tmp_path / "lf"
    _finalize(data, out, loader="llm-foundry")
    m = load_json(out / "manifest.json")
    (out / "manifest.json").write_text(json.dumps(dict(m, tokenizer=dict(m["tokenizer"], vocab_size=1000))))
    assert any("outside [0, 1000)" in p for p in verify(out))


def test_loader_option_errors_and_cli_flag(data, tmp_path):
    base, expected = data
    with pytest.raises(ValidationError, match="reads input_ids as int64"):
        FinalizeConfig(inputs=["x"], output="o", loader="modernbert-streaming", dtype="uint32")
    with pytest.raises(ValidationError, match="keep input_ids"):
        FinalizeConfig(inputs=["x"], output="o", loader="llm-foundry", columns=["id"])
    with pytest.raises(ValidationError, match="local or shared folder"):
        FinalizeConfig(inputs=["x"], output="s3://bucket/final", loader="numpy")
    r = CliRunner().invoke(app, ["finalize", str(base / "split" / "web"), "-o", str(tmp_path / "o"), "--for",
                                 "numpy", "--dtype", "uint16", "--json", "-w", "1"])
    assert r.exit_code == 0, r.output
    body = json.loads(r.output)
    assert body["profile"] == "numpy" and body["verified"] is True
    assert load_json(tmp_path / "o" / "train" / "header.json")["dtype"] == "uint16"
    r = CliRunner().invoke(app, ["finalize", str(base / "split" / "web"), "-o", str(tmp_path / "p"), "--for",
                                 "keras"])
    assert r.exit_code == 2
