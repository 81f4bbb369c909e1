"""Parsing a tokenizer.json ahead, for the pool workers to inherit.

A fast engine parses the tokenizer.json itself, once per process (fastokens: ~0.25 s for ModernBERT, ~0.5 s for
OLMo's dolma2; it has no binary form to cache). The driver parses the same file with ``tokenizers`` to check
it (``encoder.resolve``); :func:`parsing_ahead` has the fast library parse it at the same time, in a thread
(both parsers release the GIL: the two take as long as the slower one), and keeps the result. Workers forked
after that (``executors/local.py``) inherit it, and a run on one worker uses it in place:
``Engine(path, data)`` takes the tokenizer parsed ahead from exactly these bytes (:func:`take`) instead of
parsing them again. A parse is only an object in memory: no thread of the library has run (they start at the
first encode), so the fork stays safe; the helper thread has left the process before the call returns.

The library is a guess made before anything is parsed (the one ``auto`` tries first for the model type
written in the file, or the engine asked for); a wrong guess costs only the parse, in parallel. Whether the
engine is used at all is decided as before, by ``select`` and its probe.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from ..executors.base import os_threads
from .guard import candidates
from .library import LIBRARIES

__all__ = ["parsing_ahead", "take", "guess"]

_PARSED: dict[tuple[str, bytes], Any] = {}  # (library, sha256 of the tokenizer.json) -> its parsed tokenizer
_MODEL_TYPE = re.compile(rb'"model"\s*:\s*\{\s*"type"\s*:\s*"(\w+)"')
_FAMILIES = {b"BPE": ("gpt2-bytelevel", "cl100k-split", "sentencepiece-bpe"), b"WordPiece": ("bert-wordpiece",)}


def _parser(name: str) -> Any:
    """The engine module's ``parse(data) -> parsed tokenizer`` (None: the engine does not parse ahead)."""
    return getattr(importlib.import_module(LIBRARIES[name].module), "parse", None)


def guess(requested: str, data: bytes, split_special_tokens: bool) -> str | None:
    """The fast library this run will most likely load ``data`` with, if it can parse ahead."""
    if requested in LIBRARIES:
        names = [requested]
    elif requested == "auto":
        found = _MODEL_TYPE.search(data)
        families = _FAMILIES.get(found.group(1), ()) if found else ()
        names = [n for f in families for n in candidates(f)]
    else:
        return None
    for name in dict.fromkeys(names):
        if LIBRARIES[name].unusable(split_special_tokens) is None:  # the first auto would try
            return name if _parser(name) is not None else None
    return None


def _key(name: str, data: bytes) -> tuple[str, bytes]:
    return name, hashlib.sha256(data).digest()


def _parse(name: str, data: bytes) -> None:
    with contextlib.suppress(Exception):  # a library that cannot load the file: the worker finds out as before
        _PARSED[_key(name, data)] = _parser(name)(data)


def take(name: str, data: bytes) -> Any | None:
    """The tokenizer ``name`` parsed ahead from exactly ``data`` (once), else None."""
    return _PARSED.pop(_key(name, data), None) if _PARSED else None


@contextlib.contextmanager
def parsing_ahead(requested: str, data: bytes, split_special_tokens: bool = False) -> Iterator[None]:
    """Parse ``data`` with the library :func:`guess` names, in a thread, while the body runs."""
    name = guess(requested, data, split_special_tokens)
    if name is None:
        yield
        return
    before = os_threads()
    helper = threading.Thread(target=_parse, args=(name, data), name="ettin-parse-ahead", daemon=True)
    helper.start()
    try:
        yield
    finally:
        helper.join()
        deadline = time.monotonic() + 0.5  # join returns a moment before the thread has left the process
        while before is not None and (os_threads() or 0) > before and time.monotonic() < deadline:
            time.sleep(0.001)
