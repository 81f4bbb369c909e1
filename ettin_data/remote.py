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

import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import dataset as D
from .dataset import DONE, INCOMPLETE, INDEX, META, SETTINGS, TOKENIZER_FILE
from .errors import ConfigError, InputError
from .outputs import LOCK_FILE, UNITS_FILE
from .safefile import TMP_SUFFIX, write_bytes
from .storage import _THREADS, Store, is_remote, is_shard, local_path, store
from .workspace import Workspace

__all__ = ["RemoteWorkspace", "open_remote", "UnitIO", "mirror_small_files", "fetch_shards"]

_MIRRORED = ".ettin_mirror"  # written in a local mirror/staging folder once its small files are present

# ---------------------------------------------------------------- inputs: mirror small files, shards on demand

ROOT_FILES = (INDEX, META, TOKENIZER_FILE, D.NUM_TOKENS, D.STATS_FILE, D.MANIFEST, SETTINGS)
UNIT_SMALL_FILES = (INDEX, DONE, *D.STATS_FILES)  # a unit's files besides its shards


def mirror_small_files(url: str, local: Path, *, fresh: bool) -> None:
    """Download every non-shard file of a remote dataset (indexes, metadata, markers) into ``local``."""
    marker = local / _MIRRORED
    if marker.exists() and not fresh:
        return
    st = store(url, local)
    marker.unlink(missing_ok=True)
    keys = st.list()
    if keys is None:  # cannot list: follow the root index
        if not st.download(INDEX, fresh=True, missing_ok=True):
            raise InputError(f"{url}/index.json does not exist; pass a dataset written by ettin-data (or any MDS)")
        st.download_many([f for f in ROOT_FILES if f != INDEX], fresh=True, missing_ok=True)
        from .mds import read_index

        units = sorted({s.unit for s in read_index(local).shards if s.unit})
        st.download_many([f"{u}/{f}" for u in units for f in UNIT_SMALL_FILES], fresh=True, missing_ok=True)
    else:
        small = [k for k in keys if not is_shard(k) and f"{D.LOG_DIR}/" not in f"/{k}" and not k.startswith(LOCK_FILE)]
        if not any(k == INDEX or k.endswith(f"/{INDEX}") for k in small):
            raise InputError(f"{url}: no MDS dataset there (no index.json under it); check the URL")
        st.download_many(small, fresh=True)
    write_bytes(marker, url.encode(), fsync=False)


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
        if INDEX not in filenames:
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
        part.endswith(".partial") or part.startswith(D.LOG_DIR) for part in p.relative_to(st.local).parts)]
    data = [p for p in files if p.name != DONE]
    markers = sorted((p for p in files if p.name == DONE), key=lambda p: (-len(p.parts), str(p)))
    with ThreadPoolExecutor(min(_THREADS, max(1, len(data)))) as pool:
        list(pool.map(lambda p: st.upload(p.relative_to(st.local).as_posix()), data))
    for p in markers:
        st.upload(p.relative_to(st.local).as_posix())


@dataclass(frozen=True)
class UnitIO:
    """Wraps a task's job (``worker.UnitJob``) for the workers: fetch the task's input shards, run it, upload
    the task's folder of each remote output. Picklable (process pool, Ray)."""

    fn: Callable[..., Any]
    outputs: tuple[tuple[str, str], ...] = ()  # (url, local staging folder) of each remote output
    inputs: tuple[tuple[str, str], ...] = ()  # (url, local mirror folder)
    keep: bool = False  # keep the staged unit after upload (finish() reads it)

    def __call__(self, task: Any, cfg: Any) -> Any:
        for url, local in self.inputs:
            fetch_shards(url, Path(local), task.source or None)
        for url, local in self.outputs:
            _ensure_staging(url, Path(local))
        stats = self.fn(task, cfg)
        for out in self.outputs:
            st = store(*out)
            upload_tree(st, task.name)
            if not self.keep:
                shutil.rmtree(st.local / task.name, ignore_errors=True)  # it lives remotely now
        return stats


def _root_file(key: str) -> bool:
    """A file at the output's root that a machine joining the run needs (tokenizer.json, settings, ...)."""
    return "/" not in key and key not in (INDEX, META, INCOMPLETE) and not key.startswith(LOCK_FILE)


def _ensure_staging(url: str, local: Path) -> None:
    """On a machine that did not start the run (a Ray node), fetch the output's root files (tokenizer.json...)."""
    marker = local / _MIRRORED
    if marker.exists():
        return
    st = store(url, local)
    keys = st.list() or []
    st.download_many([k for k in keys if _root_file(k)], fresh=True)
    local.mkdir(parents=True, exist_ok=True)
    write_bytes(marker, url.encode(), fsync=False)


class RemoteWorkspace(Workspace):
    """A run against object storage, seen from the driver: local mirrors of remote inputs and a local staging
    folder per remote output (``cfg``), the URLs as given (``given``). Its outputs' safety lives in the bucket:
    the lock is an object created only if absent, the units seen are the bucket's, the dataset state is the
    marker object."""

    def __init__(self, given: Any, cfg: Any, outputs: dict[str, str], stores: dict[str, Store],
                 inputs: list[tuple[str, Path]], finish_shards: bool):
        super().__init__(given, cfg, outputs)
        self.stores = stores  # the remote outputs, by option name
        self.store = stores.get("output")
        self.inputs = inputs
        self.finish_shards = finish_shards
        self.done: set[str] = set()
        self.keys: dict[str, list[str]] = {}

    def refresh(self) -> None:
        """Read the remote outputs' keys; a unit is done when its ``<unit>/.done`` exists remotely."""
        self.keys = {o: st.list() or [] for o, st in self.stores.items()}
        self.done = {k[: -len("/.done")] for k in self.keys.get("output", []) if k.endswith("/.done")}

    def is_done(self, name: str) -> bool:
        return super().is_done(name) if self.store is None else name in self.done

    def unit_fn(self, fn: Callable[..., Any]) -> UnitIO:
        return UnitIO(fn, tuple((st.url, str(st.local)) for st in self.stores.values()),
                      tuple((u, str(p)) for u, p in self.inputs), keep=self.finish_shards)

    # ---------------------------------------------------------------- safety, in the bucket

    def _lock_one(self, stack: ExitStack, opt: str, folder: Path) -> None:
        st = self.stores.get(opt)
        if st is None:
            return super()._lock_one(stack, opt, folder)
        stack.enter_context(_bucket_lock(st, self.cfg.rank, self.cfg.world))
        for p in list(folder.iterdir()) if folder.is_dir() else []:  # stale staging of an earlier run
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        folder.mkdir(parents=True, exist_ok=True)

    def units_of(self, opt: str) -> list[str]:
        """A remote output's units are the bucket's (folders holding shards), not the staging folder's."""
        return _bucket_units(self.keys.get(opt, [])) if opt in self.stores else super().units_of(opt)

    def record_units(self, names: list[str]) -> None:
        super().record_units(names)
        for st in self.stores.values():
            st.upload(UNITS_FILE)

    def mark_incomplete(self, note: dict[str, Any]) -> None:
        """The marker object first, then the remote root indexes and metadata withdrawn."""
        super().mark_incomplete(note)
        for opt, st in self.stores.items():
            st.upload(INCOMPLETE)
            keys = self.keys.get(opt, [])
            units = set(_bucket_units(keys))
            for k in keys:  # at the root and in its split folders, as dataset.mark_incomplete does locally
                folder, _, name = k.rpartition("/")
                if "/" not in folder and (name == META or (name == INDEX and folder not in units)):
                    st.delete(k)

    def withdraw_done(self) -> None:
        super().withdraw_done()
        for opt, st in self.stores.items():
            markers = [k for k in self.keys.get(opt, []) if k == DONE or k.endswith(f"/{DONE}")]
            with ThreadPoolExecutor(min(_THREADS, max(1, len(markers)))) as pool:
                list(pool.map(st.delete, markers))
        self.refresh()

    def mark_complete(self) -> None:
        super().mark_complete()
        for st in self.stores.values():
            st.delete(INCOMPLETE)

    # ---------------------------------------------------------------- run files and publishing

    def pull_run_files(self, names: tuple[str, ...]) -> None:
        for opt, st in self.stores.items():
            for name in names:
                (st.local / name).unlink(missing_ok=True)
                if name in self.keys.get(opt, []):
                    st.download(name, fresh=True)

    def push_run_files(self) -> None:
        """Upload the files at the staging root (tokenizer.json, settings, ...) so other nodes find them."""
        for st in self.stores.values():
            for p in sorted(st.local.iterdir()):
                if p.is_file() and _root_file(p.name) and not p.name.startswith(_MIRRORED):
                    st.upload(p.name)
            write_bytes(st.local / _MIRRORED, st.url.encode(), fsync=False)

    def pull_units(self, names: list[str]) -> None:
        prefixes = tuple(f"{n}/" for n in names if n)
        for opt, st in self.stores.items():  # (the driver refreshed the listing once the units ran)
            keys = self.keys.get(opt, [])
            st.download_many([k for k in keys if not is_shard(k) and k.startswith(prefixes)], fresh=True)
            if self.finish_shards:  # only those not staged here (written by another rank or Ray node)
                st.download_many([k for k in keys if is_shard(k) and k.startswith(prefixes)])

    def push_finished(self, names: list[str], last: tuple[str, ...]) -> None:
        """Upload every staged file outside the unit folders (each unit was uploaded by its worker): nested
        indexes before the root, the files named in ``last`` at the very end, in that order."""
        units = tuple(f"{n}/" for n in names if n)
        skip = (_MIRRORED, LOCK_FILE, INCOMPLETE)
        for st in self.stores.values():
            root = st.local
            picked = []
            for p in sorted(root.rglob("*")):
                rel = p.relative_to(root).as_posix()
                if not p.is_file() or rel.startswith(units) or rel.startswith(skip) or any(
                        part.endswith((".partial", ".download", ".tmp", TMP_SUFFIX)) or part.startswith(D.LOG_DIR)
                        for part in rel.split("/")):
                    continue
                picked.append(rel)
            tail = [r for r in last if r in picked]
            first = sorted((r for r in picked if r not in tail),
                           key=lambda r: (r.endswith(INDEX), -r.count("/"), r))
            for r in first + tail:
                st.upload(r)


def _bucket_units(keys: list[str]) -> list[str]:
    """The MDS units among a bucket's keys: the folders that hold shard files ("" for the root)."""
    return sorted({k.rsplit("/", 1)[0] if "/" in k else "" for k in keys if is_shard(k)})


@contextmanager
def _bucket_lock(st: Store, rank: int, world: int) -> Iterator[None]:
    """One run per remote output: a lock object created only if absent (S3 ``If-None-Match: *``, GCS
    ``ifGenerationMatch=0``). A plain run creates ``.ettin_lock``; each rank ``.ettin_lock.rank<R>``; then each
    looks for the others' (create first, look second: two runs starting at once both refuse rather than both
    run). Deleted when the run ends; a run killed outright leaves it behind (the error says which to delete)."""
    name = LOCK_FILE if world == 1 else f"{LOCK_FILE}.rank{rank}"
    holder = {"holder": f"pid {os.getpid()} on {socket.gethostname()}", "rank": rank, "world": world,
              "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if not st.create(name, json.dumps(holder).encode()):
        raise _bucket_busy(st, name)
    try:
        for k in st.list() or []:
            if "/" in k or not k.startswith(LOCK_FILE) or k == name:
                continue
            other = _lock_note(st, k)
            if world == 1 or k == LOCK_FILE or other.get("world", world) != world:
                raise _bucket_busy(st, k, other)
        yield
    finally:
        st.delete(name)


def _lock_note(st: Store, name: str) -> dict[str, Any]:
    try:
        note = json.loads(st.read(name) or b"{}")
    except ValueError:
        note = {}
    return note if isinstance(note, dict) else {}


def _bucket_busy(st: Store, name: str, note: dict[str, Any] | None = None) -> ConfigError:
    note = note if note is not None else _lock_note(st, name)
    who = note.get("holder", "another run")
    if int(note.get("world", 1) or 1) > 1:
        who += f", rank {note.get('rank')} of {note.get('world')}"
    since = f" since {note['since']}" if note.get("since") else ""
    return ConfigError(f"{st.url} is in use by another run ({who}{since}; lock {st.url}/{name}); wait for it to "
                       f"finish, or if that run is gone, delete {st.url}/{name}")


@contextmanager
def open_remote(cfg: Any, command: Any) -> Iterator[RemoteWorkspace]:
    """Map a config's remote INPUTs and OUTPUTs to local folders for the duration of a run. Remote inputs'
    small files are mirrored now (all their files unless the stage reads lazily: ``Stage.lazy_inputs``);
    a remote output's bucket is checked now (its staging folder is emptied once the run holds its lock)."""
    from .stage import Stage

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
    folders = command.outputs(cfg) if isinstance(command, Stage) else {}
    stores: dict[str, Store] = {}
    for opt, url in folders.items():
        if is_remote(url):
            kind = f"out{getattr(cfg, 'rank', 0)}" if opt == "output" else f"{opt}{getattr(cfg, 'rank', 0)}"
            local = local_path(url, cfg.cache_dir, kind)  # ranks may share a disk
            stores[opt] = store(url, local)
            stores[opt].check()
            update[opt] = str(local)
    lcfg = cfg.model_copy(update=update) if update else cfg
    local_outputs = {opt: str(getattr(lcfg, opt)) for opt in folders}
    finish_shards = bool(getattr(command, "finish_reads_shards", False))
    yield RemoteWorkspace(cfg, lcfg, local_outputs, stores, inputs, finish_shards)
