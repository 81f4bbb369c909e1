"""A test-only entry point: ``python -m sleepy_stage ARGS`` (with ``tests`` on PYTHONPATH) runs
``ettin-data ARGS`` with every tokenize/chunk unit slowed down by ``SLEEPY_SECONDS`` (default 0.5) before
it starts, so that a signal sent by a test lands mid-run, at a moment the test chooses.

The slow units are this module's functions (pool workers import it by name), each calling the real
``process_unit``: the output bytes are the real stage's.
"""

from __future__ import annotations

import os
import time

from ettin_data.stages import chunk, tokenize

_REAL = {"tokenize": tokenize.process_unit, "chunk": chunk.process_unit}


def _slow(stage: str, task, cfg):
    time.sleep(float(os.environ.get("SLEEPY_SECONDS", "0.5")))
    return _REAL[stage](task, cfg)


def tokenize_unit(task, cfg):
    return _slow("tokenize", task, cfg)


def chunk_unit(task, cfg):
    return _slow("chunk", task, cfg)


def main() -> None:
    tokenize.process_unit = tokenize_unit
    chunk.process_unit = chunk_unit
    from ettin_data.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
