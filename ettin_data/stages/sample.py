"""The ``sample`` command group. Each sub-command is a stage module in :mod:`ettin_data.sampling`:
``split`` (train/validation by document), ``budget`` (whole units to a token target), ``context``
(random chunks for context extension) and ``mix`` (a TOML mixture of sources)."""

from __future__ import annotations

MODULES = {
    "split": "ettin_data.sampling.split",
    "budget": "ettin_data.sampling.budget",
    "context": "ettin_data.sampling.context",
    "mix": "ettin_data.sampling.mix",
}

__all__ = ["MODULES"]
