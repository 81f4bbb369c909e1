"""Shared helpers of the reliability tests: run the CLI, kill it, compare output trees, damage files,
and mount small or read-only file systems (root only)."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ETTIN = str(Path(sys.executable).with_name("ettin-data"))
EXCLUDE_DIRS = ("_logs", ".ettin_logs")


def cli(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``ettin-data ARGS`` in a subprocess; returns the completed process (text output)."""
    return subprocess.run([ETTIN, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def count_done(root: Path) -> int:
    """Number of ``.done`` files under root (folders renamed while we look are skipped, not errors)."""
    return sum(".done" in files for _, _, files in os.walk(root))


def run_killed_after(args: list[str], out: Path, units_done: int, extra: float) -> bool:
    """Start ``ettin-data ARGS`` in its own process group; once ``units_done`` units of ``out`` carry
    ``.done`` (counting those of earlier runs), wait ``extra`` seconds and SIGKILL the whole group.
    Returns True when the kill landed (the run had not finished)."""
    p = subprocess.Popen([ETTIN, *args], start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    while p.poll() is None and count_done(out) < units_done:
        time.sleep(0.005)
    try:
        p.wait(timeout=extra)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        _reap_group(p.pid)
        return True


def _reap_group(pgid: int) -> None:
    """Wait until no process of the killed group is left (spawned workers die with it)."""
    for _ in range(200):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def tree(root: str | Path) -> dict[str, bytes]:
    """relative path -> bytes of every file under root (hidden files included, log folders excluded)."""
    root = Path(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in EXCLUDE_DIRS]
        for f in filenames:
            p = Path(dirpath) / f
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def tree_diff(a: dict[str, bytes], b: dict[str, bytes]) -> list[str]:
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))
    changed = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    return [f"only in first: {k}" for k in only_a] + [f"only in second: {k}" for k in only_b] + [
        f"differs: {k}" for k in changed
    ]


def check_partial_state(out: Path, ref: dict[str, bytes]) -> None:
    """What an interrupted run leaves must never look finished unless it is: every folder holding a
    ``.done`` equals the reference run's folder (every file, byte for byte), and a root ``index.json``
    exists only if it is the reference's (all units listed, all of them complete)."""
    got = tree(out)
    for rel in got:
        if rel.endswith("/.done") or rel == ".done":
            folder = rel[: -len(".done")]
            assert rel in ref, f"{rel}: a .done that the uninterrupted run does not have"
            want = {k: v for k, v in ref.items() if k.startswith(folder)}
            have = {k: v for k, v in got.items() if k.startswith(folder)}
            diff = tree_diff(want, have)
            assert not diff, f"{folder or '.'} has .done but is not complete: {diff[:5]}"
    if "index.json" in got:
        assert got["index.json"] == ref["index.json"], "a root index.json that is not the finished one"
        for s in json.loads(got["index.json"])["shards"]:
            name = (s.get("zip_data") or s["raw_data"])["basename"]
            assert got.get(name) == ref[name], f"root index names {name}, which is not complete"


def write_jsonl(path: Path, records: list, compress: str | None = None) -> Path:
    data = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()
    if compress == "gzip":
        data = gzip.compress(data)
    elif compress == "zstd":
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def flip_bit(path: Path, pos: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    pos = len(data) // 2 if pos is None else pos
    data[pos] ^= 0x10
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size: str = "2m", readonly: bool = False) -> Iterator[Path]:
    """Mount a small tmpfs at ``path`` (skip the test when this machine does not allow it)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; not root here")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount_readonly(path: Path) -> None:
    r = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot remount read-only here ({r.stderr.strip()})")
