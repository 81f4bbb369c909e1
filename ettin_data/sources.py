"""Raw inputs: JSONL (plain, .gz, .zst), Dolma json.gz, Parquet, Hugging Face datasets (save_to_disk
folders and hub names) and the built-in corpus. Each yields ``(location, record)`` pairs where
``location`` is ``file:line`` (or ``dataset:row``) for error messages and generated ids."""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .parts import Part, grouped_parts, jsonl_parts

__all__ = ["Source", "discover", "source_parts", "read_records", "BadLine", "BUILTIN"]

BUILTIN = "builtin:python-docs"
JSONL_EXT = (".jsonl", ".json", ".ndjson")
COMPRESSED = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
PARQUET_EXT = (".parquet",)


@dataclass(frozen=True)
class Source:
    key: str  # output folder for this source's units
    kind: str  # jsonl | parquet | hf_disk | hf_hub | builtin
    path: str
    label: str  # file name used in ids and messages


class BadLine(InputError):
    """A record that cannot be read (malformed JSON); skippable with --skip-bad-lines."""


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    for ext in COMPRESSED:
        if name.endswith(ext):
            name = name[: -len(ext)]
    if name.endswith(JSONL_EXT):
        return "jsonl"
    if name.endswith(PARQUET_EXT):
        return "parquet"
    return None


def _strip_ext(rel: str) -> str:
    while True:
        stem, ext = os.path.splitext(rel)
        if ext.lower() in (*COMPRESSED, *JSONL_EXT, *PARQUET_EXT):
            rel = stem
        else:
            return rel


def _is_hf_disk(path: Path) -> bool:
    return (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file() or (
        path / "state.json"
    ).is_file()


def discover(inputs: list[str]) -> list[Source]:
    """Expand files, folders and globs into sources with distinct, deterministic output keys."""
    files: list[Path] = []
    special: list[Source] = []
    for item in inputs:
        p = Path(item)
        if item == BUILTIN:
            special.append(Source("python-docs", "builtin", item, item))
        elif p.is_dir() and _is_hf_disk(p):
            special.append(Source(p.resolve().name, "hf_disk", str(p), p.name))
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and _kind(f) and not f.name.startswith("."))
            if not found:
                raise InputError(f"{p}: no .jsonl/.json(.gz/.zst) or .parquet files in this folder")
            files += [(f, p) for f in found]
        elif p.is_file():
            if not _kind(p):
                raise InputError(
                    f"{p}: unknown input type; expected .jsonl/.json (optionally .gz/.zst), .parquet, "
                    "a Hugging Face save_to_disk folder, or a hub dataset name"
                )
            files.append((p, p.parent))
        elif glob.has_magic(item):
            matched = sorted(Path(m) for m in glob.glob(item, recursive=True) if _kind(Path(m)))
            if not matched:
                raise InputError(f"{item}: the pattern matches no input files")
            base = Path(os.path.commonpath([str(m.parent) for m in matched]))
            files += [(m, base) for m in matched]
        elif re.fullmatch(r"[\w.-]+/[\w.-]+", item) and not item.startswith((".", "/")):
            special.append(Source(item.replace("/", "__"), "hf_hub", item, item))
        else:
            raise InputError(f"{item} does not exist (expected a file, folder, glob or hub dataset name)")
    out = []
    for f, base in files:
        rel = f.relative_to(base).as_posix() if f.is_relative_to(base) else f.name
        out.append(Source(_strip_ext(rel), _kind(f) or "", str(f), f.as_posix()))
    seen: set[Path] = set()
    dedup = []
    for s in out:
        rp = Path(s.path).resolve()
        if rp not in seen:
            seen.add(rp)
            dedup.append(s)
    return dedup + special


ONE = Part(0, 1, 0, -1)


def source_parts(src: Source, part_bytes: int, hf_config: str | None = None, hf_split: str = "train") -> list[Part]:
    """The parts of a source that can be read in parallel (see ``parts.py``); one part when the source cannot
    be opened here (reading it then fails with the usual one-line message)."""
    if src.kind == "jsonl":
        return jsonl_parts(src.path, part_bytes)
    try:
        if src.kind == "parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(src.path).metadata
            groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
            sizes = [sum(g.column(c).total_compressed_size for c in range(g.num_columns)) for g in groups]
            return grouped_parts(sizes, [g.num_rows for g in groups], part_bytes) if groups else [ONE]
        if src.kind == "hf_disk":
            files, rows = _arrow_files(src, hf_split)
            parts = grouped_parts([os.path.getsize(f) for f in files], rows, part_bytes) if files else [ONE]
            return [Part(p.index, p.count, p.first - 1, p.first - 1 + sum(rows[p.start:p.end]), p.first)
                    for p in parts] if files else parts
        if src.kind == "hf_hub":
            n = _hub_dataset(src, hf_config, hf_split).n_shards
            return [Part(i, n, i, i + 1) for i in range(n)] if n > 1 else [ONE]
    except Exception:  # unreadable here: the task reports it with the usual message
        return [ONE]
    return [ONE]


def _arrow_files(src: Source, hf_split: str) -> tuple[list[str], list[int]]:
    import datasets

    ds = _load_disk(src, hf_split)
    files = [c["filename"] for c in ds.cache_files]
    return files, [datasets.Dataset.from_file(f).num_rows for f in files]


def _load_disk(src: Source, hf_split: str) -> Any:
    import datasets

    ds = datasets.load_from_disk(src.path)
    if isinstance(ds, datasets.DatasetDict):
        if hf_split not in ds:
            raise InputError(f"{src.path}: no split {hf_split!r} (splits: {', '.join(ds)}); pass --hf-split")
        ds = ds[hf_split]
    return ds


def _hub_reachable() -> bool:
    """Whether the hub's host name resolves (cheap; no request). Without it ``datasets`` retries every
    request for ~45 s before failing, twice per hub input (measured: 93 s to an error on this machine)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _hub_dataset(src: Source, hf_config: str | None, hf_split: str) -> Any:
    import datasets
    from huggingface_hub import constants

    if not datasets.config.HF_HUB_OFFLINE and not _hub_reachable():
        # no network: offline mode, so a cached dataset still loads and anything else fails at once
        datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    return datasets.load_dataset(src.path, hf_config, split=hf_split, streaming=True)


def read_records(src: Source, hf_config: str | None = None, hf_split: str = "train",
                 part: Part = ONE) -> Iterator[tuple[str, Any]]:
    """``(location, record)`` of one part of a source (the whole source by default)."""
    if src.kind == "jsonl":
        yield from _read_jsonl(src, part)
    elif src.kind == "parquet":
        yield from _read_parquet(src, part)
    elif src.kind == "builtin":
        from .corpus import python_docs

        for i, doc in enumerate(python_docs(), 1):
            yield f"{src.label}:{i}", doc
    elif src.kind in ("hf_disk", "hf_hub"):
        yield from _read_hf(src, hf_config, hf_split, part)
    else:  # pragma: no cover
        raise InputError(f"{src.path}: unsupported source kind {src.kind}")


def _zstd_chunks(path: str) -> Iterator[bytes]:
    """Decompress a (multi-frame) zstd file in one pass; a truncated last frame is an error."""
    import zstandard

    with open(path, "rb") as f:
        d, pending = zstandard.ZstdDecompressor().decompressobj(), False
        while chunk := f.read(1 << 20):
            while chunk:
                pending = True
                yield d.decompress(chunk)
                if d.eof:
                    chunk, pending = d.unused_data, False
                    d = zstandard.ZstdDecompressor().decompressobj()
                else:
                    chunk = b""
        if pending:
            raise EOFError("the last zstd frame is incomplete")


def _lines(path: str, start: int = 0, end: int = -1) -> Iterator[bytes]:
    """Lines of a JSONL file; for an uncompressed file, only those starting in bytes [start, end)."""
    name = path.lower()
    if name.endswith((".zst", ".zstd")):
        buf = b""
        for out in _zstd_chunks(path):
            buf += out
            if b"\n" in out:
                *lines, buf = buf.split(b"\n")
                yield from lines
        if buf:
            yield buf
        return
    if name.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            yield from f
        return
    with open(path, "rb") as f:
        if end < 0:
            yield from f
            return
        f.seek(start)
        pos = start
        for line in f:
            if pos >= end:
                return
            pos += len(line)
            yield line


def _read_jsonl(src: Source, part: Part = ONE) -> Iterator[tuple[str, Any]]:
    import zstandard

    line_no = 0
    try:
        for line_no, line in enumerate(_lines(src.path, part.start, part.end), part.first):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                yield f"{src.label}:{line_no}", BadLine(f"{src.label}:{line_no}: malformed JSON ({e})")
                continue
            yield f"{src.label}:{line_no}", rec
    except (EOFError, OSError, zlib.error, zstandard.ZstdError) as e:
        raise InputError(
            f"{src.label}: truncated or corrupt compressed file after line {line_no} ({e})"
        ) from None


def _read_parquet(src: Source, part: Part = ONE) -> Iterator[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(src.path)
    except Exception as e:
        raise InputError(f"{src.label}: cannot read Parquet file ({e})") from None
    row = part.first - 1
    groups = None if part.end < 0 else list(range(part.start, part.end))
    for batch in pf.iter_batches(batch_size=4096, row_groups=groups):
        for rec in batch.to_pylist():
            row += 1
            yield f"{src.label}:{row}", rec


def _read_hf(src: Source, hf_config: str | None, hf_split: str, part: Part = ONE) -> Iterator[tuple[str, Any]]:
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    label, row = src.label, 0
    try:
        if src.kind == "hf_disk":
            ds = _load_disk(src, hf_split)
            if part.end >= 0:  # rows [start, end): whole Arrow files
                ds, row = ds.select(range(part.start, part.end)), part.start
        else:
            ds = _hub_dataset(src, hf_config, hf_split)
            if part.count > 1:  # one shard of the hub dataset; rows are numbered within it
                ds, label = ds.shard(num_shards=part.count, index=part.index), f"{src.label}/shard-{part.index:05d}"
        it = iter(ds)
        while True:
            try:
                rec = next(it)
            except StopIteration:
                return
            row += 1
            yield f"{label}:{row}", rec
    except InputError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = "Hugging Face hub dataset" if src.kind == "hf_hub" else "Hugging Face dataset folder"
        hint = " (no network? pass a local file or save_to_disk folder)" if src.kind == "hf_hub" else ""
        raise InputError(f"cannot read {where} {src.path!r}: {first}{hint}") from None
