"""The proof suite: every (engine, family) pair that ``--engine auto`` may choose (``guard.PROVEN``) gives the ids
of ``Tokenizer.encode_batch`` on every tokenizer of that family we have, on the built-in corpus, the edge
corpus, seeded and hypothesis fuzz corpora and the real multilingual sample (0 differing documents); the edge
and fuzz corpora with and without special tokens (and with special-token strings split, where the engine
offers it; the post-processor's tokens only frame a document, so the long corpora are run with them). A pair's routing
rules are exactly those it needs: an engine listed without rules is exact alone; tokie's rules are needed.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from helpers_tokenizers import ATOMS, EDGE, seeded_fuzz, tokenizer_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from ettin_data import engines
from ettin_data.corpus import python_docs
from ettin_data.engines.guard import PROVEN, Guard, family_of
from ettin_data.engines.library import LIBRARIES

FAMILY_TOKENIZERS = {"gpt2-bytelevel": ("modernbert", "olmo-dolma-v1_5", "gpt-neox-20b-pii"),
                     "cl100k-split": ("dolma2",), "bert-wordpiece": ("wordpiece-uncased", "wordpiece-cased"),
                     "sentencepiece-bpe": ("mistral-v1",)}
CASES = [(engine, family, name) for engine, family in sorted(PROVEN) for name in FAMILY_TOKENIZERS[family]]
IDS = [f"{e}-{n}" for e, _, n in CASES]

pytestmark = pytest.mark.skipif(any(lib.version() is None for lib in LIBRARIES.values()),
                                reason="a fast engine library is not installed (make install)")

FAST = settings(deadline=None, derandomize=True, database=None, max_examples=60,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
adversarial = st.lists(st.sampled_from(ATOMS), max_size=14).map("".join)
unicode_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)
fuzz_batches = st.lists(st.one_of(adversarial, unicode_text), min_size=1, max_size=60)


@pytest.fixture(scope="module")
def files(modernbert_json: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tokenizer_files(modernbert_json, tmp_path_factory.mktemp("tokenizers"))


# the tokenizers every document of the multilingual sample is proven on (at least one per family); the others
# of a family (other vocabularies through the same pipeline) take every third document: the reference needs
# ~12 s of CPU per tokenizer for the whole sample
FULL_SAMPLE = {"modernbert", "dolma2", "wordpiece-cased", "mistral-v1"}


@functools.cache
def _reference_ids(path: Path, texts: tuple[str, ...], special: bool, split: bool) -> list[list[int]]:
    """encode_batch's ids (cached: several engines are proven on the same tokenizer and corpus)."""
    tok = Tokenizer.from_file(str(path))
    tok.encode_special_tokens = split
    return [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=special)]


@functools.cache
def _corpora(name: str) -> dict[str, tuple[str, ...]]:
    from helpers_multilingual import multilingual_texts

    ml = multilingual_texts()
    return {"builtin": tuple(d["text"] for d in python_docs()), "edge": tuple(EDGE),
            "fuzz": tuple(seeded_fuzz("proof")), "multilingual": tuple(ml if name in FULL_SAMPLE else ml[::3])}


@functools.cache
def _pair(name: str, family: str, path: Path, split: bool = False) -> tuple[object, Guard]:
    """The engine alone and the routing rules auto puts in front of it for (name, family)."""
    tok = Tokenizer.from_file(str(path))
    header = engines.header_of(tok)
    assert family_of(header) == family, (path, family_of(header))
    nfc = header["normalizer"] == {"type": "NFC"}
    return LIBRARIES[name].load(path, None, split), Guard.for_pair(name, family, nfc)


def _differing(name: str, family: str, path: Path, texts: tuple[str, ...], special: bool = True,
               split: bool = False, rules: bool = True) -> list[str]:
    """Texts that reach the engine (those its rules do not route to the reference; ``rules=False``: all) and
    whose ids differ from encode_batch's. Every document is compared: no sampling."""
    engine, guard = _pair(name, family, path, split)
    ids, lengths = engine.encode(list(texts), special)
    routed = guard.routed(list(texts)).tolist() if rules else [False] * len(texts)
    ends = np.cumsum(lengths).tolist()
    want = _reference_ids(path, texts, special, split)
    return [t for t, e, n, w, r in zip(texts, ends, lengths.tolist(), want, routed, strict=True)
            if not r and ids[e - n:e].tolist() != w]


@pytest.mark.parametrize(("engine", "family", "name"), CASES, ids=IDS)
def test_proven_pair_is_exact_on_every_corpus(files, engine: str, family: str, name: str) -> None:
    path = files[name]
    for corpus, texts in _corpora(name).items():
        for special in (True, False) if corpus in ("edge", "fuzz") else (True,):
            assert _differing(engine, family, path, texts, special) == [], (corpus, special)


@pytest.mark.parametrize(("engine", "family", "name"), CASES, ids=IDS)
def test_proven_pair_is_exact_on_hypothesis_fuzz(files, engine: str, family: str, name: str) -> None:
    path = files[name]
    fast, guard = _pair(engine, family, path)
    tok = Tokenizer.from_file(str(path))

    @FAST
    @given(fuzz_batches)
    def check(texts: list[str]) -> None:
        ids, lengths = fast.encode(texts, True)
        ends = np.cumsum(lengths).tolist()
        want = [e.ids for e in tok.encode_batch(texts)]
        got = [ids[e - n:e].tolist() for e, n in zip(ends, lengths.tolist(), strict=True)]
        assert [g for g, w, r in zip(got, want, guard.routed(texts).tolist(), strict=True) if not r and g != w] == []

    check()


@pytest.mark.parametrize(("engine", "family", "name"), CASES, ids=IDS)
def test_rules_are_the_ones_the_engine_needs(files, engine: str, family: str, name: str) -> None:
    """An engine proven without rules is exact alone on the edge and fuzz corpora; for byte-level tokenizers
    tokie is not (its rules are needed)."""
    path = files[name]
    corpora = _corpora(name)
    diff = [t for c in ("edge", "fuzz") for t in _differing(engine, family, path, corpora[c], rules=False)]
    if not PROVEN[(engine, family)]:
        assert diff == []
    elif family in ("gpt2-bytelevel", "cl100k-split"):
        assert diff, "tokie's rules are listed but nothing needs them"


@pytest.mark.parametrize(("engine", "family", "name"),
                         [c for c in CASES if LIBRARIES[c[0]].split_special], ids=lambda v: str(v))
def test_split_special_tokens_is_exact(files, engine: str, family: str, name: str) -> None:
    """--split-special-tokens: special-token strings in the text are encoded as plain text, as tokenizers does
    with ``encode_special_tokens``."""
    path = files[name]
    corpora = _corpora(name)
    for corpus in ("edge", "fuzz"):
        for special in (True, False):
            assert _differing(engine, family, path, corpora[corpus], special, split=True) == [], (corpus, special)
