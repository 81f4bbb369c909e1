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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dataset import INDEX, META, SETTINGS, TOKENIZER_FILE
from .errors import InputError
from .storage import _THREADS, Store, is_remote, is_shard, local_path, store
from .workspace import Workspace

__all__ = ["RemoteWorkspace", "open_remote", "UnitIO", "mirror_small_files", "fetch_shards"]

_MIRRORED = ".ettin_mirror"  # written in a local mirror/staging folder once its small files are present
_LOCK = ".ettin_lock"  # the output lock (outputs.py) is local to a run: never uploaded

# ---------------------------------------------------------------- inputs: mirror small files, shards on demand

ROOT_FILES = (INDEX, META, TOKENIZER_FILE, "num_tokens.json", "stats.json", "manifest.json", SETTINGS)
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

        units = sorted({s.unit for s in read_index(local).shards if s.unit})
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
    from .mds import read_index

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
        for s in read_index(d).shards:
            if s.stored.size_matches(d):  # the file a writer leaves: the compressed one when compressed
                continue
            p = d / s.stored.basename
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


class RemoteWorkspace(Workspace):
    """A run against object storage, seen from the driver: local mirrors of remote inputs and a local staging
    folder for a remote output (``cfg``), the URLs as given (``given``)."""

    def __init__(self, given: Any, cfg: Any, output: Store | None, inputs: list[tuple[str, Path]],
                 finish_shards: bool):
        super().__init__(given, cfg)
        self.store = output
        self.inputs = inputs
        self.finish_shards = finish_shards
        self.done: set[str] = set()
        self.keys: list[str] = []

    def refresh(self) -> None:
        """Read which units are done remotely (``<unit>/.done`` exists)."""
        self.keys = (self.store.list() or []) if self.store else []
        self.done = {k[: -len("/.done")] for k in self.keys if k.endswith("/.done")}

    def is_done(self, name: str) -> bool:
        return super().is_done(name) if self.store is None else name in self.done

    def unit_fn(self, fn: Callable[..., Any]) -> UnitIO:
        out = (self.store.url, str(self.store.local)) if self.store else None
        return UnitIO(fn, out, tuple((u, str(p)) for u, p in self.inputs), keep=self.finish_shards)

    def pull_run_files(self, names: tuple[str, ...]) -> None:
        if self.store:
            for name in names:
                (self.store.local / name).unlink(missing_ok=True)
                if name in self.keys:
                    self.store.download(name, fresh=True)

    def push_run_files(self) -> None:
        """Upload the files at the staging root (tokenizer.json, settings, ...) so other nodes find them."""
        if self.store:
            skip = ("index.json", "ettin_meta.json")
            for p in sorted(self.store.local.iterdir()):
                if p.is_file() and p.name not in skip and not p.name.startswith((_MIRRORED, _LOCK)):
                    self.store.upload(p.name)
            (self.store.local / _MIRRORED).write_text(self.store.url)

    def pull_units(self, names: list[str]) -> None:
        if not self.store:
            return
        prefixes = tuple(f"{n}/" for n in names if n)
        small = [k for k in self.keys if not is_shard(k) and k.startswith(prefixes)]
        self.store.download_many(small, fresh=True)
        if self.finish_shards:  # only those not staged here (written by another rank or Ray node)
            self.store.download_many([k for k in self.keys if is_shard(k) and k.startswith(prefixes)])

    def push_finished(self, names: list[str], last: tuple[str, ...]) -> None:
        """Upload every staged file outside the unit folders (each unit was uploaded by its worker): nested
        indexes before the root, the files named in ``last`` at the very end, in that order."""
        if not self.store:
            return
        root = self.store.local
        units = tuple(f"{n}/" for n in names if n)
        picked = []
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if not p.is_file() or rel.startswith(units) or rel.startswith((_MIRRORED, _LOCK)) or any(
                    part.endswith((".partial", ".download", ".tmp")) or part.startswith(".ettin_logs")
                    for part in rel.split("/")):
                continue
            picked.append(rel)
        tail = [r for r in last if r in picked]
        first = sorted((r for r in picked if r not in tail),
                       key=lambda r: (r.endswith("index.json"), -r.count("/"), r))
        for r in first + tail:
            self.store.upload(r)


@contextmanager
def open_remote(cfg: Any, command: Any) -> Iterator[RemoteWorkspace]:
    """Map a config's remote INPUTs and OUTPUT to local folders for the duration of a run. Remote inputs'
    small files are mirrored now (all their files unless the stage reads lazily: ``Stage.lazy_inputs``);
    a remote output's bucket is checked now and its local staging folder emptied."""
    lazy = bool(getattr(command, "lazy_inputs", False))
    update: dict[str, Any] = {}
    inputs: list[tuple[str, Path]] = []
    new_inputs = []
    for i in getattr(cfg, "inputs", []):
        if is_remote(i):
            local = local_path(i, getattr(cfg, "cache_dir", None), "in")
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
    yield RemoteWorkspace(cfg, lcfg, out_store, inputs, bool(getattr(command, "finish_reads_shards", False)))
