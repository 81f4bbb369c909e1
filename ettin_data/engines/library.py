"""The fast engines' libraries as ``--engine auto`` sees them before loading one: name, tested versions,
what each cannot do, and where its :class:`Engine` class lives (imported only when it is loaded).

Every engine has the same small interface (``engines/<name>_engine.py``)::

    Engine(path, data, split_special_tokens)   load a tokenizer.json (``data``: its bytes)
    engine.encode(texts, add_special_tokens) -> (flat uint32 ids of all documents, int64 length of each)
    engine.name, engine.version

with truncation and padding off (documents are tokenized whole) and its threads confined to the worker's
budget (``threads.py``). Which engine is used for which tokenizer family, and with which routing rules, is
decided by the proof suite (``guard.PROVEN``), not by a library's promise.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Library", "LIBRARIES", "version_tuple"]


def version_tuple(version: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(x) for x in version.split(".")[:3])
    except ValueError:
        return None


@dataclass(frozen=True)
class Library:
    """A fast engine's PyPI library (its distribution name is the ``--engine`` value)."""

    name: str
    low: tuple[int, ...]  # tested: low <= version < high (as pinned in pyproject.toml)
    high: tuple[int, ...]
    module: str  # holds ``Engine``
    split_special: bool  # can encode special-token strings as plain text (--split-special-tokens)
    families: tuple[str, ...]  # the tokenizer families it can load (proven or not: see guard.PROVEN)

    @property
    def tested(self) -> str:
        return f">={'.'.join(map(str, self.low))},<{'.'.join(map(str, self.high))}"

    def version(self) -> str | None:
        """The installed version, or None (not installed / not installable on this platform)."""
        try:
            return md.version(self.name)
        except md.PackageNotFoundError:
            return None

    def unusable(self, split_special_tokens: bool) -> str | None:
        """Why this library cannot be used here (None: it can be tried)."""
        version = self.version()
        if version is None:
            return f"{self.name} is not installed (pip install '{self.name}{self.tested}'; wheels for Linux x86_64)"
        v = version_tuple(version)
        if v is None or not self.low <= v < self.high:
            return f"{self.name} {version} is untested (tested: {self.tested})"
        if split_special_tokens and not self.split_special:
            return f"--split-special-tokens: {self.name} always encodes special-token strings as special ids"
        return None

    def load(self, path: str | Path, data: bytes | None = None, split_special_tokens: bool = False) -> Any:
        """The engine of the tokenizer.json at ``path`` (raises what the library raises when it cannot)."""
        cls = importlib.import_module(self.module).Engine
        return cls(path, data, split_special_tokens)


LIBRARIES: dict[str, Library] = {
    "fastokens": Library("fastokens", (0, 3, 5), (0, 4), "ettin_data.engines.fastokens_engine", True,
                         ("gpt2-bytelevel", "cl100k-split", "sentencepiece-bpe")),
    "nanotoken": Library("nanotoken", (0, 1, 0), (0, 2), "ettin_data.engines.nanotoken_engine", False,
                         ("bert-wordpiece",)),
    "tokie": Library("tokie", (0, 1, 4), (0, 2), "ettin_data.engines.tokie_engine", False,
                     ("gpt2-bytelevel", "cl100k-split", "bert-wordpiece", "sentencepiece-bpe")),
}
