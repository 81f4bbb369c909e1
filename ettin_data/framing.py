"""Chunk framing (``--bos`` / ``--eos``): which ids stand before and after every piece of a chunk, and which ids a
document's content is stripped of.

The default is the tokenizer's BOS and EOS (``[CLS] piece [SEP]`` for ModernBERT: the seed's rule). Decoder
tokenizers define one of them only (OLMo's dolma2 and GPT-NeoX: EOS; Llama-style: BOS): for those the option is
required, a token of the tokenizer or ``none``. Content stripping removes, at most once at each end, what the
tokenizer's post-processor added around a document and the framing ids (so a document that already ends with its
EOS, as many tools write them, is not framed twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import NONE
from .dataset import TOKENIZER_FILE
from .errors import ConfigError
from .tokenizer import json_fields, template_ids, tokenizer_from_bytes

__all__ = ["Framing", "framing"]


@dataclass(frozen=True)
class Framing:
    """How chunks are framed (``--bos``/``--eos``): the ids before and after every piece (None: none) and the
    ids a document's content is stripped of (what the tokenizer added around it, and the framing ids)."""

    bos_id: int | None
    eos_id: int | None
    bos: str | None
    eos: str | None
    strip_head: tuple[int, ...]
    strip_tail: tuple[int, ...]
    strip_special: bool

    def record(self) -> dict[str, Any]:
        return {"bos": self.bos, "bos_id": self.bos_id, "eos": self.eos, "eos_id": self.eos_id}


def framing(cfg: Any, tok: dict[str, Any], raw: bytes | None) -> Framing:
    """Resolve ``--bos``/``--eos`` against a tokenizer identity and its tokenizer.json: default the tokenizer's
    BOS/EOS (the seed's ``[BOS] piece [EOS]``); a tokenizer without one needs the option (a token, or none).
    Added tokens are read from the file's header; the vocabulary is parsed only for another token."""
    name = tok.get("name")
    vocab = _Vocab(raw, name)

    def one(kind: str, given: str | None) -> tuple[int | None, str | None]:
        if given == NONE:
            return None, None
        if given is None:
            tid = tok.get(f"{kind}_id")
            if not isinstance(tid, int):
                other = tok.get("eos_id" if kind == "bos" else "bos_id")
                has = f" (its {'EOS' if kind == 'bos' else 'BOS'} id is {other})" if isinstance(other, int) else ""
                raise ConfigError(f"tokenizer {name!r} defines no {kind.upper()} token{has}: say how chunks "
                                  f"{'start' if kind == 'bos' else 'end'} with --{kind} TOKEN, or --{kind} {NONE}"
                                  + (" (decoder style: piece [EOS])" if kind == "bos" else ""))
            return tid, vocab.token(tid)
        if raw is None:
            raise ConfigError(f"--{kind} {given!r} names a token, but the input has no {TOKENIZER_FILE} to look it up "
                              "in; pass --tokenizer")
        tid = vocab.id(given)
        if tid is None:
            raise ConfigError(f"--{kind} {given!r} is not a token of tokenizer {name!r} (its special tokens: "
                              f"{', '.join(vocab.special[:8]) or 'none'}); pass one of its tokens, or {NONE}")
        return tid, given

    bos_id, bos = one("bos", cfg.bos)
    eos_id, eos = one("eos", cfg.eos)
    if cfg.add_eos_token and eos_id is None:
        raise ConfigError("--add-eos-token keeps each document's EOS, but chunks have no EOS (--eos none)")
    if raw is not None:  # what the tokenizer's post-processor adds around a document
        head, tail = template_ids(raw, vocab.id)
    else:  # no tokenizer.json: the recorded BOS/EOS are what it added (the rule before --bos/--eos)
        head, tail = tok.get("bos_id"), tok.get("eos_id")
    strip_head = tuple(sorted({i for i in (head, bos_id) if isinstance(i, int)}))
    strip_tail = tuple(sorted({i for i in (tail, eos_id) if isinstance(i, int)}))
    return Framing(bos_id, eos_id, bos, eos, strip_head, strip_tail, bool(tok.get("special_tokens_added", True)))


class _Vocab:
    """Token <-> id of a tokenizer.json: added tokens from its header, the full vocabulary only when needed."""

    def __init__(self, raw: bytes | None, name: Any):
        self.raw, self.name, self._full = raw, name, None
        added = (json_fields(raw, ("added_tokens",)).get("added_tokens") or []) if raw is not None else []
        self.added = {str(t["content"]): int(t["id"]) for t in added}
        self.special = sorted(str(t["content"]) for t in added if t.get("special"))

    def full(self) -> Any:
        if self._full is None:
            self._full = tokenizer_from_bytes(self.raw, str(self.name or TOKENIZER_FILE))
        return self._full

    def id(self, token: str) -> int | None:
        if token in self.added:
            return self.added[token]
        tid = self.full().token_to_id(token) if self.raw is not None else None
        return int(tid) if tid is not None else None

    def token(self, tid: int) -> str | None:
        for t, i in self.added.items():
            if i == tid:
                return t
        return self.full().id_to_token(tid) if self.raw is not None else None
