"""Raw inputs: JSONL (plain, .gz, .bz2, .xz, .zst), Dolma json.gz, Parquet, Hugging Face datasets (save_to_disk
folders and hub names) and the built-in corpus. Each yields ``(location, record)`` pairs where
``location`` is ``file:line`` (or ``dataset:row``) for error messages and generated ids."""

from __future__ import annotations

import glob
import json
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import hub
from .codecs import FILE_CODECS, open_read
from .errors import InputError
from .parts import Part, grouped_parts, jsonl_parts

__all__ = ["Source", "discover", "source_parts", "read_records", "BadLine", "LineTooLong", "BUILTIN"]

BUILTIN = "builtin:python-docs"
JSONL_EXT = (".jsonl", ".json", ".ndjson")
COMPRESSED = FILE_CODECS  # .gz .bz2 .xz .zst .zstd
PARQUET_EXT = (".parquet",)


@dataclass(frozen=True)
class Source:
    key: str  # output folder for this source's units
    kind: str  # jsonl | parquet | hf_disk | hf_hub | builtin
    path: str
    label: str  # file name used in ids and messages


class BadLine(InputError):
    """A record that cannot be used (malformed JSON, a value that cannot be stored); skippable with
    --skip-bad-lines, counted under ``skipped.<reason>``."""

    reason = "bad_line"


class LineTooLong(BadLine):
    """A line (or a document's text) longer than --max-line-mb; skippable, counted as ``skipped.too_long``."""

    reason = "too_long"


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
                raise InputError(f"{p}: no .jsonl/.json (optionally .gz/.bz2/.xz/.zst) or .parquet files in this "
                                 "folder")
            files += [(f, p) for f in found]
        elif p.is_file():
            if not _kind(p):
                raise InputError(
                    f"{p}: unknown input type; expected .jsonl/.json (optionally .gz/.bz2/.xz/.zst), .parquet, "
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


def _hub_dataset(src: Source, hf_config: str | None, hf_split: str) -> Any:
    import datasets
    from huggingface_hub import constants

    if not datasets.config.HF_HUB_OFFLINE and not hub.reachable():
        # no network: offline mode, so a cached dataset still loads and anything else fails at once
        datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    return datasets.load_dataset(src.path, hf_config, split=hf_split, streaming=True)


def read_records(src: Source, hf_config: str | None = None, hf_split: str = "train",
                 part: Part = ONE, max_line: int = 1 << 62) -> Iterator[tuple[str, Any]]:
    """``(location, record)`` of one part of a source (the whole source by default). A JSONL line that cannot
    be read yields a :class:`BadLine` as its record (:class:`LineTooLong` past ``max_line`` bytes)."""
    if src.kind == "jsonl":
        yield from _read_jsonl(src, part, max_line)
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


CHUNK = 1 << 20  # bytes read per call: memory per reader is about max_line + CHUNK, whatever the input holds


def _pieces(path: str, start: int = 0, end: int = -1) -> Iterator[bytes]:
    """A JSONL file's bytes in pieces of at most CHUNK, decompressed by its suffix (``codecs.open_read``: a
    compressed line is never inflated beyond the piece asked for); for an uncompressed file with ``end >= 0``,
    only bytes [start, end) (parts are cut at line starts, so these are whole lines)."""
    with open_read(path) as f:
        if end < 0:
            while piece := f.read(CHUNK):
                yield piece
            return
        f.seek(start)
        left = end - start
        while left > 0 and (piece := f.read(min(CHUNK, left))):
            left -= len(piece)
            yield piece


def _lines(path: str, start: int = 0, end: int = -1, max_line: int = 1 << 62) -> Iterator[bytes | int]:
    """The lines of a JSONL file (without their newline), read in bounded pieces. A line longer than
    ``max_line`` bytes is never held whole: it is read through and yielded as its length (an int), so the
    next line keeps its number and memory stays at about ``max_line`` + CHUNK."""
    held: list[bytes] = []  # pieces of the line being read (no newline in them yet)
    size = 0
    skipping = False  # inside a line already longer than max_line
    for piece in _pieces(path, start, end):
        if b"\n" not in piece:
            size += len(piece)
            if skipping or size > max_line:
                held, skipping = [], True
            else:
                held.append(piece)
            continue
        lines = piece.split(b"\n")
        rest = lines.pop()
        first = lines[0]
        n = size + len(first)
        if skipping or n > max_line:
            yield n
        elif held:
            yield b"".join((*held, first))
        else:
            yield first
        for line in lines[1:]:
            yield line if len(line) <= max_line else len(line)
        held, size, skipping = [rest] if rest else [], len(rest), len(rest) > max_line
        if skipping:
            held = []
    if skipping or size > max_line:
        yield size
    elif size:
        yield b"".join(held)


def _json_problem(e: Exception) -> str:
    """What is wrong with a JSON line, for ``file:line: ...``."""
    if isinstance(e, RecursionError):
        return "JSON nested too deeply for Python's parser"
    if isinstance(e, json.JSONDecodeError | UnicodeDecodeError):
        return f"malformed JSON ({e})"
    return f"a JSON value Python cannot read ({str(e).split(':')[0]})"  # e.g. an integer of > 4,300 digits


def _read_jsonl(src: Source, part: Part = ONE, max_line: int = 1 << 62) -> Iterator[tuple[str, Any]]:
    import zstandard

    line_no = part.first - 1
    try:
        for line_no, line in enumerate(_lines(src.path, part.start, part.end, max_line), part.first):
            if isinstance(line, int):
                yield f"{src.label}:{line_no}", LineTooLong(
                    f"{src.label}:{line_no}: a line of {line:,} bytes, longer than --max-line-mb "
                    f"{max_line >> 20} (raise it for documents this long)")
                continue
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError) as e:  # anything the line's content makes json raise
                yield f"{src.label}:{line_no}", BadLine(f"{src.label}:{line_no}: {_json_problem(e)}")
                continue
            yield f"{src.label}:{line_no}", rec
    except (EOFError, OSError, ValueError, zlib.error, zstandard.ZstdError) as e:
        after = f" after line {line_no}" if line_no >= part.first else ""
        raise InputError(f"{src.label}: truncated or corrupt compressed file{after} ({e})") from None


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
