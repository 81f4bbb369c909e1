"""Progress reporting: stage code calls :func:`advance`; the executor routes it to a rich display.

Stage code never imports rich: in a worker process :func:`advance` puts deltas on a queue (batched,
at most a few messages per second); in the main process it calls the display directly.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["advance", "set_sink", "Display"]

_sink: Callable[[int, int], None] | None = None
_pending = [0, 0]
_last = [0.0]


def set_sink(sink: Callable[[int, int], None] | None) -> None:
    """Route :func:`advance` calls to ``sink(docs, tokens)`` (None: drop them)."""
    global _sink
    flush()
    _sink = sink


def advance(docs: int = 0, tokens: int = 0) -> None:
    """Report work done (documents, tokens) since the last call."""
    if _sink is None:
        return
    _pending[0] += docs
    _pending[1] += tokens
    now = time.monotonic()
    if now - _last[0] > 0.25:
        _last[0] = now
        flush()


def flush() -> None:
    if _sink is not None and (_pending[0] or _pending[1]):
        _sink(_pending[0], _pending[1])
    _pending[0] = _pending[1] = 0


class Display:
    """A rich progress bar for units with documents/s, tokens/s and ETA; silent when not a TTY or quiet."""

    def __init__(self, description: str, total: int, quiet: bool = False):
        self.enabled = not quiet and sys.stderr.isatty()
        self.docs = self.tokens = 0
        self.start = time.monotonic()
        self._progress: Any = None
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("units"), TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False,
            )
            self._task = self._progress.add_task(description, total=total, rate="")

    def __enter__(self) -> Display:
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *_: Any) -> None:
        if self._progress:
            self._refresh()
            self._progress.stop()

    def update(self, docs: int = 0, tokens: int = 0) -> None:
        self.docs += docs
        self.tokens += tokens
        if self._progress:
            self._refresh()

    def unit_done(self) -> None:
        if self._progress:
            self._progress.advance(self._task)

    def _refresh(self) -> None:
        dt = max(time.monotonic() - self.start, 1e-9)
        rate = f"{self.docs / dt:,.0f} docs/s"
        if self.tokens:
            rate += f"  {self.tokens / dt / 1e6:,.2f} M tok/s"
        self._progress.update(self._task, rate=rate)
