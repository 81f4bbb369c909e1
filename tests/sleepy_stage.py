"""A test-only entry point: ``python -m sleepy_stage ARGS`` (with ``tests`` on PYTHONPATH) runs
``ettin-data ARGS`` with every tokenize/chunk unit slowed down by ``SLEEPY_SECONDS`` (default 0.5) before
it starts, so that a signal sent by a test lands mid-run, at a moment the test chooses; and
:func:`interrupted_run`, which does that and checks that no process of the run is left.

The slow stages are this module's subclasses of the real ones, put in the command registry (pool workers
import this module by name, Ray pickles them); each calls the real ``process_unit``: the output bytes are
the real stage's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ettin_data.stages import chunk, tokenize

SLEEP = 1.0  # seconds each unit sleeps in the tests' runs: longer than any delay they wait after a unit
GONE_WITHIN = 4.0  # seconds in which every process of a stopped run must be gone


def _sleep() -> None:
    time.sleep(float(os.environ.get("SLEEPY_SECONDS", "0.5")))


class SlowTokenize(tokenize.Tokenize):
    def process_unit(self, task, cfg, dst):
        _sleep()
        return super().process_unit(task, cfg, dst)


class SlowChunk(chunk.Chunk):
    def process_unit(self, task, cfg, dst):
        _sleep()
        return super().process_unit(task, cfg, dst)


def main() -> None:
    import dataclasses

    from ettin_data import stages

    slow = {"tokenize": "sleepy_stage:SlowTokenize", "chunk": "sleepy_stage:SlowChunk"}
    stages.COMMANDS = tuple(dataclasses.replace(e, target=slow.get(e.name, e.target)) for e in stages.COMMANDS)
    from ettin_data.cli import main as cli_main

    cli_main()


# --- for the tests: run it, signal the main process, check that every process of the run is gone ---

def _terminal_defaults() -> None:
    """The run starts with the signal dispositions of an interactive shell, whatever the test runner
    inherited (under ``nohup`` SIGHUP is ignored, and ettin-data rightly leaves an ignored SIGHUP alone)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def proc_stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def session(sid: int) -> set[int]:
    """Live processes of session ``sid`` (the run was started in a new session; reparenting keeps it)."""
    out = set()
    for d in Path("/proc").iterdir():
        fields = proc_stat(int(d.name)) if d.name.isdigit() else None
        if fields and int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            out.add(int(d.name))
    return out


def pool_workers(sid: int) -> int:
    n = 0
    for pid in session(sid):
        with contextlib.suppress(OSError):
            n += b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return n


def wait_gone(sid: int, timeout: float = GONE_WITHIN) -> tuple[float, set[int]]:
    """Seconds until no live process of the session is left (or the survivors after ``timeout``)."""
    t0 = time.monotonic()
    while (left := session(sid)) and time.monotonic() - t0 < timeout:
        time.sleep(0.02)
    return time.monotonic() - t0, left


def kill_session(sid: int) -> None:
    for pid in session(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def interrupted_run(args: list[str], out: Path, sig: int, after_units: int, delay: float,
                    ready: Callable[[int], bool] = lambda pid: pool_workers(pid) >= 2,
                    group: bool = False) -> subprocess.Popen:
    """Start ``ettin-data ARGS`` (slowed down) in a new session; once ``ready(pid)`` (default: two pool
    workers run) and ``after_units`` units of ``out`` are done, wait ``delay`` s and send ``sig`` to the
    main process only (``group``: to its whole process group, like Ctrl-C or a closed terminal). Returns
    the finished process (``stderr_text`` set) after checking that no process of the run outlived it by
    more than ``GONE_WITHIN`` seconds."""
    from helpers_faults import count_done

    env = {**os.environ, "SLEEPY_SECONDS": str(SLEEP),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.Popen([sys.executable, "-m", "sleepy_stage", *args], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_terminal_defaults)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(p.stderr.read()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while (not ready(p.pid) or count_done(out) < after_units) and p.poll() is None:
            assert time.monotonic() < deadline, "the run did not get going within 60 s"
            time.sleep(0.01)
        assert p.poll() is None, f"the run ended before the signal: {p.returncode}"
        time.sleep(delay)
        if group:
            os.killpg(p.pid, sig)
        else:
            p.send_signal(sig)  # the main process alone
        p.wait(timeout=30)
        took, left = wait_gone(p.pid)
        assert not left, f"processes of the run still alive {took:.1f} s after {signal.Signals(sig).name}: {left}"
        to = f"{signal.Signals(sig).name}{' (group)' if group else ''}"
        print(f"{to} after {after_units} units + {delay:.2f}s: all gone in {took:.2f}s")
    finally:
        kill_session(p.pid)
        reader.join(timeout=5)
    p.stderr_text = "".join(err)  # type: ignore[attr-defined]
    return p


if __name__ == "__main__":
    main()
