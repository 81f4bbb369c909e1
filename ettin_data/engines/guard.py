"""Which engine is proven for which tokenizer family, the routing rules each (engine, family) needs, and the
sampled verification against the reference.

Families are recognised from the tokenizer.json (model, normalizer, pre-tokenizer): ``gpt2-bytelevel``
(ModernBERT, GPT-NeoX, OLMo v1.5), ``cl100k-split`` (OLMo dolma2, OpenAI cl100k-style split regex),
``bert-wordpiece`` (BERT, cased and uncased), ``sentencepiece-bpe`` (Llama / Mistral v1 converted from
SentencePiece: BPE with byte fallback, "▁" prepended and for spaces, no pre-tokenizer). :data:`PROVEN`
lists, per (engine, family), the rules that route documents of a known divergence class to the reference; a
pair that is not listed is never chosen by ``auto``, and a rule an engine does not need is not applied to it
(routing costs speed). Every listed pair is proven by tests/test_engine_proof.py on the built-in corpus, an
edge corpus, seeded and hypothesis fuzz corpora and the real multilingual sample (0 differing documents).

fastokens 0.3.5 (byte-level and SentencePiece BPE) and nanotoken 0.1.0 (WordPiece) need no rule: 0 differing
documents on all of the above, and (measured once, 2026-12-06: ModernBERT and dolma2 for fastokens; cased,
uncased and real BERT vocabularies, and one holding every character, for nanotoken) on every code point of
Unicode alone in context and on 300,000 random base + two combining-mark sequences, the classes where
tokie's Unicode tables differ. tokie 0.1.4 needs these:

  tab before a contraction        ``"\\t's"``: tokenizers ``ĉ 's``, tokie ``ĉ ' s`` (GPT-2 byte-level); with
                                  the cl100k-style regex a tab before any punctuation (``"\\t$x"``, ``"\\t(x"``)
  vertical tab / form feed        ``"a \\n\\x0c"``: runs with ``\\x0b``/``\\x0c`` are split differently
  blank line with blanks          ``"\\n  \\n"`` (cl100k-style split regex only): tokenizers keeps
                                  ``\\s*[\\r\\n]+`` as one piece, tokie splits after the first newline
  non-ASCII numerals              ``"Ⅻ12345"`` (cl100k-style): tokie's ``\\p{N}`` differs for Nl/No numerals
  non-ASCII text (WordPiece)      ``[UNK]`` and control-character handling differ
  text NFC would change           (tokenizers with an NFC normalizer) ``"\\u07f3\\u07fd"``: tokenizers'
                                  NFC tables predate U+07FD and keep the order, tokie reorders the marks;
                                  routed when ``unicodedata.is_normalized("NFC", text)`` is false

Each rule is a compiled regex behind a literal prefilter (``in`` runs at memory speed, Python's regex at ~100 M
characters/s). Python's ``\\s`` is a superset of the Rust regex ``\\s`` (it adds U+001C..U+001F), so the
routing regexes can only route more documents, never fewer.

Verification: about one in ``VERIFY_EVERY`` fast-path documents (chosen by ``crc32(unit, document id)``)
is encoded again whole with the reference, and in every unit the first fast-path document's first
``SPOT_CHARS`` characters are encoded by both engines (a cheap check per unit, so that no unit escapes a
systematic problem). Any difference raises :class:`Mismatch` and the caller redoes the whole unit with the
reference (counted). The sample depends only on the unit name, ids and positions, so reruns (and prepare)
verify the same documents.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PROVEN", "ORDER", "SPOT_CHARS", "VERIFY_EVERY", "Guard", "Mismatch", "Rule", "family_of", "candidates",
           "verify_mask"]

VERIFY_EVERY = 1024  # ~1 document of a 1,000-document batch is verified whole (~3% of tokie's time)
SPOT_CHARS = 1024  # plus, per unit, the first fast-path document's first characters

# the pre-tokenizer regex of OLMo's dolma2 / OpenAI cl100k tokenizers (as it appears in tokenizer.json)
CL100K_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


@functools.cache
def _nonascii_numbers() -> frozenset[str]:
    """Every non-ASCII code point of Unicode category N* (``\\p{N}`` beyond 0-9), in Python's Unicode version."""
    return frozenset(chr(cp) for cp in range(0x80, sys.maxunicode + 1) if unicodedata.category(chr(cp))[0] == "N")


@dataclass(frozen=True)
class Rule:
    """One divergence class: a document hits it when it contains one of ``needles`` (checked with ``in``, at
    memory speed) and, if given, ``regex`` matches; ``needles_ascii_only``: the needles are a complete
    prefilter only for ASCII text (non-ASCII text goes straight to the regex). ``chars``: the class is
    "contains one of these (non-ASCII) characters"; ``nfc``: the class is "text NFC would change" (applied
    only to tokenizers whose normalizer is NFC)."""

    regex: str | None = None
    needles: tuple[str, ...] = ()
    needles_ascii_only: bool = False
    chars: str | None = None  # "nonascii": any non-ASCII character; "nonascii_numbers": see above
    nfc: bool = False


_TOKIE_NFC = Rule(nfc=True)

# (engine, family) -> the rules that engine needs for that family. Only these pairs are proven; auto takes
# the first proven engine of ORDER (the fastest measured on real multilingual text) that is installed, of a
# tested version, loads the tokenizer and agrees with the reference on the probe texts.
PROVEN: dict[tuple[str, str], tuple[Rule, ...]] = {
    ("fastokens", "gpt2-bytelevel"): (),
    ("fastokens", "cl100k-split"): (),
    ("fastokens", "sentencepiece-bpe"): (),
    ("nanotoken", "bert-wordpiece"): (),
    ("tokie", "gpt2-bytelevel"): (Rule(r"\t'(?:s|t|re|ve|m|ll|d)", ("\t'",)), Rule(None, ("\x0b", "\x0c")),
                                  _TOKIE_NFC),
    ("tokie", "cl100k-split"): (Rule(r"\t(?:[^\s\w]|_)", ("\t",)), Rule(None, ("\x0b", "\x0c")),
                                Rule(r"[\r\n][^\S\r\n]+[\r\n]", (" \n", "\t\n", " \r", "\t\r"),
                                     needles_ascii_only=True),
                                Rule(chars="nonascii_numbers"), _TOKIE_NFC),
    ("tokie", "bert-wordpiece"): (Rule(chars="nonascii"),),
    ("tokie", "sentencepiece-bpe"): (),
}
ORDER = ("fastokens", "nanotoken", "tokie")


def candidates(family: str) -> list[str]:
    """The engines proven for ``family``, fastest first."""
    return [e for e in ORDER if (e, family) in PROVEN]


class Mismatch(Exception):
    """A verified document's fast-engine ids differ from the reference: redo the unit with the reference."""


# Llama / Mistral v1 as converted from SentencePiece (legacy form): "▁" before the text and for every space
SPM_NORMALIZER = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                      {"type": "Replace", "pattern": {"String": " "},
                                                       "content": "\u2581"}]}


def family_of(obj: dict[str, Any]) -> str | None:
    """The family of a parsed tokenizer.json, or None when no engine is proven for it."""
    model = obj.get("model") or {}
    norm, pre = obj.get("normalizer"), obj.get("pre_tokenizer") or {}
    kind = model.get("type")
    if kind == "BPE" and model.get("byte_fallback") and not model.get("dropout") \
            and not model.get("continuing_subword_prefix") and not model.get("end_of_word_suffix"):
        return "sentencepiece-bpe" if norm == SPM_NORMALIZER and not pre else None
    if kind == "BPE" and not model.get("dropout") and not model.get("byte_fallback") \
            and not model.get("continuing_subword_prefix") and not model.get("end_of_word_suffix"):
        if norm not in (None, {"type": "NFC"}):
            return None
        if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space"):
            return "gpt2-bytelevel"
        parts = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
        if parts and len(parts) == 2:
            split, byte = parts
            if (split.get("type") == "Split" and (split.get("pattern") or {}).get("Regex") == CL100K_SPLIT
                    and split.get("behavior") == "Removed" and split.get("invert")
                    and byte.get("type") == "ByteLevel" and not byte.get("use_regex", True)
                    and not byte.get("add_prefix_space")):
                return "cl100k-split"
        return None
    if kind == "WordPiece" and pre.get("type") == "BertPreTokenizer" and (norm or {}).get("type") == "BertNormalizer":
        return "bert-wordpiece"
    return None


@dataclass(frozen=True)
class _Compiled:
    regex: re.Pattern[str] | None
    needles: tuple[str, ...]
    needles_ascii_only: bool
    chars: frozenset[str] | None
    nonascii: bool

    def match(self, text: str, ascii_text: bool) -> bool:
        if self.nonascii:
            return not ascii_text
        if self.chars is not None:
            return not ascii_text and not self.chars.isdisjoint(text)
        if self.needles and (ascii_text or not self.needles_ascii_only) \
                and not any(n[0] in text and n in text for n in self.needles):  # one char first: memchr speed
            return False
        return self.regex is None or self.regex.search(text) is not None


@dataclass(frozen=True)
class Guard:
    """The routing rules of one (engine, family) pair."""

    engine: str
    family: str
    rules: tuple[_Compiled, ...]
    nfc: bool = False  # text that NFC would change is routed (the rule applies and the normalizer is NFC)

    @classmethod
    def for_pair(cls, engine: str, family: str, nfc_normalizer: bool = False) -> Guard:
        rules = PROVEN[(engine, family)]
        compiled = tuple(_Compiled(re.compile(r.regex) if r.regex else None, r.needles, r.needles_ascii_only,
                                   _nonascii_numbers() if r.chars == "nonascii_numbers" else None,
                                   r.chars == "nonascii") for r in rules if not r.nfc)
        return cls(engine, family, compiled, nfc_normalizer and any(r.nfc for r in rules))

    def match(self, text: str) -> bool:
        """Can this document hit a known divergence class (so it goes to the reference engine)?"""
        ascii_text = text.isascii()
        if self.nfc and not ascii_text and not unicodedata.is_normalized("NFC", text):
            return True
        return any(r.match(text, ascii_text) for r in self.rules)

    def routed(self, texts: list[str]) -> np.ndarray:
        """Boolean mask: True for the documents that go to the reference engine."""
        if not self.rules and not self.nfc:
            return np.zeros(len(texts), bool)
        return np.fromiter(map(self.match, texts), bool, len(texts))


def verify_mask(unit: str, doc_ids: list[str], every: int = VERIFY_EVERY) -> np.ndarray:
    """Boolean mask of the documents verified whole against the reference: those whose
    ``crc32(unit \\0 id)`` is 0 modulo ``every``. It depends only on the unit name and the document ids
    (not on batching), so tokenize and prepare, and reruns, verify the same documents."""
    seed = zlib.crc32(unit.encode("utf-8") + b"\0")
    crc = zlib.crc32
    return np.fromiter((crc(str(d).encode("utf-8"), seed) % every == 0 for d in doc_ids), bool, len(doc_ids))
