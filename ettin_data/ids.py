"""Token ids and the integer types they are stored in, in one place.

- :func:`max_token_id`: the largest id a ``tokenizers`` tokenizer can emit for one sequence: its model's
  vocabulary (which may have gaps: a WordLevel vocabulary ``{"hello": 1, "world": 70000}`` has 2 entries and
  id 70000), its added tokens, and the ids its post-processor adds (``[CLS]``/``[SEP]``). Not the number of
  entries: that is what decides which ``--dtype`` is allowed (recorded as ``max_id`` in the tokenizer
  identity of ``ettin_meta.json``).
- :func:`narrow`: the one guarded cast of ids to a storage type. Every place that stores ids in a narrower
  (or differently signed) integer type goes through it (tokenize, prepare, chunk rows, MDS encoding used by
  finalize and its loader profiles, the flat files of ``--for numpy``): a value that does not fit raises
  :class:`IdOverflow` naming where, never wraps (numpy's ``astype`` would store 70000 as 4464 in uint16).
- :func:`check_fits`: the same rule at plan time, for an id known up front (a tokenizer's largest id,
  BOS/EOS).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["IdOverflow", "narrow", "fits", "check_fits", "max_token_id", "template_tokens", "id_bound"]


class IdOverflow(InputError):
    """A token id that the integer type it is to be stored in cannot hold."""


def _range(dtype: Any) -> tuple[int, int]:
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def fits(dtype: Any, value: int) -> bool:
    """Whether the integer ``dtype`` holds ``value``."""
    lo, hi = _range(dtype)
    return lo <= value <= hi


def check_fits(dtype: Any, value: int, what: str, hint: str = "") -> None:
    """:class:`IdOverflow` naming ``what`` (e.g. "tokenizer X: largest id") when ``value`` does not fit."""
    if not fits(dtype, value):
        lo, hi = _range(dtype)
        raise IdOverflow(f"{what} {value:,} does not fit {np.dtype(dtype).name} (holds {lo:,}..{hi:,})"
                         + (f"; {hint}" if hint else ""))


def narrow(ids: np.ndarray, dtype: Any, where: str, hint: str = "") -> np.ndarray:
    """``ids`` as integer ``dtype``; :class:`IdOverflow` naming ``where`` when a value does not fit (the
    values are checked only when the cast could lose them: a wider or differently signed source)."""
    dt = np.dtype(dtype)
    if ids.dtype == dt:
        return ids
    if np.can_cast(ids.dtype, dt, "safe") or not ids.size:
        return ids.astype(dt)
    lo, hi = _range(dt)
    top = int(ids.max())
    bottom = int(ids.min()) if ids.dtype.kind != "u" else 0
    if top > hi or bottom < lo:
        bad = top if top > hi else bottom
        raise IdOverflow(f"{where + ': ' if where else ''}token id {bad:,} does not fit {dt.name} (holds "
                         f"{lo:,}..{hi:,})" + (f"; {hint}" if hint else ""))
    return ids.astype(dt)


def template_tokens(tok: Any) -> list[tuple[str, int]]:
    """``(token, id)`` of every special token the post-processor of ``tok`` can add (TemplateProcessing's
    ``special_tokens``, Bert/Roberta's ``cls``/``sep``, inside a ``Sequence`` too)."""
    post = tok.post_processor
    if post is None:
        return []
    out: list[tuple[str, int]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("cls", "sep"):
                pair = node.get(key)
                if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], int):
                    out.append((str(pair[0]), pair[1]))
            special = node.get("special_tokens")
            if isinstance(special, dict):
                for entry in special.values():
                    if isinstance(entry, dict):
                        out.extend((str(t), i) for t, i in zip(entry.get("tokens") or [], entry.get("ids") or [],
                                                               strict=False) if isinstance(i, int))
            for sub in node.get("processors") or []:
                walk(sub)

    walk(json.loads(post.__getstate__()))
    return out


def max_token_id(tok: Any) -> int:
    """The largest id ``tok`` (a ``tokenizers.Tokenizer``) can emit: model vocabulary, added tokens and the
    post-processor's ids. A dense vocabulary (ids 0..n-1, the usual case) is recognised without building the
    vocabulary dict (~20 ms instead of ~50-100 ms for 50k entries)."""
    n = tok.get_vocab_size(with_added_tokens=False)
    model = tok.model
    if n and None not in map(model.id_to_token, range(n)):  # n entries, every id below n taken: dense
        top = n - 1
    else:
        top = max(tok.get_vocab(with_added_tokens=False).values(), default=-1)
    return max([top, *tok.get_added_tokens_decoder(), *(i for _, i in template_tokens(tok))])


def id_bound(identity: dict[str, Any] | None) -> int | None:
    """One past the largest id a dataset's tokenizer can emit (its identity's ``max_id``; datasets written
    before it was recorded: ``vocab_size``); None when unknown."""
    if not identity:
        return None
    if isinstance(identity.get("max_id"), int):
        return int(identity["max_id"]) + 1
    vocab = identity.get("vocab_size")
    return int(vocab) if isinstance(vocab, int) else None
