"""The multilingual test sample: real text from Debian packages in ~190 language tags and ~30 scripts.

``tests/data/multilingual-sample.jsonl.zst`` holds documents ``{"id", "text", "lang", "source"}`` chosen
from the full corpus by ``examples/multilingual.py`` (``select_sample``: every language x source, the
documents richest in each script, every emoji document, 1 mixed document in 10, then seeded filler to
~10 MB of text). Rebuild it with
    python examples/multilingual.py --out DIR --sample tests/data/multilingual-sample.jsonl.zst
(same Debian package versions -> the same documents; ``SAMPLE_SHA256`` is the sha256 of the decompressed
JSONL, also in ``DIR/manifest.json``).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent / "data" / "multilingual-sample.jsonl.zst"
SAMPLE_DOCUMENTS = 2069
SAMPLE_SHA256 = "0b76ab17d9978a3d713e4b3af7bd6c70bab6c1e2c9d9527896d8929e5815ee48"


@functools.cache
def sample_bytes() -> bytes:
    """The sample's JSONL bytes (decompressed)."""
    import zstandard

    with SAMPLE.open("rb") as f:
        return zstandard.ZstdDecompressor().stream_reader(f).read()


@functools.cache
def multilingual_sample() -> tuple[dict, ...]:
    """Every document of the sample, in corpus order: package by package (its man pages, then its
    catalogues), then emoji, then mixed."""
    return tuple(json.loads(line) for line in sample_bytes().decode("utf-8").split("\n") if line)


def multilingual_texts() -> list[str]:
    return [d["text"] for d in multilingual_sample()]


def multilingual_langs() -> list[str]:
    return [d["lang"] for d in multilingual_sample()]
