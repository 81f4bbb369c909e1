"""Reading MDS shards natively: a shard's bytes in memory (decompressed there, never next to the input), checked
against its index entry, and its samples decoded zero-copy, one by one or column-wise for all at once."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..codecs import Inflated, decompress_shard
from ..errors import InputError
from .encoding import MAX_SHARD_BYTES, decode_value, fast_decoder, gather
from .index import INDEX, FileInfo, Index, ShardEntry, read_index

__all__ = ["Shard", "load_shard", "UnitReader"]


@dataclass
class Shard:
    """One decoded shard held in memory; samples are zero-copy views."""

    path: Path
    entry: ShardEntry
    data: bytes

    @property
    def offsets(self) -> np.ndarray:
        n = self.entry.samples
        return np.frombuffer(self.data, np.uint32, n + 1, 4).astype(np.int64)

    def samples(self, columns: set[str] | None = None) -> Iterator[dict[str, Any]]:
        """Decode the samples (only ``columns`` when given; values are views into the shard bytes)."""
        e = self.entry
        names, encs, sizes = e.column_names, e.column_encodings, e.column_sizes
        want = set(names) if columns is None else columns
        nvar = sum(1 for s in sizes if not s)
        for raw in self.raw_samples():
            var = iter(np.frombuffer(raw, np.uint32, nvar).tolist()) if nvar else iter(())
            pos = 4 * nvar
            sample = {}
            for name, enc, size in zip(names, encs, sizes, strict=True):
                n = size or next(var)
                if name in want:
                    sample[name] = decode_value(enc, raw[pos:pos + n])
                pos += n
            yield sample

    def columns(self, names: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        """``(value of names[0], names[1], ...)`` for every sample (None for a column the shard lacks), decoded
        straight from the shard bytes: the fast path of readers that need a few columns of every sample.
        ``str`` columns come back as str, 1-D ``ndarray:DTYPE`` columns as zero-copy arrays."""
        e = self.entry
        cols, encs, sizes = e.column_names, e.column_encodings, e.column_sizes
        want = {n: i for i, n in enumerate(names)}
        slots = [want.get(c) for c in cols]
        decoders = [fast_decoder(enc) for enc in encs]
        nvar = sum(1 for s in sizes if not s)
        heads = struct.Struct(f"<{nvar}I")
        data = self.data
        off = self.offsets.tolist()
        empty = [None] * len(names)
        for i in range(len(off) - 1):
            pos = off[i]
            var = iter(heads.unpack_from(data, pos))
            pos += 4 * nvar
            row = list(empty)
            for slot, dec, size in zip(slots, decoders, sizes, strict=True):
                n = size or next(var)
                if slot is not None:
                    row[slot] = dec(data, pos, n)
                pos += n
            yield tuple(row)

    def config_bytes(self) -> bytes:
        """The shard config JSON embedded in the shard's header."""
        n = self.entry.samples
        return bytes(memoryview(self.data)[4 + 4 * (n + 1):int(self.offsets[0])])

    def spans(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(start, size)``: where column ``name``'s bytes lie in every sample (int64 arrays over the samples,
        positions in :attr:`data`), computed for all samples at once from the offsets and the u32 size heads."""
        names, sizes = self.entry.column_names, self.entry.column_sizes
        if name not in names:
            raise KeyError(name)
        u8 = np.frombuffer(self.data, np.uint8)
        starts = self.offsets[:-1]
        nvar = sum(1 for x in sizes if not x)
        pos = starts + 4 * nvar
        var = 0
        for col, size in zip(names, sizes, strict=True):
            width = np.full(len(starts), size, np.int64) if size else \
                gather(u8, starts + 4 * var, np.dtype("<u4")).astype(np.int64)
            var += not size
            if col == name:
                return pos, width
            pos = pos + width
        raise KeyError(name)  # pragma: no cover

    def array_spans(self, name: str) -> tuple[np.ndarray, np.ndarray, np.dtype]:
        """``(start, count, dtype)`` of the values of a 1-D ``ndarray:DTYPE`` column in every sample (after each
        value's shape header), vectorized like :meth:`spans`."""
        enc = self.entry.columns[name]
        parts = enc.split(":")
        if parts[0] != "ndarray" or len(parts) not in (2, 3):
            raise ValueError(f"column {name} is {enc}, not a typed ndarray column")
        dtype = np.dtype(parts[1])
        pos, size = self.spans(name)
        if len(parts) == 3:  # the shape is in the encoding: no header
            return pos, size // dtype.itemsize, dtype
        head = np.frombuffer(self.data, np.uint8)[pos].astype(np.int64)
        skip = 1 + (head >> 2) * (1 << (head & 3))
        return pos + skip, (size - skip) // dtype.itemsize, dtype

    def id_spans(self, name: str) -> tuple[np.ndarray, np.ndarray, np.dtype]:
        """``(start, count, dtype)`` of the token ids of column ``name`` in every sample: a typed 1-D ndarray
        (:meth:`array_spans`) or ``bytes`` of little-endian int64 (ModernBERT's streaming layout, llm-foundry).
        ValueError for another encoding, or a bytes value that is not whole int64 ids (naming the sample)."""
        if self.entry.columns[name] != "bytes":
            return self.array_spans(name)
        start, size = self.spans(name)
        odd = np.flatnonzero(size % 8)
        if odd.size:
            k = int(odd[0])
            raise ValueError(f"sample {k}: {name} holds {int(size[k])} bytes, not whole int64 ids")
        return start, size // 8, np.dtype("<i8")

    def raw_samples(self) -> Iterator[memoryview]:
        mv = memoryview(self.data)
        off = self.offsets
        for i in range(len(off) - 1):
            yield mv[off[i]:off[i + 1]]


def load_shard(dirname: Path, entry: ShardEntry, check_hash: bool = False) -> Shard:
    """Read a shard's raw bytes (decompressing in memory; the input folder is never modified). Memory is
    bounded by the sizes the index declares: a file is checked against its recorded size before it is read,
    and decompression stops one byte past the declared raw size (``codecs.decompress_shard``)."""
    raw_path = dirname / entry.raw.basename
    declared = entry.raw.bytes
    if declared >= MAX_SHARD_BYTES:
        raise InputError(f"{raw_path}: the index declares {declared:,} bytes, more than an MDS shard can hold "
                         f"(u32 offsets: < 4 GiB); the index is corrupt")
    try:
        if raw_path.exists():
            path = raw_path
            _check_size(path, path.stat().st_size, entry.raw)
            data = raw_path.read_bytes()
        elif entry.zip is not None:
            path = dirname / entry.zip.basename
            _check_size(path, path.stat().st_size, entry.zip)
            comp = path.read_bytes()
            _check_size(path, len(comp), entry.zip)
            _check_hash(path, comp, entry.zip)  # always: bit flips in zstd data can decode silently
            data = _decompress(entry.compression, comp, path, declared)
        else:
            raise InputError(f"{raw_path} is missing (named in {dirname / INDEX})")
    except FileNotFoundError as e:
        raise InputError(f"{e.filename} is missing (named in {dirname / INDEX})") from None
    _check_size(path, len(data), entry.raw)
    if check_hash or path == raw_path:  # the bytes read from disk are always checked (sha1: ~1.4 GB/s)
        _check_hash(path, data, entry.raw)
    n = entry.samples
    if len(data) < 4 * (n + 2) or int(np.frombuffer(data, np.uint32, 1)[0]) != n:
        raise InputError(f"{path} is corrupt: header does not hold {n} samples")
    off = np.frombuffer(data, np.uint32, n + 1, 4)
    if n and (off[-1] != len(data) or np.any(np.diff(off.astype(np.int64)) < 0)):
        raise InputError(f"{path} is corrupt: sample offsets do not match the file size")
    return Shard(path, entry, data)


def _check_size(path: Path, size: int, info: FileInfo) -> None:
    if size != info.bytes:
        raise InputError(f"{path} is corrupt: {size} bytes, index says {info.bytes} (truncated?)")


def _check_hash(path: Path, data: bytes, info: FileInfo) -> None:
    for algo, want in info.hashes.items():
        if algo in hashlib.algorithms_available and hashlib.new(algo, data).hexdigest() != want:
            raise InputError(f"{path} is corrupt: {algo} hash does not match the index")


def _decompress(compression: str | None, data: bytes, path: Path, limit: int) -> bytes:
    try:
        return decompress_shard(compression or "", data, limit)
    except Inflated as e:
        raise InputError(f"{path} is corrupt: it {e}") from None
    except ImportError as e:
        raise InputError(f"{path}: compression {compression!r} needs {e.name} (pip install it)") from None
    except Exception as e:  # zstandard.ZstdError, zlib.error, OSError, EOFError, brotli.error, ...
        raise InputError(f"{path} is corrupt: cannot decompress ({type(e).__name__}: {e})") from None


class UnitReader:
    """Read the samples of one MDS folder (a unit, or any folder with a flat index.json)."""

    def __init__(self, dirname: str | Path, check_hash: bool = False):
        self.dirname = Path(dirname)
        self.index: Index = read_index(self.dirname)
        self.check_hash = check_hash
        self.columns: dict[str, str] = {}
        for s in self.index.shards:
            cols = s.columns
            if self.columns and cols != self.columns:
                raise InputError(f"{self.dirname / INDEX}: shards disagree on columns")
            self.columns = cols
        self.num_samples = self.index.samples

    def __len__(self) -> int:
        return self.num_samples

    def shards(self) -> Iterator[Shard]:
        for s in self.index.shards:
            yield load_shard(self.dirname, s, self.check_hash)

    def iter_samples(self, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """Yield samples as dicts (only ``columns`` decoded when given)."""
        for shard in self.shards():
            names = shard.entry.column_names
            want = set(columns) if columns is not None else set(names)
            missing = want - set(names)
            if missing:
                raise InputError(
                    f"{self.dirname}: missing column(s) {sorted(missing)}; columns present: {names}"
                )
            yield from shard.samples(want)
