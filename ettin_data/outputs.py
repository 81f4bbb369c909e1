"""Output safety, checked by the driver before anything is written.

- An output folder must not be an input, lie inside one, or hold one (refused even with --overwrite:
  rewriting it would destroy the input); an output that is a file is refused.
- A stage deletes or replaces only units its own runs wrote here: their names are recorded in
  ``OUTPUT/.ettin_units.json`` before they are written; MDS units found under the output that are not
  recorded (another dataset) stop the run with one line naming them.
- One run per output at a time: an advisory ``fcntl.flock`` on ``OUTPUT/.ettin_lock`` (one per rank with
  --rank/--world) that the kernel releases when the process ends, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from .dataset import SETTINGS
from .errors import ConfigError

__all__ = ["output_folders", "check_outputs", "claim_units", "output_lock", "UNITS_FILE", "LOCK_FILE"]

UNITS_FILE = ".ettin_units.json"
LOCK_FILE = ".ettin_lock"


def output_folders(cfg: Any) -> list[Path]:
    """Every folder a run writes: ``--output`` and the fused prepare stage's ``--keep-text/--keep-tokens``."""
    out = [cfg.output] + [getattr(cfg, k, None) for k in ("keep_text", "keep_tokens")]
    return [Path(o) for o in out if o and "://" not in str(o)]


def _local(p: str) -> bool:
    return "://" not in p


def check_outputs(cfg: Any) -> None:
    """ConfigError (exit 2) when an output is a file, or overlaps an input (even with --overwrite)."""
    inputs = [Path(i) for i in getattr(cfg, "inputs", []) if _local(str(i))]
    for out in output_folders(cfg):
        if out.exists() and not out.is_dir():
            raise ConfigError(f"output {out} is a file, not a folder; choose a folder for --output")
        o = out.resolve()
        for i in inputs:
            r = i.resolve()
            if r == o:
                raise ConfigError(f"output {out} is the input {i}: writing it would destroy the input; "
                                  "choose a new output folder")
            if r.is_relative_to(o) or o.is_relative_to(r):
                inner, outer = (i, out) if r.is_relative_to(o) else (out, i)
                raise ConfigError(f"output {out} and input {i} overlap ({inner} lies inside {outer}); "
                                  "choose an output folder outside the input")


def _mine(unit: str, names: set[str]) -> bool:
    return unit in names or any(unit.startswith(n + "/") or n.startswith(unit + "/") for n in names)


def _same_dataset(out: Path, stage: str, inputs: list[str]) -> bool:
    """An output of an earlier version (no record): its units are this dataset's when its recorded
    settings name the same stage and inputs."""
    try:
        old = json.loads((out / SETTINGS).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(old, dict) and old.get("stage") == stage and old.get("inputs") == inputs


def claim_units(cfg: Any, names: list[str], stage: str = "", inputs: list[str] | None = None) -> None:
    """Refuse (ConfigError) MDS units under an output that this dataset's runs did not write; then record
    ``names`` (the plan's units) as this dataset's, before any of them is written."""
    from .mds import find_units  # local: mds is heavy-ish and not needed for the overlap checks

    for out in output_folders(cfg):
        if not out.is_dir():
            continue
        rec = out / UNITS_FILE
        recorded: set[str] | None = None
        if rec.is_file():
            try:
                recorded = set(json.loads(rec.read_text())["units"])
            except (OSError, ValueError, KeyError, TypeError):
                raise ConfigError(f"{rec} is damaged; delete it only if every unit under {out} was written "
                                  "by ettin-data runs into this folder") from None
        existing = find_units(out)
        if recorded is None:
            same = _same_dataset(out, stage, list(inputs if inputs is not None else cfg.inputs))
            recorded = set(existing) if same else set()
        foreign = [u or "." for u in existing if not _mine(u, recorded)]
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" (+{len(foreign) - 5} more)" if len(foreign) > 5 else "")
            raise ConfigError(f"{out} holds MDS units this dataset did not write ({shown}); they are not "
                              "deleted: choose an empty or new output folder")
        _write_record(rec, sorted(recorded | set(names)))


def _write_record(path: Path, names: list[str]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"units": names}, indent=1))
    os.replace(tmp, path)


@contextmanager
def output_lock(cfg: Any) -> Iterator[None]:
    """Hold an exclusive advisory lock on each output for the run; a second run fails at once naming the
    holder (pid@host)."""
    import fcntl

    world = getattr(cfg, "world", 1) or 1
    name = LOCK_FILE if world == 1 else f"{LOCK_FILE}.rank{getattr(cfg, 'rank', 0)}"
    held: list[tuple[int, Path]] = []
    try:
        for out in output_folders(cfg):
            out.mkdir(parents=True, exist_ok=True)
            path = out / name
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_ino != os.stat(path).st_ino:  # the holder removed it as we opened it
                    raise BlockingIOError
            except OSError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "a run that just finished"
                os.close(fd)
                raise ConfigError(f"{out} is in use by another run ({holder}; lock {path}); wait for it to "
                                  "finish or choose another output folder") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            held.append((fd, path))
        yield
    finally:
        for fd, path in held:  # removed while still held (the outputs stay as the stage left them)
            with suppress(OSError):
                path.unlink()
            os.close(fd)
