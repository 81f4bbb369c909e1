"""Stopping a run: SIGTERM and SIGHUP take the Ctrl-C path, and pool workers never outlive the driver.

Driver side: :func:`handle_signals` (a context manager around a run) turns SIGTERM and SIGHUP into a
:class:`Terminated` exception in the main thread. ``Terminated`` is a ``KeyboardInterrupt``, so every
``finally`` and every ``except KeyboardInterrupt`` of the Ctrl-C path runs: the executor stops its workers,
finished units stay, no root index is written, and the CLI prints one line and exits 128 + the signal
number (130 SIGINT, 143 SIGTERM, 129 SIGHUP; see :func:`exit_code`). A handler that is not the default
one (``nohup`` ignoring SIGHUP, an application's own handler) is left alone.

Worker side: :func:`die_with_parent` (called in a pool worker's initializer) asks Linux to SIGKILL the
worker when its parent dies (``prctl(PR_SET_PDEATHSIG)``) and starts a daemon thread that exits the
worker when its parent changes or the driver is gone: the fallback for other systems and for start
methods where the parent is not the driver (forkserver). A worker thus stops at once (Linux), or within
``WATCH_INTERVAL`` seconds, after the driver is killed with SIGKILL, which no handler can catch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["Terminated", "handle_signals", "signal_of", "exit_code", "describe", "preserved", "signals_blocked",
           "die_with_parent", "HANDLED", "WATCH_INTERVAL"]

HANDLED = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))  # no SIGHUP on Windows
WATCH_INTERVAL = 0.25  # seconds between a worker's checks of its parent (the fallback of PR_SET_PDEATHSIG)
REPEAT_AFTER = 10.0  # a repeated signal within this many seconds of the first does not interrupt the cleanup
PR_SET_PDEATHSIG = 1


class _State:
    depth = 0  # nesting of active handle_signals() contexts (the CLI's and the driver's)
    first: float | None = None  # when the first signal of this run arrived (monotonic)
    signum: int | None = None  # which one


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: raised in the main thread where Ctrl-C raises ``KeyboardInterrupt``."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    def __str__(self) -> str:
        return f"terminated by {self.name}"


def signal_of(exc: BaseException) -> int:
    """The signal behind an interrupt: the one :class:`Terminated` carries, else the SIGTERM/SIGHUP this run
    received (a library may turn our exception into a plain ``KeyboardInterrupt``: Ray's waits do), else SIGINT."""
    if isinstance(exc, Terminated):
        return exc.signum
    return _State.signum or signal.SIGINT


def exit_code(exc: BaseException) -> int:
    """128 + the signal number: 130 for Ctrl-C (SIGINT), 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + signal_of(exc)


def describe(exc: BaseException) -> str:
    """``interrupted`` (Ctrl-C) or ``terminated by SIGTERM`` / ``terminated by SIGHUP``."""
    sig = signal_of(exc)
    return "interrupted" if sig == signal.SIGINT else f"terminated by {signal.Signals(sig).name}"


def _on_signal(signum: int, frame: Any) -> None:
    now = time.monotonic()
    if _State.first is not None and now - _State.first < REPEAT_AFTER:
        return  # the stop is under way (workers get a bounded grace period): let it finish
    _State.first, _State.signum = now, signum
    raise Terminated(signum)


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """Within this block SIGTERM and SIGHUP raise :class:`Terminated` (main thread only; re-entrant). A
    repeat within ``REPEAT_AFTER`` seconds is ignored, so that it cannot cut short the workers' stop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    installed = {}
    for sig in HANDLED:
        if signal.getsignal(sig) == signal.SIG_DFL:
            installed[sig] = signal.signal(sig, _on_signal)
    if _State.depth == 0:
        _State.first = _State.signum = None
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        for sig, old in installed.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def preserved() -> Iterator[None]:
    """Undo what a library does to the SIGTERM/SIGHUP handlers within this block (``ray.init`` installs a
    SIGTERM handler of its own that calls ``sys.exit``, which would skip the Ctrl-C path)."""
    main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in HANDLED} if main else {}
    try:
        yield
    finally:
        for sig, old in saved.items():
            if old is not None and signal.getsignal(sig) != old:
                signal.signal(sig, old)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Hold back SIGINT, SIGTERM and SIGHUP in this thread while it starts helper processes. A child
    inherits the blocked set, so a signal sent to the whole process group (Ctrl-C, a closed terminal,
    systemd) cannot kill it before it has chosen its own handling: pool workers choose in
    :func:`die_with_parent`; multiprocessing's resource tracker never unblocks SIGHUP. Nothing is lost:
    a signal for this process arrives when the block ends."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGINT, *HANDLED))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# --- worker side --------------------------------------------------------------------------------------


def _gone(pid: int) -> bool:
    """True when process ``pid`` no longer runs (exited, or a zombie its parent has not reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in (b"Z", b"X")


def _set_pdeathsig(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(driver_pid: int, interval: float = WATCH_INTERVAL) -> None:
    """In a worker: exit as soon as its parent or the driver ``driver_pid`` is gone (see the module docstring)."""
    parent = os.getppid()
    _set_pdeathsig(signal.SIGKILL)  # the kernel's way: fires when the parent exits, whatever killed it

    def orphaned() -> bool:
        return os.getppid() != parent or _gone(driver_pid)

    if orphaned():  # the driver died before this worker got here (before prctl could take effect)
        os._exit(1)

    def watch() -> None:
        while not orphaned():
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="ettin-parent-watch", daemon=True).start()
    # The driver stops workers with SIGTERM: terminate at once, even if the driver's parent ignored it.
    # Ctrl-C and a closed terminal reach the whole process group: only the driver handles them (and then
    # stops the workers), so a unit is never reported as failed because its worker saw the signal first.
    for sig in (signal.SIGINT, *HANDLED):
        signal.signal(sig, signal.SIG_DFL if sig == signal.SIGTERM else signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGINT, *HANDLED))  # blocked by signals_blocked()
