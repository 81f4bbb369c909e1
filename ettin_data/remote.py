"""Remote runs: object storage in and out (``s3://``, ``gs://``, ``oci://``, ``azure://``, ``hf://``, ... — whatever
mosaicml-streaming's storage layer supports), while stage code only ever sees local folders.

Output: a remote OUTPUT is staged in a local folder (under ``--cache-dir``, default the system temp
dir). Each finished task's folder is uploaded by the worker that wrote it (shards and indexes first,
``.done`` markers last, deepest first) and then removed locally; the driver uploads the dataset-level
files last (the root ``index.json`` very last). A unit counts as done when its ``.done`` exists remotely,
so reruns skip it. Input: a remote INPUT is mirrored into a local cache: its small files (indexes,
metadata, ``.done``) when the run starts, each unit's shards on demand by the worker that reads it.

Uploads use ``streaming.base.storage.CloudUploader``, downloads ``CloudDownloader``; S3-compatible
servers are reached with ``S3_ENDPOINT_URL``. Storage errors become one-line Config/InputErrors.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError
from .storage import _THREADS, Store, is_remote, is_shard, local_path, store

__all__ = ["is_remote", "involved", "localize", "session", "run_module", "Store", "UnitIO"]

_MIRRORED = ".ettin_mirror"  # written in a local mirror/staging folder once its small files are present
_LOCK = ".ettin_lock"  # the output lock (outputs.py) is local to a run: never uploaded

_ACTIVE: dict[str, Session] = {}  # local staging folder -> its session (only in the driver)

# How a stage uses remote folders (a stage module may set REMOTE_INPUTS / REMOTE_FINISH to override):
#   inputs "lazy": its driver reads only small files and each task reads the unit folder task.source, so
#                  shards are downloaded per task by the worker; "full": everything is mirrored up front.
#   finish "shards": finish() reads the output's shards (hashes, verification): staged units are kept
#                  locally after upload and missing ones are downloaded back before finish().
LAZY_INPUTS = {"tokenize", "chunk", "finalize"}
FINISH_READS_SHARDS = {"finalize"}


def stage_policy(stage: Any) -> tuple[bool, bool]:
    """(lazy inputs, finish reads output shards) for a stage module."""
    name = getattr(stage, "NAME", "")
    lazy = getattr(stage, "REMOTE_INPUTS", "lazy" if name in LAZY_INPUTS else "full") == "lazy"
    shards = getattr(stage, "REMOTE_FINISH", "shards" if name in FINISH_READS_SHARDS else "small") == "shards"
    return lazy, shards


def involved(cfg: Any) -> bool:
    """Does this config read or write object storage?"""
    return is_remote(getattr(cfg, "output", "") or "") or any(is_remote(i) for i in getattr(cfg, "inputs", ()))


# ---------------------------------------------------------------- inputs: mirror small files, shards on demand

ROOT_FILES = ("index.json", "ettin_meta.json", "tokenizer.json", "num_tokens.json", "stats.json",
              "manifest.json", ".ettin_settings.json")
UNIT_FILES = ("index.json", ".done", "stats.json", "token_decile.json")


def mirror_small_files(url: str, local: Path, *, fresh: bool) -> None:
    """Download every non-shard file of a remote dataset (indexes, metadata, markers) into ``local``."""
    marker = local / _MIRRORED
    if marker.exists() and not fresh:
        return
    st = store(url, local)
    marker.unlink(missing_ok=True)
    keys = st.list()
    if keys is None:  # cannot list: follow the root index
        if not st.download("index.json", fresh=True, missing_ok=True):
            raise InputError(f"{url}/index.json does not exist; pass a dataset written by ettin-data (or any MDS)")
        st.download_many([f for f in ROOT_FILES if f != "index.json"], fresh=True, missing_ok=True)
        from .mds import read_index

        units = sorted({b.rsplit("/", 1)[0] for s in read_index(local)["shards"]
                        for b in [s["raw_data"]["basename"]] if "/" in b})
        st.download_many([f"{u}/{f}" for u in units for f in UNIT_FILES], fresh=True, missing_ok=True)
    else:
        small = [k for k in keys if not is_shard(k) and ".ettin_logs/" not in f"/{k}"]
        if not any(k == "index.json" or k.endswith("/index.json") for k in small):
            raise InputError(f"{url}: no MDS dataset there (no index.json under it); check the URL")
        st.download_many(small, fresh=True)
    marker.write_text(url)


def fetch_shards(url: str, local: Path, source: str | None) -> int:
    """Download the shards a task reads: those of ``source`` when it lies in the mirror, else all.
    Files already present with the size the index names are kept. Returns the number downloaded."""
    from .mds import read_index, shard_files

    mirror_small_files(url, local, fresh=False)  # a fresh machine (another Ray node) has none yet
    start = local
    if source:
        try:
            rel = Path(source).resolve().relative_to(local.resolve())
            start = local / rel
        except ValueError:
            start = local
    want: list[str] = []
    for dirpath, dirnames, filenames in os.walk(start):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if "index.json" not in filenames:
            continue
        dirnames[:] = []  # an index covers everything below it (a root index names nested shards)
        d = Path(dirpath)
        for s in read_index(d)["shards"]:
            sizes = {s["raw_data"]["basename"]: s["raw_data"].get("bytes")}
            if s.get("zip_data"):
                sizes = {s["zip_data"]["basename"]: s["zip_data"].get("bytes")}
            for base in shard_files(s):
                if base not in sizes:
                    continue
                p = d / base
                if p.exists() and (sizes[base] is None or p.stat().st_size == sizes[base]):
                    continue
                p.unlink(missing_ok=True)
                want.append(p.relative_to(local).as_posix())
    store(url, local).download_many(want)
    return len(want)


# ---------------------------------------------------------------- outputs: stage locally, upload per unit

def upload_tree(st: Store, rel_root: str) -> None:
    """Upload a finished folder: data and indexes first, then ``.done`` markers (deepest first)."""
    root = st.local / rel_root if rel_root else st.local
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and not any(
        part.endswith(".partial") or part.startswith(".ettin_logs") for part in p.relative_to(st.local).parts)]
    data = [p for p in files if p.name != ".done"]
    markers = sorted((p for p in files if p.name == ".done"), key=lambda p: (-len(p.parts), str(p)))
    with ThreadPoolExecutor(min(_THREADS, max(1, len(data)))) as pool:
        list(pool.map(lambda p: st.upload(p.relative_to(st.local).as_posix()), data))
    for p in markers:
        st.upload(p.relative_to(st.local).as_posix())


@dataclass(frozen=True)
class UnitIO:
    """Wraps a stage's ``process_unit`` for the workers: fetch the task's input shards, run it, upload
    its output folder. Picklable (process pool, Ray)."""

    fn: Callable[..., Any]
    output: tuple[str, str] | None  # (url, local staging folder)
    inputs: tuple[tuple[str, str], ...] = ()  # (url, local mirror folder)
    keep: bool = False  # keep the staged unit after upload (finish() reads it)

    def __call__(self, task: Any, cfg: Any) -> Any:
        for url, local in self.inputs:
            fetch_shards(url, Path(local), task.source or None)
        if self.output:
            url, local = self.output
            _ensure_staging(url, Path(local))
        stats = self.fn(task, cfg)
        if self.output:
            st = store(*self.output)
            upload_tree(st, task.name)
            if not self.keep:
                shutil.rmtree(st.local / task.name, ignore_errors=True)  # it lives remotely now
        return stats


def _ensure_staging(url: str, local: Path) -> None:
    """On a machine that did not start the run (a Ray node), fetch the output's root files (tokenizer.json...)."""
    marker = local / _MIRRORED
    if marker.exists():
        return
    st = store(url, local)
    keys = st.list() or []
    st.download_many([k for k in keys if "/" not in k and k not in ("index.json", "ettin_meta.json")], fresh=True)
    local.mkdir(parents=True, exist_ok=True)
    marker.write_text(url)


@dataclass
class Session:
    """A run against object storage, seen from the driver."""

    orig: Any  # the config as the user gave it (URLs)
    cfg: Any  # the same with local folders
    output: Store | None
    inputs: list[tuple[str, Path]] = field(default_factory=list)
    done: set[str] = field(default_factory=set)
    keys: list[str] = field(default_factory=list)
    finish_shards: bool = False

    def refresh(self) -> None:
        """Read which units are done remotely (``<unit>/.done`` exists)."""
        self.keys = (self.output.list() or []) if self.output else []
        self.done = {k[: -len("/.done")] for k in self.keys if k.endswith("/.done")}

    def is_done(self, name: str) -> bool:
        if self.output is None:
            return (Path(self.cfg.output) / name / ".done").is_file()
        return name in self.done

    def wrap(self, fn: Callable[..., Any]) -> UnitIO:
        out = (self.output.url, str(self.output.local)) if self.output else None
        return UnitIO(fn, out, tuple((u, str(p)) for u, p in self.inputs), keep=self.finish_shards)

    def pull_settings(self, name: str) -> None:
        if self.output:
            (self.output.local / name).unlink(missing_ok=True)
            if name in self.keys:
                self.output.download(name, fresh=True)

    def push(self, rels: Iterable[str]) -> None:
        if self.output:
            for r in rels:
                self.output.upload(r)

    def push_root_files(self, exclude: Iterable[str] = ()) -> None:
        """Upload the files at the staging root (tokenizer.json, settings, ...) so other nodes find them."""
        if self.output:
            skip = set(exclude)
            rels = [p.name for p in sorted(self.output.local.iterdir())
                    if p.is_file() and p.name not in skip and not p.name.startswith((_MIRRORED, _LOCK))]
            self.push(rels)
            (self.output.local / _MIRRORED).write_text(self.output.url)

    def pull_unit_files(self, names: Iterable[str]) -> None:
        """Before ``finish``: every task's small files (index.json, .done, stats) into the staging folder."""
        if not self.output:
            return
        prefixes = tuple(f"{n}/" for n in names if n)
        small = [k for k in self.keys if not is_shard(k) and k.startswith(prefixes)]
        self.output.download_many(small, fresh=True)
        if self.finish_shards:  # only those not staged here (written by another rank or Ray node)
            self.output.download_many([k for k in self.keys if is_shard(k) and k.startswith(prefixes)])

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """(mtime, size) of every staged file, to find what ``finish`` writes."""
        if not self.output:
            return {}
        root = self.output.local
        return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.stat().st_size)
                for p in root.rglob("*") if p.is_file()}

    def push_finished(self, task_names: Iterable[str], before: dict[str, tuple[int, int]],
                      last: Iterable[str]) -> list[str]:
        """Upload what ``finish`` wrote: files outside task folders, and files inside them that are new or
        changed since ``before``; the files named in ``last`` go last, in that order (root index.json last)."""
        if not self.output:
            return []
        root = self.output.local
        prefixes = tuple(f"{n}/" for n in task_names if n)
        picked = []
        for p in sorted(root.rglob("*")):
            if not p.is_file():
                continue
            rel = p.relative_to(root).as_posix()
            if rel.startswith((_MIRRORED, _LOCK)) or any(part.endswith((".partial", ".download"))
                                                         for part in rel.split("/")):
                continue
            if not rel.startswith(prefixes) or before.get(rel) != (p.stat().st_mtime_ns, p.stat().st_size):
                picked.append(rel)
        tail = [r for r in last if r in picked]
        first = [r for r in picked if r not in tail]
        first.sort(key=lambda r: (r.endswith("index.json"), -r.count("/"), r))  # nested indexes before the root
        self.push(first + tail)
        return first + tail


@contextmanager
def localize(cfg: Any, stage: Any = None) -> Iterator[Any]:
    """Map a config's remote INPUTs and OUTPUT to local folders for the duration of a run; yields the
    local config. Remote inputs' small files are mirrored now (all files unless the stage reads lazily,
    see :func:`stage_policy`); a remote output's bucket is checked now."""
    lazy, finish_shards = stage_policy(stage)
    update: dict[str, Any] = {}
    inputs: list[tuple[str, Path]] = []
    new_inputs = []
    for i in getattr(cfg, "inputs", []):
        if is_remote(i):
            local = local_path(i, cfg.cache_dir, "in")
            mirror_small_files(i.rstrip("/"), local, fresh=True)
            if not lazy:
                fetch_shards(i.rstrip("/"), local, None)
            inputs.append((i.rstrip("/"), local))
            new_inputs.append(str(local))
        else:
            new_inputs.append(i)
    if inputs:
        update["inputs"] = new_inputs
    out_store = None
    if is_remote(getattr(cfg, "output", "") or ""):
        local = local_path(cfg.output, cfg.cache_dir, f"out{getattr(cfg, 'rank', 0)}")  # ranks may share a disk
        out_store = store(cfg.output, local)
        out_store.check()
        for p in list(local.iterdir()) if local.is_dir() else []:  # stale staging of an earlier run
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        local.mkdir(parents=True, exist_ok=True)
        update["output"] = str(local)
    lcfg = cfg.model_copy(update=update) if update else cfg
    sess = Session(cfg, lcfg, out_store, inputs, finish_shards=finish_shards)
    key = str(Path(lcfg.output)) if hasattr(lcfg, "output") else ""
    prev = _ACTIVE.get(key)
    _ACTIVE[key] = sess
    try:
        yield lcfg
    finally:
        if prev is None:
            _ACTIVE.pop(key, None)
        else:
            _ACTIVE[key] = prev


def session(cfg: Any) -> Session | None:
    """The active remote session whose local output folder is ``cfg.output`` (None for local runs)."""
    out = getattr(cfg, "output", None)
    return _ACTIVE.get(str(Path(out))) if out and not is_remote(out) else None


def run_module(mod: Any, cfg: Any, quiet: bool = True) -> dict[str, Any]:
    """``mod.run(cfg, quiet)`` with remote INPUTs/OUTPUT mapped to local folders (what the CLI calls)."""
    if not involved(cfg):
        return mod.run(cfg, quiet=quiet)
    with localize(cfg, mod) as lcfg:
        summary = mod.run(lcfg, quiet=quiet)
    if isinstance(summary, dict) and is_remote(getattr(cfg, "output", "") or ""):
        summary["output"] = cfg.output
    return summary
