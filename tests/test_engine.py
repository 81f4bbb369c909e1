"""Engines: how ``--engine`` chooses and checks (the proof that each chosen pair is exact is
tests/test_engine_proof.py). ``auto`` takes the fastest proven engine and says what it skipped and why; a
2-worker auto run, with sampled and with full verification, is byte-identical to ``--engine tokenizers``; an
injected divergence is caught (sampled verification redoes the unit; the full check's second engine sends
the document to the reference), counted and recorded; threads stay within a worker's budget for every
engine; tokie's binary cache and the reference's fast call give the same ids."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers_tokenizers import EDGE, seeded_fuzz, tokenizer_files, train
from tokenizers import Tokenizer

from ettin_data import encoder, engines, run
from ettin_data.config import TokenizeConfig
from ettin_data.corpus import python_docs
from ettin_data.dataset import read_meta
from ettin_data.engines import ahead, fastokens_engine, threads, tokie_engine
from ettin_data.engines import guard as G
from ettin_data.engines.library import LIBRARIES, Library
from ettin_data.errors import ConfigError
from ettin_data.executors.base import os_threads
from ettin_data.stages import tokenize as stage
from ettin_data.stats import Stats

pytestmark = pytest.mark.skipif(any(lib.version() is None for lib in LIBRARIES.values()),
                                reason="a fast engine library is not installed (make install)")
DOCS = [d["text"] for d in python_docs()]


@pytest.fixture(scope="module")
def files(modernbert_json: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tokenizer_files(modernbert_json, tmp_path_factory.mktemp("tokenizers"))


@pytest.fixture(autouse=True)
def _fresh_worker_cache():
    """Engines are cached per process: every test starts and ends without one."""
    encoder._WORKER.clear()
    ahead._PARSED.clear()
    yield
    encoder._WORKER.clear()
    ahead._PARSED.clear()


def _select(path: Path, requested: str = "auto", split: bool = False, verify: str = "sample"):
    tok = Tokenizer.from_file(str(path))
    tok.encode_special_tokens = split
    return engines.select(requested, tok, path, split_special_tokens=split, verify=verify)


@pytest.mark.parametrize(("name", "engine", "family"), [
    ("modernbert", "fastokens", "gpt2-bytelevel"), ("olmo-dolma-v1_5", "fastokens", "gpt2-bytelevel"),
    ("gpt-neox-20b-pii", "fastokens", "gpt2-bytelevel"), ("dolma2", "fastokens", "cl100k-split"),
    ("wordpiece-uncased", "nanotoken", "bert-wordpiece"), ("wordpiece-cased", "nanotoken", "bert-wordpiece"),
    ("mistral-v1", "fastokens", "sentencepiece-bpe")])
def test_auto_takes_the_fastest_proven_engine_and_preselect_predicts_it(files, name: str, engine: str,
                                                                        family: str) -> None:
    for verify in engines.VERIFY:
        chosen, choice = _select(files[name], verify=verify)
        assert isinstance(chosen, engines.Checked) and chosen.fast.name == engine
        assert (choice.used, choice.guard, choice.verify, choice.fallback, choice.skipped) == (
            engine, family, verify, None, ())
        assert choice.version == LIBRARIES[engine].version()
        assert choice.checker == ("tokie" if verify == "full" else None)
        tok = Tokenizer.from_file(str(files[name]))
        assert engines.preselect("auto", tok, verify=verify) == choice


@pytest.mark.parametrize("case", ["not_installed", "untested", "cannot_load", "probe_differs"])
def test_an_unusable_engine_is_skipped_with_its_reason(case: str, files, monkeypatch: pytest.MonkeyPatch) -> None:
    """auto moves on to the next proven engine (tokie), and the summary says what it skipped and why."""
    lib = LIBRARIES["fastokens"]
    want = {"not_installed": "fastokens is not installed", "untested": "fastokens 0.9.0 is untested (tested: >=",
            "cannot_load": "fastokens cannot load this tokenizer.json (unsupported model)",
            "probe_differs": "fastokens and tokenizers differ on the probe text"}[case]
    if case in ("not_installed", "untested"):
        class Other(Library):
            def version(self) -> str | None:
                return None if case == "not_installed" else "0.9.0"
        monkeypatch.setitem(LIBRARIES, "fastokens", Other(**lib.__dict__))
    elif case == "cannot_load":
        def fail(self, *a):
            raise RuntimeError("unsupported model\nmore")
        monkeypatch.setattr(fastokens_engine.Engine, "__init__", fail)
    else:
        real = fastokens_engine.Engine.encode

        def off_by_one(self, texts, add_special_tokens=True):
            ids, lengths = real(self, texts, add_special_tokens)
            return ids + 1, lengths
        monkeypatch.setattr(fastokens_engine.Engine, "encode", off_by_one)
    chosen, choice = _select(files["modernbert"])
    assert chosen.fast.name == "tokie" and choice.used == "tokie" and choice.fallback is None
    assert len(choice.skipped) == 1 and want in choice.skipped[0], choice.skipped


@pytest.mark.parametrize("case", ["unigram", "no_family", "none_installed", "split_special_wordpiece"])
def test_fallback_to_the_reference_is_stated(case: str, tmp_path: Path, files,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path, split = files["modernbert"], False
    if case == "unigram":
        path = train("unigram", tmp_path)
    elif case == "no_family":
        obj = json.loads(path.read_text())
        obj["pre_tokenizer"]["add_prefix_space"] = True  # a prefix-space option no engine is proven for
        path = tmp_path / "prefix.json"
        path.write_text(json.dumps(obj))
    elif case == "none_installed":
        monkeypatch.setattr(Library, "version", lambda self: None)
    else:  # nanotoken and tokie cannot split special-token strings: WordPiece + --split-special-tokens
        path, split = files["wordpiece-uncased"], True
    engine, choice = _select(path, split=split)
    assert isinstance(engine, engines.ReferenceEngine) and choice.used == "tokenizers"
    want = {"unigram": "no engine is proven for this tokenizer (model Unigram", "no_family": "no engine is proven",
            "none_installed": "fastokens is not installed", "split_special_wordpiece": "--split-special-tokens: "
            "nanotoken always encodes special-token strings"}[case]
    assert want in choice.fallback
    if case == "none_installed":
        assert [s.split(" ")[0] for s in choice.skipped] == ["fastokens", "tokie"]
    if case == "unigram":  # asked for explicitly, tokie alone is checked on probe texts: it differs, falls back
        _, choice = _select(path, "tokie")
        assert choice.used == "tokenizers" and "differ on the probe text" in choice.fallback


def test_split_special_tokens_uses_fastokens(files) -> None:
    """fastokens can encode special-token strings as plain text: --split-special-tokens stays fast."""
    engine, choice = _select(files["modernbert"], split=True)
    assert choice.used == "fastokens" and engine.fast.split
    ids, lengths = engine.encode(["a [SEP] b"], False, unit="u")
    ref = Tokenizer.from_file(str(files["modernbert"]))
    ref.encode_special_tokens = True
    assert ids.tolist() == ref.encode("a [SEP] b", add_special_tokens=False).ids and 50282 not in ids.tolist()


def test_known_divergence_classes_are_routed_for_tokie_only() -> None:
    gpt2, cl100k = G.Guard.for_pair("tokie", "gpt2-bytelevel"), G.Guard.for_pair("tokie", "cl100k-split")
    assert gpt2.routed(["a\t'sfu", "x\x0cy", "a 's", "don't", "\n  \n"]).tolist() == [True, True, False, False, False]
    assert cl100k.routed(["\t(x", "\n  \n", "Ⅻ", "a 's", "12 345"]).tolist() == [True, True, True, False, False]
    nfc = G.Guard.for_pair("tokie", "gpt2-bytelevel", nfc_normalizer=True)
    assert nfc.routed(["\u07f3\u07fd", "\u07fd\u07f3", "e\u0301", "é", "plain"]).tolist() == [
        True, False, True, False, False]
    for engine, family in G.PROVEN:  # the other engines need no rule: nothing is routed
        if engine != "tokie":
            guard = G.Guard.for_pair(engine, family, nfc_normalizer=True)
            assert not guard.routed(EDGE).any() and not guard.nfc


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


def test_two_worker_auto_runs_are_byte_identical_to_tokenizers(tmp_path: Path, text_dataset: Path) -> None:
    ref = _tokenize(text_dataset, tmp_path / "ref", workers=2, engine="tokenizers")
    want = _files(tmp_path / "ref")
    assert len(want) == 5 * 2 + 4
    assert ref["engine"] == {"requested": "tokenizers", "used": "tokenizers", "version": None, "guard": None,
                             "verify": None, "checker": None, "fallback": None, "skipped": [],
                             "documents_fast": 0, "documents_routed": 0, "documents_verified": 0,
                             "units_spot_checked": 0, "documents_checked": 0, "disagreements": 0,
                             "mismatches": 0, "units_redone": 0}
    for verify in engines.VERIFY:
        out = tmp_path / verify
        auto = _tokenize(text_dataset, out, workers=2, verify=verify)
        got = _files(out)
        assert sorted(got) == sorted(want) and [k for k in got if got[k] != want[k]] == []
        eng = auto["engine"]
        assert (eng["used"], eng["guard"], eng["verify"]) == ("fastokens", "gpt2-bytelevel", verify)
        assert eng["documents_fast"] + eng["documents_routed"] + eng["disagreements"] == 247
        assert eng["documents_routed"] == 0 and eng["units_spot_checked"] == 5 and eng["mismatches"] == 0
        assert eng["documents_checked"] == (247 if verify == "full" else 0)
        assert eng["checker"] == ("tokie" if verify == "full" else None) and eng["disagreements"] == 0
        meta = read_meta(out)
        assert meta["engine"] == eng and meta["settings"]["engine"] == "auto" and meta["settings"]["verify"] == verify


@pytest.mark.slow
@pytest.mark.parametrize("name", ["modernbert", "dolma2"])
def test_two_worker_auto_runs_on_the_multilingual_sample_are_byte_identical(files, name: str,
                                                                           tmp_path: Path) -> None:
    """The real multilingual sample (2,069 documents in 187 language tags) through whole 2-worker runs: auto
    with either check writes the shards of --engine tokenizers, routing nothing, redoing no unit."""
    from helpers_multilingual import SAMPLE

    from ettin_data.config import ConvertConfig

    text = tmp_path / "text"
    run(ConvertConfig(inputs=[str(SAMPLE)], output=str(text), docs_per_shard=300, workers=2))

    def tokenize(out: str, **kw) -> dict:
        return run(TokenizeConfig(inputs=[str(text)], output=str(tmp_path / out), tokenizer=str(files[name]),
                                  workers=2, **kw))

    tokenize("ref", engine="tokenizers")
    want = _files(tmp_path / "ref")
    assert len(want) == 7 * 2 + 4
    for verify in engines.VERIFY:
        eng = tokenize(verify, verify=verify)["engine"]
        got = _files(tmp_path / verify)
        assert [k for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)] == []
        assert (eng["used"], eng["documents_routed"], eng["mismatches"]) == ("fastokens", 0, 0)
        # full: tokie, the checker, differs from fastokens on a few documents (its known classes): those are
        # encoded by tokenizers, and the shards are still the reference's
        assert eng["documents_fast"] + eng["disagreements"] == 2069
        assert eng["documents_checked"] == (2069 if verify == "full" else 0)
        assert eng["disagreements"] == 0 if verify == "sample" else eng["disagreements"] < 100


def _broken(real, every: int = 1, first: int = 0):
    """An engine's encode with one id off in every ``every``-th document (from ``first``) of more than two
    tokens."""
    def encode(self, texts, add_special_tokens=True):
        ids, lengths = real(self, texts, add_special_tokens)
        ids = ids.copy()
        ends = np.cumsum(lengths)
        hit = (lengths > 2) & (np.arange(len(lengths)) % every == first)
        ids[ends[hit] - 2] += 1
        return ids, lengths
    return encode


def test_injected_divergence_is_caught_redone_and_counted(tmp_path: Path, text_dataset: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ref = _tokenize(text_dataset, tmp_path / "ref", engine="tokenizers")
    monkeypatch.setattr(fastokens_engine.Engine, "encode", _broken(fastokens_engine.Engine.encode))
    monkeypatch.setattr(engines, "_probe", lambda *a: None)  # the load-time probe would skip it before any unit
    s = _tokenize(text_dataset, tmp_path / "auto")
    assert _files(tmp_path / "auto") == _files(tmp_path / "ref")
    assert s["engine"]["used"] == "fastokens"
    assert s["engine"]["mismatches"] == s["engine"]["units_redone"] == 5 == s["units"]
    assert s["counts"]["documents_written"] == ref["counts"]["documents_written"] == 247


def test_full_verification_sends_disagreements_to_the_reference(tmp_path: Path, text_dataset: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker (tokie) disagrees on every third document: those are encoded by the reference, counted,
    and the output is still the reference's; no unit is redone."""
    _tokenize(text_dataset, tmp_path / "ref", engine="tokenizers")
    monkeypatch.setattr(tokie_engine.Engine, "encode", _broken(tokie_engine.Engine.encode, every=3))
    monkeypatch.setattr(engines, "_probe", lambda *a: None)
    s = _tokenize(text_dataset, tmp_path / "full", verify="full")
    eng = s["engine"]
    assert _files(tmp_path / "full") == _files(tmp_path / "ref")
    assert (eng["checker"], eng["documents_checked"], eng["units_redone"]) == ("tokie", 247, 0)
    assert 70 <= eng["disagreements"] <= 90 and eng["documents_fast"] == 247 - eng["disagreements"]


def test_full_verification_catches_a_wrong_fast_engine_per_document(tmp_path: Path, text_dataset: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast engine is wrong on every 7th document (not a unit's first: the start of each unit is checked
    against the reference): the checker disagrees there, the reference encodes them, no unit is redone."""
    _tokenize(text_dataset, tmp_path / "ref", engine="tokenizers")
    monkeypatch.setattr(fastokens_engine.Engine, "encode", _broken(fastokens_engine.Engine.encode, every=7, first=3))
    monkeypatch.setattr(engines, "_probe", lambda *a: None)
    s = _tokenize(text_dataset, tmp_path / "full", verify="full")
    assert _files(tmp_path / "full") == _files(tmp_path / "ref")
    assert s["engine"]["disagreements"] >= 30 and s["engine"]["units_redone"] == 0


def test_full_verification_without_a_second_library_uses_the_reference(files, monkeypatch) -> None:
    lib = LIBRARIES["tokie"]

    class Missing(Library):
        def version(self) -> str | None:
            return None
    monkeypatch.setitem(LIBRARIES, "tokie", Missing(**lib.__dict__))
    engine, choice = _select(files["modernbert"], verify="full")
    assert choice.checker == "tokenizers" and isinstance(engine.checker, engines.ReferenceEngine)
    stats = Stats()
    engine.encode(DOCS[:20], True, unit="u", st=stats)
    assert stats["engine.checked"] == 20 and stats["engine.disagreements"] == 0


def test_prepare_redoes_a_diverging_unit_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ettin_data.config import PrepareConfig
    from ettin_data.stages import prepare

    def prep(out: Path, engine: str) -> dict:
        return run(PrepareConfig(inputs=["builtin:python-docs"], output=str(out), workers=1,
                                 tokenizer="builtin:modernbert", docs_per_shard=100, engine=engine))

    ref = prep(tmp_path / "ref", "tokenizers")
    real = fastokens_engine.Engine.encode

    def broken(self, texts, add_special_tokens=True):
        ids, lengths = real(self, texts, add_special_tokens)
        return ids + (ids == 13), lengths  # one wrong id wherever "." (13) occurs

    monkeypatch.setattr(fastokens_engine.Engine, "encode", broken)
    monkeypatch.setattr(engines, "_probe", lambda *a: None)
    prepare._WORKER.clear()
    s = prep(tmp_path / "auto", "auto")
    prepare._WORKER.clear()
    assert _files(tmp_path / "auto") == _files(tmp_path / "ref")
    assert s["engine"]["used"] == "fastokens" and s["engine"]["units_redone"] == s["engine"]["mismatches"] == 3
    assert ref["engine"]["used"] == "tokenizers" and s["documents"] == ref["documents"]


def test_fallback_is_in_summary_and_metadata(tmp_path: Path, text_dataset: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Library, "version", lambda self: None)
    unit = text_dataset / "python-docs" / "split_00001"
    s = _tokenize(unit, tmp_path / "out")
    assert s["engine"]["used"] == "tokenizers" and "fastokens is not installed" in s["engine"]["fallback"]
    assert read_meta(tmp_path / "out")["engine"]["fallback"] == s["engine"]["fallback"]


@pytest.mark.parametrize("name", ["tokie", "fastokens"])
def test_an_engine_asked_for_is_unchecked_and_recorded(name: str, tmp_path: Path, text_dataset: Path) -> None:
    unit = text_dataset / "python-docs" / "split_00002"
    s = _tokenize(unit, tmp_path / "out", engine=name)
    eng = s["engine"]
    assert (eng["used"], eng["guard"], eng["verify"], eng["documents_verified"]) == (name, None, None, 0)
    assert read_meta(tmp_path / "out")["settings"]["engine"] == name


def test_resume_across_engines_with_identical_output(tmp_path: Path, text_dataset: Path) -> None:
    unit = text_dataset / "python-docs" / "split_00003"
    _tokenize(unit, tmp_path / "out", engine="tokenizers")
    again = _tokenize(unit, tmp_path / "out", verify="full")  # auto (either check) gives the same bytes
    assert again["units_skipped"] == 1
    with pytest.raises(ConfigError, match="engine: 'auto' -> 'fastokens'"):
        _tokenize(unit, tmp_path / "out", engine="fastokens")  # an unchecked engine may differ: refused
    # an output written before --engine existed (no 'engine' in its settings) resumes with auto or tokenizers
    settings = tmp_path / "out" / ".ettin_settings.json"
    settings.write_text(json.dumps({k: v for k, v in json.loads(settings.read_text()).items() if k != "engine"}))
    assert _tokenize(unit, tmp_path / "out", engine="tokenizers")["units_skipped"] == 1


def test_a_fast_engine_error_redoes_the_unit_with_the_reference(tmp_path: Path, text_dataset: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def panic(self, texts, add_special_tokens=True):
        raise RuntimeError("panicked at src/bpe.rs")

    unit = text_dataset / "python-docs" / "split_00004"
    ref = _tokenize(unit, tmp_path / "ref", engine="tokenizers")
    monkeypatch.setattr(engines, "_probe", lambda *a: None)
    monkeypatch.setattr(fastokens_engine.Engine, "encode", panic)
    s = _tokenize(unit, tmp_path / "auto")
    assert _files(tmp_path / "auto") == _files(tmp_path / "ref") and ref["documents"] == s["documents"]
    assert (s["engine"]["used"], s["engine"]["mismatches"], s["engine"]["units_redone"]) == ("fastokens", 1, 1)


def test_one_thread_per_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    mask = os.sched_getaffinity(0)
    monkeypatch.setenv("RAYON_NUM_THREADS", "1")
    assert threads.thread_budget() == 1
    with threads.pinned(1):
        assert len(os.sched_getaffinity(0)) == 1
    assert os.sched_getaffinity(0) == mask
    monkeypatch.delenv("RAYON_NUM_THREADS")
    assert threads.thread_budget() == len(mask)


def test_pool_slot_chooses_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a pool, worker k's engine calls run on CPU k (mod the CPUs it may use), wherever it runs now."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    for slot in range(3):
        monkeypatch.setenv("ETTIN_DATA_WORKER_SLOT", str(slot))
        with threads.pinned(1):
            assert os.sched_getaffinity(0) == {cpus[slot % len(cpus)]}
        with threads.pinned(2 if len(cpus) >= 4 else 1):
            assert len(os.sched_getaffinity(0)) == (2 if len(cpus) >= 4 else 1)
    assert os.sched_getaffinity(0) == set(cpus)


@pytest.mark.parametrize("name", ["tokie", "fastokens", "nanotoken"])
def test_engine_threads_stay_on_one_cpu(name: str, files, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a budget of one thread, every thread that runs during an engine's calls is confined to one CPU,
    whatever the engine starts (tokie: from the CPU mask; fastokens: FASTOKENS_BPE_THREADS and rayon;
    nanotoken: its parallel flag)."""
    import subprocess
    import sys

    path = files["wordpiece-cased" if name == "nanotoken" else "modernbert"]
    code = f"""
import os, sys, threading, time
from pathlib import Path
from ettin_data.engines.library import LIBRARIES
from ettin_data.corpus import python_docs
engine = LIBRARIES[{name!r}].load({str(path)!r})
texts = [d["text"] for d in python_docs()] * 8
before = set(os.listdir("/proc/self/task"))
masks, stop = {{}}, threading.Event()
def watch():
    while not stop.is_set():
        for tid in set(os.listdir("/proc/self/task")) - before:
            try:
                status = Path(f"/proc/self/task/{{tid}}/status").read_text()
            except OSError:
                continue
            masks[tid] = next(x for x in status.splitlines() if x.startswith("Cpus_allowed_list")).split()[-1]
        time.sleep(0.0005)
w = threading.Thread(target=watch)
w.start()
for _ in range(3):
    engine.encode(texts)
stop.set()
w.join()
bad = {{t: m for t, m in masks.items() if t != str(w.native_id) and ("," in m or "-" in m)}}
print("BAD" if bad else "OK", bad)
"""
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "ETTIN_DATA_WORKER_SLOT": "0"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("OK"), res.stdout + res.stderr


@pytest.mark.parametrize("name", ["modernbert", "dolma2", "olmo-dolma-v1_5", "wordpiece-uncased"])
def test_tokie_binary_cache_encodes_like_the_json(files, name: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A tokenizer loaded from tokie's cached .tkz gives the ids of the one parsed from tokenizer.json."""
    import tokie

    path = files[name]
    monkeypatch.setenv("ETTIN_DATA_CACHE", "")
    parsed = tokie_engine.load_tokie(path)
    assert not list(tmp_path.iterdir())
    monkeypatch.setenv("ETTIN_DATA_CACHE", str(tmp_path / "cache"))
    tokie_engine.load_tokie(path)  # parses the json and writes the cache entry
    (entry,) = (tmp_path / "cache").iterdir()
    assert entry.name.startswith(f"tokie-{LIBRARIES['tokie'].version()}-") and entry.suffix == ".tkz"

    def no_json(*a: object) -> None:
        raise AssertionError("parsed the json although it is cached")

    monkeypatch.setattr(tokie.Tokenizer, "from_json", no_json)
    cached = tokie_engine.load_tokie(path)
    for texts in (DOCS, EDGE, seeded_fuzz(name, 2000)):
        for special in (True, False):
            a, la = parsed.encode_batch_flat(texts, add_special_tokens=special)
            b, lb = cached.encode_batch_flat(texts, add_special_tokens=special)
            assert np.array_equal(la, lb) and np.array_equal(a, b)
    assert cached.num_special_tokens_to_add(False) == parsed.num_special_tokens_to_add(False)


@pytest.mark.parametrize("name", ["modernbert", "dolma2", "olmo-dolma-v1_5", "wordpiece-uncased"])
def test_reference_engine_ids_are_those_of_encode_batch(files, name: str) -> None:
    """The reference engine calls encode_batch_fast (no offsets) when tokenizers has it: the ids of
    encode_batch on the built-in, edge and fuzz corpora, with and without special tokens and with
    special-token strings split; without the method it calls encode_batch."""
    tok = Tokenizer.from_file(str(files[name]))
    ref = engines.ReferenceEngine(tok)
    assert ref.method == ("encode_batch_fast" if hasattr(tok, "encode_batch_fast") else "encode_batch")
    fuzz = seeded_fuzz(name, 2000)

    class Plain:  # a tokenizers version without encode_batch_fast
        encode_batch = tok.encode_batch

    plain = engines.ReferenceEngine(Plain())
    assert plain.method == "encode_batch"
    for split in (False, True):
        tok.encode_special_tokens = split
        for texts in ([DOCS, EDGE, fuzz] if not split else [EDGE, fuzz]):
            for special in (True, False) if texts is not DOCS else (True,):
                want = [e.ids for e in tok.encode_batch(texts, add_special_tokens=special)]
                for engine in (ref, plain):
                    ids, lengths = engine.encode(texts, special)
                    assert lengths.tolist() == [len(w) for w in want]
                    assert ids.tolist() == [i for w in want for i in w]
    tok.encode_special_tokens = False


def test_cli_engine_and_verify_flags(tmp_path: Path, text_dataset: Path) -> None:
    from typer.testing import CliRunner

    from ettin_data.cli import app

    for cmd in (["tokenize", str(text_dataset), "-t", "builtin:modernbert"], ["prepare", "builtin:python-docs",
                                                                              "-t", "builtin:modernbert"]):
        res = CliRunner().invoke(app, [*cmd, "-o", str(tmp_path / "o"), "--engine", "tokenizers", "--verify", "full",
                                       "--dry-run", "--json"])
        assert res.exit_code == 0, res.output
        config = json.loads(res.stdout)["config"]
        assert config["engine"] == {"value": "tokenizers", "from": "flag"}
        assert config["verify"] == {"value": "full", "from": "flag"}
    res = CliRunner().invoke(app, ["tokenize", str(text_dataset), "-o", str(tmp_path / "o"), "-t",
                                   "builtin:modernbert", "--engine", "fast"])
    assert res.exit_code == 2 and "'auto', 'tokenizers', 'fastokens', 'nanotoken', 'tokie'" in res.stderr


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
    real, raised = engines.Checked.encode, []

    def late(self, texts, add_special_tokens, **kw):
        if kw.get("first_index", 0) >= 16 and not raised:  # the third batch of the first attempt
            raised.append(kw["first_index"])
            raise engines.Mismatch("injected")
        return real(self, texts, add_special_tokens, **kw)

    monkeypatch.setattr(engines.Checked, "encode", late)
    encoder._WORKER.clear()
    seen = [0, 0]

    def sink(d: int, t: int) -> None:
        seen[0] += d
        seen[1] += t

    progress.set_sink(sink)
    try:
        st_ = tok.process_unit(task, cfg, dst)
    finally:
        progress.set_sink(None)
        encoder._WORKER.clear()
    assert raised == [16] and st_["engine.units_redone"] == 1
    assert sum(s["samples"] for s in json.loads((dst / "index.json").read_text())["shards"]) == st_["documents_written"]
    assert seen == [st_["documents_in"], st_["tokens_written"]] and st_["documents_in"] > 16




@pytest.mark.parametrize(("name", "requested", "library"), [
    ("modernbert", "auto", "fastokens"), ("dolma2", "auto", "fastokens"), ("mistral-v1", "auto", "fastokens"),
    ("modernbert", "fastokens", "fastokens"), ("modernbert", "tokenizers", None), ("modernbert", "tokie", None),
    ("wordpiece-cased", "auto", None)])
def test_the_tokenizer_parsed_ahead_is_the_one_the_engine_uses(files, name: str, requested: str,
                                                               library: str | None) -> None:
    """engines/ahead.py: the fast library auto tries first parses the file in a thread while tokenizers parses
    it (encoder.resolve); the thread has left the process when the context ends (a fork must see one thread);
    the Engine built from exactly those bytes takes the parsed tokenizer (once) and encodes as the reference;
    other bytes, or engines that do not parse ahead (tokie has its binary cache, nanotoken is quick), get nothing."""
    data = files[name].read_bytes()
    assert ahead.guess(requested, data, False) == library
    before = os_threads()
    with ahead.parsing_ahead(requested, data):
        tok = Tokenizer.from_str(data.decode())
    assert os_threads() == before
    if library is None:
        assert not ahead._PARSED
        return
    (parsed,) = ahead._PARSED.values()
    engine = LIBRARIES[library].load(files[name], data)
    assert engine.tok is parsed and not ahead._PARSED  # taken, once
    texts = [*EDGE[:50], "naïve café 日本語 😀"]
    ids, lengths = engine.encode(texts, True)
    ref = tok.encode_batch(texts)
    assert lengths.tolist() == [len(e.ids) for e in ref] and ids.tolist() == [i for e in ref for i in e.ids]
    assert LIBRARIES[library].load(files[name], data).tok is not parsed  # a second engine parses again
    with ahead.parsing_ahead(requested, data):
        pass
    assert ahead.take(library, data + b" ") is None and ahead.take(library, data) is not None
