"""The exactness guard of the fast engine: route documents that can hit a known divergence class to the
reference engine, and verify a deterministic sample of the rest against it.

Routing: one compiled regex per tokenizer *family* (recognised from the tokenizer.json: model, normalizer,
pre-tokenizer); a document matching it is encoded by ``tokenizers``. The classes were found by property
tests against ``Tokenizer.encode_batch`` (tests/test_engine.py: random and adversarial unicode, whitespace,
apostrophe, digit, emoji, CJK runs, special-token strings) on tokie 0.1.4:

  tab before a contraction        ``"\\t's"``: tokenizers ``ĉ 's``, tokie ``ĉ ' s`` (GPT-2 byte-level); with
                                  the cl100k-style regex a tab before any punctuation (``"\\t$x"``, ``"\\t(x"``)
  vertical tab / form feed        ``"a \\n\\x0c"``: runs with ``\\x0b``/``\\x0c`` are split differently
  blank line with blanks          ``"\\n  \\n"`` (cl100k-style split regex only): tokenizers keeps
                                  ``\\s*[\\r\\n]+`` as one piece, tokie splits after the first newline
  non-ASCII numerals              ``"Ⅻ12345"`` (cl100k-style): tokie's ``\\p{N}`` differs for Nl/No numerals
  non-ASCII text (WordPiece)      ``[UNK]`` and control-character handling differ
  text NFC would change           (tokenizers with an NFC normalizer) ``"\\u07f3\\u07fd"``: tokenizers'
                                  NFC tables predate U+07FD and keep the order, tokie reorders the marks;
                                  found in a real file (jinja2's ``_identifier.py``); routed when
                                  ``unicodedata.is_normalized("NFC", text)`` is false (Python's Unicode
                                  version; marks newer than it are a residual gap)

Python's ``\\s`` is a superset of the Rust regex ``\\s`` (it adds U+001C..U+001F), so the routing regexes
can only route more documents, never fewer. A tokenizer of no known family has no proven guard: ``auto``
uses the reference for it.

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

__all__ = ["FAMILIES", "SPOT_CHARS", "VERIFY_EVERY", "Guard", "Mismatch", "family_of", "verify_mask"]

VERIFY_EVERY = 1024  # ~1 document of a 1,000-document batch is verified whole (~3% of tokie's time)
SPOT_CHARS = 1024  # plus, per unit, the first fast-path document's first characters

_VT_FF = r"[\x0b\x0c]"
# the pre-tokenizer regex of OLMo's dolma2 / OpenAI cl100k tokenizers (as it appears in tokenizer.json)
CL100K_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# family -> routing regex (documents that match go to the reference engine)
FAMILIES: dict[str, str] = {
    "gpt2-bytelevel": r"\t'(?:s|t|re|ve|m|ll|d)|" + _VT_FF,
    "cl100k-split": r"\t(?:[^\s\w]|_)|[\r\n][^\S\r\n]+[\r\n]|{NONASCII_NUMBER}|" + _VT_FF,
    "bert-wordpiece": r"[^\x00-\x7f]",
}


@functools.cache
def _nonascii_numbers() -> str:
    """A character class of every non-ASCII code point of Unicode category N* (``\\p{N}`` beyond 0-9)."""
    ranges: list[list[int]] = []
    for cp in range(0x80, sys.maxunicode + 1):
        if unicodedata.category(chr(cp))[0] == "N":
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
    return "[" + "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in ranges) + "]"


class Mismatch(Exception):
    """A verified document's fast-engine ids differ from the reference: redo the unit with the reference."""


def family_of(obj: dict[str, Any]) -> str | None:
    """The guard family of a parsed tokenizer.json, or None when no proven guard exists for it."""
    model = obj.get("model") or {}
    norm, pre = obj.get("normalizer"), obj.get("pre_tokenizer") or {}
    kind = model.get("type")
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


# family -> substrings one of which every match of its regex contains ("" + non-ASCII: see Guard.routed);
# ``in`` runs at memchr speed, ~10x Python's regex, so most documents never reach the regex
NEEDLES: dict[str, tuple[str, ...] | None] = {
    "gpt2-bytelevel": ("\t'", "\x0b", "\x0c"),
    "cl100k-split": None,  # newlines are everywhere: always the regex
    "bert-wordpiece": (),  # the regex is "any non-ASCII character": str.isascii() answers it
}


@dataclass(frozen=True)
class Guard:
    """Routing regex of one family (and the literal prefilter that spares most documents the regex)."""

    family: str
    pattern: re.Pattern[str]
    needles: tuple[str, ...] | None = None
    nfc: bool = False  # the tokenizer's normalizer is NFC: text that NFC would change is routed

    @classmethod
    def for_family(cls, family: str, nfc: bool = False) -> Guard:
        pattern = FAMILIES[family]
        if "{NONASCII_NUMBER}" in pattern:
            pattern = pattern.replace("{NONASCII_NUMBER}", _nonascii_numbers())
        return cls(family, re.compile(pattern), NEEDLES.get(family), nfc)

    def _not_nfc(self, text: str) -> bool:
        return self.nfc and not text.isascii() and not unicodedata.is_normalized("NFC", text)

    def match(self, text: str) -> bool:
        """Can this document hit a known divergence class (so it goes to the reference engine)?"""
        if self._not_nfc(text):
            return True
        needles = self.needles
        if needles is not None:
            if not needles:
                return not text.isascii()
            if not any(n in text for n in needles):
                return False
        return self.pattern.search(text) is not None

    def routed(self, texts: list[str]) -> np.ndarray:
        """Boolean mask: True for the documents that go to the reference engine."""
        if self.needles:  # usually no document of a batch holds a needle: one scan of the joined batch says so
            joined = "\0".join(texts)
            if not any(n in joined for n in self.needles):
                return np.fromiter(map(self._not_nfc, texts), bool, len(texts))
        return np.fromiter(map(self.match, texts), bool, len(texts))


def verify_mask(unit: str, doc_ids: list[str], every: int = VERIFY_EVERY) -> np.ndarray:
    """Boolean mask of the documents verified whole against the reference: those whose
    ``crc32(unit \\0 id)`` is 0 modulo ``every``. It depends only on the unit name and the document ids
    (not on batching), so tokenize and prepare, and reruns, verify the same documents."""
    seed = zlib.crc32(unit.encode("utf-8") + b"\0")
    crc = zlib.crc32
    return np.fromiter((crc(str(d).encode("utf-8"), seed) % every == 0 for d in doc_ids), bool, len(doc_ids))
