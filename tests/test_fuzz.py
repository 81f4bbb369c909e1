"""Property-based tests (hypothesis) through the real stages.

tokenize: for random unicode documents (0 to ~100k tokens) the byte-level ModernBERT tokenizer round-trips,
decode(tokenize(text)) == NFC(text) with special tokens skipped; empty documents are counted, not lost.
chunk: on small generated token datasets and random settings, every chunk is [BOS] + piece + [EOS] with
len <= chunk_size, every piece is a contiguous run of its document's content, pieces come in document
order, the token accounting closes, and without skipping nothing is lost or repeated.
"""

from __future__ import annotations

import shutil
import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ettin_data import run
from ettin_data.mds import TEXT_COLUMNS, TOKEN_COLUMNS, ShardWriter, UnitReader, write_root_index

BOS, EOS = 50281, 50282
# deterministic (derandomize) so CI runs are reproducible; no example database written into the checkout
FAST = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def tok():
    from ettin_data.tokenizer import load_tokenizer

    t = load_tokenizer("builtin:modernbert")
    t.no_truncation()
    t.no_padding()
    return t


def _special_texts(tok) -> list[str]:
    return [t.content for t in tok.get_added_tokens_decoder().values()]


# A document: a random unicode string (no lone surrogates: convert replaces those), repeated to reach long
# lengths cheaply (up to ~60k characters, i.e. up to ~100k tokens for dense scripts).
piece = st.text(st.characters(blacklist_categories=("Cs",)), max_size=120)
documents = st.tuples(piece, st.integers(1, 500)).map(lambda t: t[0] * min(t[1], 60_000 // max(1, len(t[0]))))


def _no_special(tok, texts: list[str]) -> None:
    specials = _special_texts(tok)
    assume(not any(s in t for t in texts for s in specials))


@settings(FAST, max_examples=150)
@given(st.lists(documents, min_size=1, max_size=8))
def test_byte_level_round_trip(tok, texts):
    _no_special(tok, texts)
    for text, enc in zip(texts, tok.encode_batch(texts, add_special_tokens=True), strict=True):
        ids = enc.ids
        assert ids[0] == BOS and ids[-1] == EOS
        assert tok.decode(ids, skip_special_tokens=True) == unicodedata.normalize("NFC", text)


def _text_dataset(root: Path, texts: list[str]) -> Path:
    with ShardWriter(root / "u", TEXT_COLUMNS, size_limit=1 << 16) as w:
        for i, t in enumerate(texts):
            w.write({"id": f"d{i}", "text": t})
    write_root_index(root, ["u"])
    return root


@settings(FAST, max_examples=6)
@given(st.lists(documents, min_size=1, max_size=6))
def test_tokenize_stage_round_trip(tok, texts):
    from ettin_data.config import TokenizeConfig

    _no_special(tok, texts)
    with tempfile.TemporaryDirectory() as d:
        src = _text_dataset(Path(d) / "text", texts)
        s = run(TokenizeConfig(inputs=[str(src)], output=str(Path(d) / "tok"),
                                        tokenizer="builtin:modernbert", workers=1))
        got = list(UnitReader(Path(d) / "tok" / "u").iter_samples())
    kept = [(f"d{i}", t) for i, t in enumerate(texts) if t]  # "" alone has no content tokens
    assert s["documents_in"] == len(texts) and s["skipped"]["empty_tokens"] == len(texts) - len(kept)
    assert [g["id"] for g in got] == [i for i, _ in kept]
    for g, (_, text) in zip(got, kept, strict=True):
        assert g["len"] == len(g["input_ids"])
        assert tok.decode(g["input_ids"].tolist(), skip_special_tokens=True) == unicodedata.normalize("NFC", text)
    assert s["tokens"] == sum(g["len"] for g in got)


@st.composite
def chunk_settings(draw):
    size = draw(st.integers(3, 300))
    p = size - 2
    backfill = draw(st.booleans())
    return {
        "chunk_size": size,
        "min_chunk_size": draw(st.integers(0, p)),
        "always_skip_size": draw(st.integers(0, p)),
        "backfill": backfill,
        "backfill_no_duplicates": backfill and draw(st.booleans()),
        "add_eos_token": draw(st.booleans()),
        "enforce_min_chunk_size_zeroth": draw(st.booleans()),
        "word_boundaries": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31)),
    }


token_docs = st.lists(st.integers(0, 3000), min_size=1, max_size=6)


def _find(content: np.ndarray, part: np.ndarray, start: int) -> int:
    """Index of the first occurrence of ``part`` in ``content`` at or after ``start`` (-1 if none)."""
    hay, needle, i = content.tobytes(), part.tobytes(), start * 4
    while True:
        i = hay.find(needle, i)
        if i < 0 or i % 4 == 0:
            return i // 4 if i >= 0 else -1
        i += 1


@pytest.fixture(scope="module")
def meta_source(token_dataset):
    return token_dataset


@settings(FAST, max_examples=20)
@given(cfg=chunk_settings(), lengths=token_docs, seed=st.integers(0, 1000))
def test_chunk_stage_invariants(meta_source, cfg, lengths, seed):
    from ettin_data.config import ChunkConfig

    rng = np.random.default_rng(seed)
    docs = [np.concatenate([[BOS], rng.integers(300, 50_000, n), [EOS]]).astype(np.uint32) for n in lengths]
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "tokens"
        src.mkdir()
        for name in ("ettin_meta.json", "tokenizer.json"):
            shutil.copyfile(meta_source / name, src / name)
        with ShardWriter(src / "u", TOKEN_COLUMNS, size_limit=1 << 15) as w:
            for i, ids in enumerate(docs):
                w.write({"id": f"d{i}", "input_ids": ids, "len": len(ids)})
        write_root_index(src, ["u"])
        s = run(ChunkConfig(inputs=[str(src)], output=str(Path(d) / "ch"), workers=1, **cfg))
        chunks = list(UnitReader(Path(d) / "ch" / "u").iter_samples())
    size = cfg["chunk_size"]
    assert s["documents"] == len(docs) and s["samples"] == len(chunks)
    assert s["content_tokens_in"] == s["content_tokens_written"] + s["total_tokens_skipped"] - s[
        "total_duplicated_tokens"]
    assert s["total_tokens_written"] == sum(c["len"] for c in chunks) == s["content_tokens_written"] + 2 * len(chunks)
    no_dups = not cfg["backfill"] or cfg["backfill_no_duplicates"]
    if no_dups:
        assert s["total_duplicated_tokens"] == 0
    order = [int(c["id"][1:]) for c in chunks]
    assert order == sorted(order)  # document order kept
    for i, ids in enumerate(docs):
        content = ids[1:] if cfg["add_eos_token"] and len(ids) > 2 else ids[1:-1]
        mine = [c["input_ids"] for c in chunks if c["id"] == f"d{i}"]
        pos = prev = 0
        for c in mine:
            assert c[0] == BOS and c[-1] == EOS and 3 <= len(c) <= size
            part = c[1:-1]
            at = _find(content, part, pos if no_dups else prev)
            assert at >= 0, "a piece that is not a contiguous run of its document (in order)"
            prev, pos = at, at + len(part)
        if no_dups and cfg["min_chunk_size"] == 0 and cfg["always_skip_size"] == 0:
            got = np.concatenate([m[1:-1] for m in mine]) if mine else content[:0]
            assert np.array_equal(got, content)  # nothing lost, nothing repeated
