"""chunk: the kernel's invariants (property tests against a literal port of the seed's rules) and the stage
(accounting, stats files, byte-identical outputs for 1 and 2 workers, word boundaries, tokenizer checks)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ettin_data import run
from ettin_data.chunking import ChunkParams, backfill_draw, chunk_document, content_tokens, piece_bounds, window
from ettin_data.cli import app
from ettin_data.config import ChunkConfig
from ettin_data.corpus import python_docs
from ettin_data.errors import ConfigError, InputError
from ettin_data.mds import ShardWriter, UnitReader
from ettin_data.stages import chunk

BOS, EOS = 20, 21  # kernel tests: content ids 0..21 (BOS/EOS may also occur inside a document)

# ---------------------------------------------------------------- kernel


def _reference(ids: list[int], p: ChunkParams, doc_id: str) -> tuple[list[list[int]], int, int]:
    """The seed's ``chunk_instance`` rewritten literally (np.array_split pieces), with the issue's step 1."""
    core = list(ids)
    if p.strip_special:
        if core and core[0] == p.bos_id:
            core = core[1:]
        if core and core[-1] == p.eos_id:
            core = core[:-1]
    if not core:
        return [], 0, 0
    tokens = core + [p.eos_id] if p.add_eos else core
    size = p.chunk_size - 2
    initial = [tokens[i:i + size] for i in range(0, len(tokens), size)]
    chunks: list[list[int]] = []
    dup = skipped = draws = 0
    for i, ch in enumerate(initial):
        if len(ch) < p.always_skip_size and (i != 0 or p.enforce_zeroth):
            skipped += len(ch)
            continue
        if len(ch) < p.min_chunk_size:
            if p.backfill and chunks:
                prev = chunks[-1]
                if not p.backfill_no_duplicates:
                    extra = size - len(ch)
                    dup += extra
                    new = prev[-extra:] + ch
                else:
                    r = backfill_draw(p.seed, doc_id, draws, min(size - len(ch), len(prev)))
                    draws += 1
                    new = prev[-r:] + ch if r else ch
                    if r:
                        chunks[-1] = prev[:-r]
                chunks.append(new)
            elif i == 0:
                chunks.append(ch)
            else:
                skipped += len(ch)
        else:
            chunks.append(ch)
    return [[p.bos_id, *c, p.eos_id] for c in chunks], dup, skipped


@st.composite
def _case(draw, word_table: bool = False):
    cs = draw(st.one_of(st.integers(3, 64), st.just(1024)))
    size = cs - 2
    backfill = draw(st.booleans())
    table = None
    if word_table:
        table = np.array(draw(st.lists(st.booleans(), min_size=22, max_size=22)))
        table[[BOS, EOS]] = False
    p = ChunkParams(
        chunk_size=cs, bos_id=BOS, eos_id=EOS, min_chunk_size=draw(st.integers(0, size)),
        always_skip_size=draw(st.integers(0, size)), backfill=backfill,
        backfill_no_duplicates=backfill and draw(st.booleans()), enforce_zeroth=draw(st.booleans()),
        add_eos=draw(st.booleans()), strip_special=draw(st.booleans()), seed=draw(st.integers(-5, 2**40)),
        word_start=table,
    )
    n = draw(st.integers(0, 4 * size + 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.integers(0, 22, n)
    ids = np.concatenate([[BOS], x, [EOS]]) if p.strip_special else x
    dtype = draw(st.sampled_from([np.uint32, np.uint16]))
    return p, ids.astype(dtype), x, draw(st.text(max_size=8))


def _check_common(p: ChunkParams, ids: np.ndarray, x: np.ndarray, chunks, c) -> np.ndarray:
    content = x if not len(x) or not p.add_eos else np.append(x, EOS)
    assert content_tokens(ids, p).tolist() == content.tolist()
    assert c.content == len(content)
    for ch in chunks:
        assert ch.dtype == ids.dtype
        assert 3 <= len(ch) <= p.chunk_size
        assert ch[0] == BOS and ch[-1] == EOS
    assert c.written == sum(len(ch) - 2 for ch in chunks)
    assert c.content == c.written + c.skipped - c.duplicated
    if not p.backfill or p.backfill_no_duplicates:
        assert c.duplicated == 0
        # no token duplicated: contents concatenated are the content in order, minus the counted skipped tail
        joined = np.concatenate([ch[1:-1] for ch in chunks]) if chunks else np.array([], ids.dtype)
        assert joined.tolist() == content[:len(content) - c.skipped].tolist()
    return content


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_case())
def test_kernel_matches_the_seed_rules_and_invariants(case):
    p, ids, x, doc_id = case
    chunks, c = chunk_document(ids, p, doc_id)
    ref, dup, skipped = _reference(ids.tolist(), p, doc_id)
    assert [ch.tolist() for ch in chunks] == ref
    assert (c.duplicated, c.skipped) == (dup, skipped)
    content = _check_common(p, ids, x, chunks, c)
    size = p.chunk_size - 2
    # every chunk but a backfilled pair / the last is a full piece
    full = [len(ch) - 2 == size for ch in chunks]
    assert all(full[:-2])
    if p.backfill and not p.backfill_no_duplicates and c.duplicated:
        # duplicates: a backfilled last chunk is full and its head repeats the previous chunk's tail
        assert len(chunks[-1]) - 2 == size
        assert chunks[-1][1:1 + c.duplicated].tolist() == chunks[-2][-1 - c.duplicated:-1].tolist()
    if len(content) and len(content) <= size:  # one piece: the first-piece rule decides alone
        dropped = (p.enforce_zeroth and len(content) < p.always_skip_size)
        assert (len(chunks), c.skipped) == ((0, len(content)) if dropped else (1, 0))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_case(word_table=True))
def test_word_boundary_cuts(case):
    p, ids, x, doc_id = case
    content = content_tokens(ids, p)
    cuts, moved = piece_bounds(content, p)
    size, back = p.chunk_size - 2, window(p.chunk_size - 2)
    floor = max(p.min_chunk_size, p.always_skip_size, 1)
    assert cuts[0] == 0 and cuts[-1] == len(content)
    for k in range(1, len(cuts) - 1):
        s, cut, e = cuts[k - 1], cuts[k], cuts[k - 1] + size
        lo = max(s + floor, e - back)
        starts = [j for j in range(lo, e + 1) if p.word_start[content[j]]]
        # the cut is the last word start in reach, else the plain cut
        assert cut == (starts[-1] if starts else e)
        assert floor <= cut - s <= size
    assert 0 <= cuts[-1] - cuts[-2] <= size
    assert moved == sum(1 for k in range(1, len(cuts) - 1) if cuts[k] - cuts[k - 1] != size)
    chunks, c = chunk_document(ids, p, doc_id)
    _check_common(p, ids, x, chunks, c)
    assert c.cuts_moved == moved
    # a table of all-False or all-True never moves a cut
    for fill in (False, True):
        q = replace(p, word_start=np.full(22, fill))
        assert [ch.tolist() for ch in chunk_document(ids, q, doc_id)[0]] == _reference(ids.tolist(), p, doc_id)[0]


def test_backfill_draw_is_stable_and_uniform():
    assert backfill_draw(42, "doc", 0, 100) == backfill_draw(42, "doc", 0, 100)
    draws = [backfill_draw(42, f"d{i}", 0, 10) for i in range(5000)]
    counts = np.bincount(draws, minlength=10)
    assert counts.min() > 400 and counts.max() < 600
    assert backfill_draw(1, "doc", 0, 1) == 0
    assert len({backfill_draw(s, "doc", 0, 1 << 30) for s in range(20)}) == 20


def test_enforce_zeroth_and_first_piece():
    p = ChunkParams(chunk_size=12, bos_id=BOS, eos_id=EOS, min_chunk_size=8, always_skip_size=5)
    ids = np.array([BOS, 1, 2, 3, EOS], np.uint32)
    chunks, c = chunk_document(ids, p)
    assert [ch.tolist() for ch in chunks] == [[BOS, 1, 2, 3, EOS]] and c.skipped == 0
    q = replace(p, enforce_zeroth=True)
    chunks, c = chunk_document(ids, q)
    assert chunks == [] and c.skipped == 3 and c.pieces_skipped == 1
    # a later short piece: dropped, or backfilled with/without duplicates
    ids = np.array([BOS, *range(1, 17), EOS], np.uint32)  # 16 content tokens: pieces of 10 and 6
    chunks, c = chunk_document(ids, p)
    assert [len(ch) for ch in chunks] == [12] and c.skipped == 6
    d = replace(p, backfill=True)
    chunks, c = chunk_document(ids, d)
    assert chunks[1].tolist() == [BOS, *range(7, 17), EOS] and c.duplicated == 4
    nd = replace(p, backfill=True, backfill_no_duplicates=True)
    chunks, c = chunk_document(ids, nd, "x")
    r = backfill_draw(42, "x", 0, 4)
    assert [len(ch) - 2 for ch in chunks] == [10 - r, 6 + r] and c.duplicated == 0
    e = replace(p, add_eos=True, strip_special=False)
    chunks, _ = chunk_document(np.array([1, 2], np.uint32), e)
    assert chunks[0].tolist() == [BOS, 1, 2, EOS, EOS]
    assert chunk_document(np.array([BOS, EOS], np.uint32), p)[0] == []


# ---------------------------------------------------------------- stage

TEXTS = [d["text"] for d in python_docs()][:48]


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory) -> Path:
    """A byte-level BPE (vocab 400) trained on a few docstrings, with [CLS] $A [SEP] post-processing."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXTS, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def _token_dataset(root: Path, tok_path: Path, texts: list[str], units: int = 2, special: bool = True,
                   dtype: str = "uint32", domain: bool = False) -> Path:
    """A token dataset as tokenize writes it (contract.md): units, ettin_meta.json, tokenizer.json."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_path))
    encs = tok.encode_batch(texts, add_special_tokens=special)
    per = -(-len(texts) // units)
    cols = {"id": "str", "input_ids": f"ndarray:{dtype}", "len": "int", **({"domain": "str"} if domain else {})}
    for u in range(units):
        with ShardWriter(root / "docs" / f"split_{u:05d}", cols, size_limit=1 << 16) as w:
            for i in range(u * per, min(len(texts), (u + 1) * per)):
                ids = np.array(encs[i].ids, dtype)
                w.write({"id": f"doc-{i}", "input_ids": ids, "len": len(ids),
                         **({"domain": f"d{i % 3}"} if domain else {})})
    data = tok_path.read_bytes()
    (root / "tokenizer.json").write_bytes(data)
    special_ids = sorted(i for i, t in tok.get_added_tokens_decoder().items() if t.special)
    meta = {"stage": "tokenize", "settings": {}, "inputs": [], "upstream": [], "tokenizer": {
        "name": str(tok_path), "sha256": hashlib.sha256(data).hexdigest(), "vocab_size": tok.get_vocab_size(),
        "bos_id": tok.token_to_id("[CLS]"), "eos_id": tok.token_to_id("[SEP]"), "pad_id": tok.token_to_id("[PAD]"),
        "special_ids": special_ids, "special_tokens_added": special, "prefix_space": False}}
    (root / "ettin_meta.json").write_text(json.dumps(meta))
    return root


def _run(inp: Path, out: Path, **kw):
    kw.setdefault("workers", 1)
    return run(ChunkConfig(inputs=[str(inp)], output=str(out), **kw))


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".ettin_logs" not in p.parts}  # run logs differ


def _docs(root: Path) -> dict[str, np.ndarray]:
    out = {}
    for unit in sorted((root / "docs").iterdir()):
        for s in UnitReader(unit).iter_samples():
            out[s["id"]] = s["input_ids"]
    return out


def _chunks(root: Path) -> list[dict]:
    from ettin_data.mds import find_units

    return [s for u in find_units(root) for s in UnitReader(root / u).iter_samples()]


SETTINGS_1024 = dict(chunk_size=1024, min_chunk_size=512, always_skip_size=128, backfill=True,
                     backfill_no_duplicates=True)


@pytest.fixture(scope="module")
def dataset(tiny_tokenizer, tmp_path_factory) -> Path:
    # mix in long documents (several docstrings joined) so 8192-token chunks get continuations
    texts = TEXTS[:40] + ["\n\n".join(TEXTS[i:i + 12]) for i in range(0, 48, 12)]
    return _token_dataset(tmp_path_factory.mktemp("tokens"), tiny_tokenizer, texts, units=3, domain=True)


@pytest.mark.parametrize("kw", [SETTINGS_1024, dict(chunk_size=8192, min_chunk_size=512, always_skip_size=128,
                                                    backfill=True, backfill_no_duplicates=True),
                                dict(chunk_size=64, min_chunk_size=40, always_skip_size=8, word_boundaries=False)])
def test_stage_outputs_are_exact(dataset, tmp_path, kw):
    summary = _run(dataset, tmp_path / "out", **kw)
    out = tmp_path / "out"
    meta = json.loads((dataset / "ettin_meta.json").read_text())["tokenizer"]
    bos, eos, cs = meta["bos_id"], meta["eos_id"], kw["chunk_size"]
    docs, got = _docs(dataset), _chunks(out)
    assert got and all(s["input_ids"][0] == bos and s["input_ids"][-1] == eos for s in got)
    assert all(s["len"] == len(s["input_ids"]) <= cs for s in got)
    assert {s["domain"] for s in got} == {"d0", "d1", "d2"}
    # no duplicates: per document, chunk contents concatenated = its content minus the skipped tail
    skipped = 0
    for doc_id, ids in docs.items():
        joined = [t for s in got if s["id"] == doc_id for t in s["input_ids"][1:-1].tolist()]
        content = ids[1:-1].tolist()
        assert joined == content[:len(joined)]
        skipped += len(content) - len(joined)
    assert any(len(d) > cs for d in docs.values())
    content_in = sum(len(d) - 2 for d in docs.values())
    assert summary["content_tokens_in"] == content_in
    assert summary["total_tokens_skipped"] == skipped and summary["total_duplicated_tokens"] == 0
    assert summary["total_tokens_written"] == sum(s["len"] for s in got) == content_in - skipped + 2 * len(got)
    assert summary["samples"] == len(got) and summary["documents"] == len(docs)
    assert summary["word_boundaries"] == ("on" if kw.get("word_boundaries", True) else "off")
    # dataset files: root stats = sum of the unit stats; deciles index samples of each unit
    root_stats = json.loads((out / "stats.json").read_text())
    assert root_stats["total_tokens_written"] == summary["total_tokens_written"]
    assert root_stats["length_percentiles"]["100"] == max(s["len"] for s in got)
    units = sorted(p.parent for p in out.rglob(".done") if p.parent != out)
    assert [u.relative_to(out).as_posix() for u in units] == ["docs/split_00000", "docs/split_00001",
                                                                "docs/split_00002"]
    assert sum(json.loads((u / "stats.json").read_text())["samples"] for u in units) == len(got)
    for u in units:
        lens = [s["len"] for s in UnitReader(u).iter_samples(["len"])]
        dec = json.loads((u / "token_decile.json").read_text())
        assert sorted(i for v in dec.values() for i in v) == list(range(len(lens)))
        assert all(lens[i] // 1000 == int(b) for b, v in dec.items() for i in v)
    assert (out / "tokenizer.json").read_bytes() == (dataset / "tokenizer.json").read_bytes()
    assert json.loads((out / "ettin_meta.json").read_text())["tokenizer"] == meta


def test_workers_1_and_2_byte_identical(dataset, tmp_path):
    # (the native writer's byte-compatibility with streaming is tested in test_mds.py)
    _run(dataset, tmp_path / "w1", workers=1, **SETTINGS_1024)
    _run(dataset, tmp_path / "w2", workers=2, **SETTINGS_1024)
    a, b = _tree(tmp_path / "w1"), _tree(tmp_path / "w2")
    assert a == b and len(a) > 10


def test_backfill_with_duplicates_counts_them(dataset, tmp_path):
    s = _run(dataset, tmp_path / "out", chunk_size=64, min_chunk_size=60, always_skip_size=4, backfill=True)
    got = _chunks(tmp_path / "out")
    assert s["total_duplicated_tokens"] > 0
    assert s["content_tokens_in"] == s["content_tokens_written"] - s["total_duplicated_tokens"] + \
        s["total_tokens_skipped"]
    assert s["content_tokens_written"] == sum(len(c["input_ids"]) - 2 for c in got)


def test_cached_word_start_table(dataset, tmp_path, monkeypatch):
    """The word-start table kept in the user cache (built once per machine, not per worker) is the table."""
    from ettin_data import chunking

    raw = (dataset / "tokenizer.json").read_bytes()
    want = chunking.word_start_table(raw.decode(), 50368)
    monkeypatch.setenv("ETTIN_DATA_CACHE", str(tmp_path / "cache"))
    assert np.array_equal(chunking.cached_word_start_table(raw, 50368), want)
    (entry,) = (tmp_path / "cache").iterdir()
    built = []
    real = chunking.word_start_table
    monkeypatch.setattr(chunking, "word_start_table", lambda *a: built.append(1) or real(*a))
    assert np.array_equal(chunking.cached_word_start_table(raw, 50368), want) and not built  # from the cache
    assert len(chunking.cached_word_start_table(raw, 60000)) == 60000 and built  # another key: built
    for damage in (b"", b"not numpy", entry.read_bytes()[:100]):
        entry.write_bytes(damage)
        assert np.array_equal(chunking.cached_word_start_table(raw, 50368), want)
    monkeypatch.setenv("ETTIN_DATA_CACHE", "")
    assert np.array_equal(chunking.cached_word_start_table(raw, 50368), want)


def test_word_boundaries(dataset, tmp_path):
    from ettin_data.chunking import word_start_table

    table = word_start_table((dataset / "tokenizer.json").read_text())
    kw = dict(chunk_size=64, min_chunk_size=0, always_skip_size=0)
    on = _run(dataset, tmp_path / "on", **kw)
    off = _run(dataset, tmp_path / "off", word_boundaries=False, **kw)
    assert on["word_boundaries"] == "on" and on["cuts_moved"] > 0 and off["cuts_moved"] == 0
    size, back = 62, window(62)
    checked = 0
    got_on = _chunks(tmp_path / "on")
    for doc_id, ids in _docs(dataset).items():
        content = ids[1:-1]
        pieces = [c["input_ids"][1:-1] for c in got_on if c["id"] == doc_id]
        assert np.concatenate(pieces).tolist() == content.tolist()
        s = 0
        for prev, nxt in zip(pieces, pieces[1:], strict=False):
            cut, e = s + len(prev), s + size
            window_ids = content[max(s + 1, e - back):e + 1]
            if table[window_ids].any():  # a word start in reach: the continuation starts on one
                assert table[nxt[0]]
                checked += 1
            else:
                assert cut == e
            s = cut
    assert checked > 50

    def word_start_share(root: Path) -> float:
        got = _chunks(root)
        cont = [table[c["input_ids"][1]] for prev, c in zip(got, got[1:], strict=False) if prev["id"] == c["id"]]
        return sum(cont) / len(cont)

    assert word_start_share(tmp_path / "on") > 0.95 > word_start_share(tmp_path / "off") + 0.2


def test_no_tokenizer_json_falls_back(dataset, tmp_path):
    import shutil

    inp = tmp_path / "in"
    shutil.copytree(dataset, inp)
    (inp / "tokenizer.json").unlink()
    s = _run(inp, tmp_path / "out", chunk_size=64, min_chunk_size=0, always_skip_size=0)
    assert s["word_boundaries"] == "unavailable" and not (tmp_path / "out" / "tokenizer.json").exists()
    _run(dataset, tmp_path / "off", chunk_size=64, min_chunk_size=0, always_skip_size=0, word_boundaries=False)
    assert [c["input_ids"].tolist() for c in _chunks(tmp_path / "out")] == \
        [c["input_ids"].tolist() for c in _chunks(tmp_path / "off")]


def test_no_special_tokens_and_uint16(tiny_tokenizer, tmp_path):
    inp = _token_dataset(tmp_path / "in", tiny_tokenizer, TEXTS[:10], units=1, special=False, dtype="uint16")
    s = _run(inp, tmp_path / "out", chunk_size=128, min_chunk_size=0, always_skip_size=0, word_boundaries=False)
    docs, got = _docs(inp), _chunks(tmp_path / "out")
    assert s["content_tokens_in"] == sum(len(d) for d in docs.values())
    assert all(c["input_ids"].dtype == np.uint16 for c in got)
    for doc_id, ids in docs.items():
        assert np.concatenate([c["input_ids"][1:-1] for c in got if c["id"] == doc_id]).tolist() == ids.tolist()


def test_input_errors(dataset, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    (bad / "tokenizer.json").write_text((bad / "tokenizer.json").read_text().replace("[CLS]", "[CLX]"))
    with pytest.raises(InputError, match="sha256 .* is not the tokenizer recorded in .*sha256"):
        _run(bad, tmp_path / "o1")
    shutil.copyfile(dataset / "tokenizer.json", bad / "tokenizer.json")
    meta = json.loads((dataset / "ettin_meta.json").read_text())
    meta["tokenizer"]["eos_id"] = None
    (bad / "ettin_meta.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="defines no EOS token .*--eos TOKEN, or --eos none"):
        _run(bad, tmp_path / "o2")
    (bad / "ettin_meta.json").unlink()
    with pytest.raises(InputError, match="has no ettin_meta.json: it was not written by ettin-data.*pass --tokenizer"):
        _run(bad, tmp_path / "o3")


def test_cli(dataset, tmp_path):
    r = CliRunner().invoke(app, ["chunk", str(dataset), "-o", str(tmp_path / "o"), "-c", "256", "-m", "100",
                                 "-a", "20", "--backfill", "--backfill-no-duplicates", "-w", "1", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["samples"] == len(_chunks(tmp_path / "o")) and summary["tokenizer"]["bos_id"] is not None
    r = CliRunner().invoke(app, ["chunk", str(dataset), "-o", str(tmp_path / "p"), "-c", "64", "-m", "100"])
    assert r.exit_code == 2 and "min_chunk_size 100 must be <= chunk_size - 2 = 62" in r.output


def test_real_modernbert_token_dataset(token_dataset, tmp_path):
    """Integration: tokenize's real output (ModernBERT ids of the built-in corpus) -> chunk -> exact pieces."""
    from tokenizers import Tokenizer

    s = _run(token_dataset, tmp_path / "out", **SETTINGS_1024)
    meta = json.loads((token_dataset / "ettin_meta.json").read_text())["tokenizer"]
    assert (meta["bos_id"], meta["eos_id"]) == (50281, 50282)
    assert s["tokenizer"] == meta and s["word_boundaries"] == "on" and s["cuts_moved"] > 0
    tok = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json"))
    docs = {d["id"]: d["input_ids"] for u in sorted(p.parent for p in token_dataset.rglob(".done")
                                                    if p.parent != token_dataset)
            for d in UnitReader(u).iter_samples(["id", "input_ids"])}
    got = _chunks(tmp_path / "out")
    assert s["documents"] == len(docs) and s["samples"] == len(got)
    by_doc: dict[str, list[np.ndarray]] = {}
    for c in got:
        assert c["input_ids"][0] == 50281 and c["input_ids"][-1] == 50282 and c["len"] <= 1024
        by_doc.setdefault(c["id"], []).append(c["input_ids"][1:-1])
    skipped = 0
    for doc_id, ids in docs.items():
        joined = np.concatenate(by_doc.get(doc_id, [np.array([], np.uint32)])).tolist()
        assert joined == ids[1:len(joined) + 1].tolist()
        skipped += len(ids) - 2 - len(joined)
    assert s["total_tokens_skipped"] == skipped
    # continuation pieces that were not backfilled start with a space/newline in the text
    starts = [tok.decode([int(p[0])]) for ps in by_doc.values() for p in ps[1:-1]]
    assert starts and sum(t[:1].isspace() for t in starts) / len(starts) > 0.9


def test_accounting_is_checked_and_bad_ids_refused(dataset, tmp_path, monkeypatch, tiny_tokenizer):
    from ettin_data.errors import UnitFailure

    real = chunk.chunk_batch

    def leaky(ids, lengths, doc_ids, p):
        out = real(ids, lengths, doc_ids, p)
        out.counts["skipped"] += 1  # a token that vanished from the accounting
        return out

    monkeypatch.setattr(chunk, "chunk_batch", leaky)
    with pytest.raises(UnitFailure, match="token accounting does not close"):
        _run(dataset, tmp_path / "o1")
    monkeypatch.undo()
    inp = _token_dataset(tmp_path / "in", tiny_tokenizer, TEXTS[:4], units=1)
    with ShardWriter(inp / "docs" / "split_00000", {"id": "str", "input_ids": "ndarray:uint32", "len": "int"}) as w:
        w.write({"id": "bad", "input_ids": np.array([1, 5000, 2], np.uint32), "len": 3})
    with pytest.raises(UnitFailure, match="token id 5000 outside the vocabulary"):
        _run(inp, tmp_path / "o2")


def test_two_inputs(dataset, tiny_tokenizer, tmp_path):
    import shutil

    shutil.copytree(dataset, tmp_path / "b")
    s = run(ChunkConfig(inputs=[str(dataset), str(tmp_path / "b")], output=str(tmp_path / "o"), workers=1,
                              **SETTINGS_1024))
    assert s["units"] == 6 and s["documents"] == 2 * len(_docs(dataset))
    assert (tmp_path / "o" / "b" / "docs" / "split_00002" / ".done").is_file()
    other = _token_dataset(tmp_path / "c", tiny_tokenizer, TEXTS[:4], units=1, special=False)
    with pytest.raises(InputError, match="tokenized differently"):
        run(ChunkConfig(inputs=[str(dataset), str(other)], output=str(tmp_path / "p"), workers=1))


@pytest.mark.parametrize("dtype,domain,special", [("uint32", True, True), ("uint16", False, False),
                                                  ("uint16", True, True)])
def test_fast_rows_are_the_generic_rows(tiny_tokenizer, tmp_path, monkeypatch, dtype, domain, special):
    """chunk writes the rows of the token columns as bytes (token_rows.token_row): the same files as
    ShardWriter.write, whatever the options."""
    inp = _token_dataset(tmp_path / "in", tiny_tokenizer, TEXTS, units=2, special=special, dtype=dtype,
                         domain=domain)
    variants = [dict(chunk_size=16, min_chunk_size=6, always_skip_size=2, backfill=True, backfill_no_duplicates=True),
                dict(chunk_size=12, min_chunk_size=8, always_skip_size=1, backfill=True, add_eos_token=True,
                     word_boundaries=False),
                dict(chunk_size=64, min_chunk_size=0, always_skip_size=0)]
    for i, kw in enumerate(variants):
        _run(inp, tmp_path / f"fast{i}", **kw)
        with monkeypatch.context() as m:
            m.setattr(chunk, "fast_columns", lambda columns: None)
            _run(inp, tmp_path / f"generic{i}", **kw)
        assert _tree(tmp_path / f"fast{i}") == _tree(tmp_path / f"generic{i}")
        assert _chunks(tmp_path / f"fast{i}")


@st.composite
def _batch(draw):
    """Several documents of one kernel case (same params), as a flat id array and lengths."""
    p, first, _, _ = draw(_case(word_table=draw(st.booleans())))
    bos = draw(st.sampled_from([BOS, None]))  # decoder framings (--bos/--eos none) and what is stripped
    eos = EOS if p.add_eos else draw(st.sampled_from([EOS, None]))
    p = replace(p, bos_id=bos, eos_id=eos, strip_head=draw(st.sampled_from([None, (BOS, 3), ()])),
                strip_tail=draw(st.sampled_from([None, (EOS, 4), ()])))
    docs = [first]
    for _ in range(draw(st.integers(0, 6))):
        n = draw(st.integers(0, 4 * (p.chunk_size - 2) + 3))
        x = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, 22, n)
        if draw(st.booleans()) and p.strip_special:
            x = np.concatenate([[BOS], x, [EOS]])
        docs.append(x.astype(first.dtype))
    ids = [f"d{i}{draw(st.text(max_size=3))}" for i in range(len(docs))]
    return p, docs, ids


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_batch())
def test_batch_kernel_equals_the_document_kernel(case):
    """chunk_batch (numpy over many documents) gives chunk_document's chunks and summed counts exactly."""
    from ettin_data.chunking import chunk_batch

    p, docs, doc_ids = case
    flat = np.concatenate(docs) if docs else np.zeros(0, np.uint32)
    got = chunk_batch(flat.astype(docs[0].dtype), np.array([len(d) for d in docs]), doc_ids, p)
    want, totals = [], dict.fromkeys(("content", "written", "skipped", "duplicated", "pieces_skipped",
                                      "backfilled", "cuts_moved"), 0)
    for i, (d, doc_id) in enumerate(zip(docs, doc_ids, strict=True)):
        chunks, c = chunk_document(d, p, doc_id)
        want += [(i, ch.tolist()) for ch in chunks]
        for k in totals:
            totals[k] += getattr(c, k)
    assert [(int(got.doc[k]), got.chunk(k).tolist()) for k in range(len(got.doc))] == want
    assert {k: got.counts[k] for k in totals} == totals
    assert got.counts["documents"] == len(docs)
    assert got.counts["documents_empty"] == sum(len(content_tokens(d, p)) == 0 for d in docs)
    assert all(got.chunk(k).dtype == docs[0].dtype for k in range(len(got.doc)))
