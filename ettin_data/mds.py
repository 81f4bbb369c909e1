"""Everything that reads and writes MDS v2 shards and indexes: the only module that knows the format.

A native numpy + zstandard writer and reader (no torch import, see README design notes). The bytes
follow mosaicml-streaming's MDS v2 layout exactly: a shard is
``u32 count | u32 offsets[count+1] | config JSON | samples`` where each sample is the u32 sizes of its
variable-size columns followed by the column bytes, columns sorted by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from .dataset import INDEX, is_root_index
from .errors import InputError
from .indexcheck import UnsafePath, check_index

__all__ = [
    "TEXT_COLUMNS",
    "TOKEN_COLUMNS",
    "ShardWriter",
    "UnitReader",
    "read_index",
    "write_json_atomic",
    "jsonable",
    "find_units",
    "write_root_index",
    "encode_value",
    "decode_value",
    "shard_files",
]

SIZE_LIMIT = 1 << 26
HASH_ALGO = "sha1"

TEXT_COLUMNS = {"id": "str", "text": "str"}
TOKEN_COLUMNS = {"id": "str", "input_ids": "ndarray:uint32", "len": "int"}

_FIXED = {
    "int": 8, "uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8, "int8": 1, "int16": 2, "int32": 4,
    "int64": 8, "float16": 2, "float32": 4, "float64": 8,
}
_NP_SCALAR = {"int": np.int64, **{k: getattr(np, k) for k in _FIXED if k != "int"}}
_VALUE_DTYPE = {8: "uint8", 9: "int8", 16: "uint16", 17: "int16", 18: "float16", 32: "uint32", 33: "int32",
                34: "float32", 64: "uint64", 65: "int64", 66: "float64"}
_VALUE_CODE = {v: k for k, v in _VALUE_DTYPE.items()}
_SHAPE_DTYPE = {0: np.uint8, 1: np.uint16, 2: np.uint32, 3: np.uint64}


def scalar_dtype(encoding: str) -> np.dtype | None:
    """The numpy dtype of a scalar column encoding (``int``, ``uint32``, ...); None for other encodings."""
    t = _NP_SCALAR.get(encoding)
    return None if t is None else np.dtype(t).newbyteorder("<")


def _column_size(encoding: str) -> int | None:
    if encoding.startswith("ndarray:") and encoding.count(":") == 2:
        _, dtype, shape = encoding.split(":")
        return int(np.prod([int(x) for x in shape.split(",")])) * np.dtype(dtype).itemsize
    return _FIXED.get(encoding)


def encode_value(encoding: str, value: Any) -> bytes:
    """Encode one column value the way streaming's ``mds_encode`` does (common encodings)."""
    if encoding == "str":
        return value.encode("utf-8")
    if encoding == "bytes":
        return value
    if encoding == "json":
        return json.dumps(value.tolist() if isinstance(value, np.ndarray) else value).encode("utf-8")
    if encoding in _NP_SCALAR:
        return _NP_SCALAR[encoding](value).tobytes()
    if encoding.startswith("ndarray"):
        arr = np.asarray(value)
        parts = encoding.split(":")
        if arr.size == 0:
            raise ValueError("cannot encode an empty array (MDS ndarray columns reject 0 elements)")
        head = b""
        if len(parts) == 1:
            head = bytes([_VALUE_CODE[arr.dtype.name]])
        elif arr.dtype != parts[1]:  # (dtype == str is ~4x cheaper than dtype.name: this runs per sample)
            arr = arr.astype(parts[1])
        if len(parts) < 3:  # shape in plain Python: numpy calls on tiny shape arrays cost ~15 us per sample
            m = max(arr.shape)
            code = 0 if m < 1 << 8 else 1 if m < 1 << 16 else 2 if m < 1 << 32 else 3
            head += bytes([(arr.ndim << 2) | code]) + b"".join(d.to_bytes(1 << code, "little") for d in arr.shape)
        return head + arr.tobytes()
    raise ValueError(f"unsupported MDS encoding {encoding!r}")


def decode_value(encoding: str, data: bytes | memoryview) -> Any:
    """Decode one column value (inverse of :func:`encode_value`); other encodings go to streaming."""
    if encoding == "str":
        return bytes(data).decode("utf-8")
    if encoding == "bytes":
        return bytes(data)
    if encoding == "json":
        return json.loads(bytes(data))
    if encoding in _NP_SCALAR:
        return np.frombuffer(data, _NP_SCALAR[encoding], 1)[0].item()
    if encoding.startswith("ndarray"):
        parts = encoding.split(":")
        i = 0
        if len(parts) == 1:
            dtype = _VALUE_DTYPE[data[0]]
            i = 1
        else:
            dtype = parts[1]
        if len(parts) < 3:
            byte = data[i]
            ndim, code = byte >> 2, byte & 3
            sd = _SHAPE_DTYPE[code]
            nbytes = ndim * np.dtype(sd).itemsize
            shape = tuple(int(x) for x in np.frombuffer(data, sd, ndim, i + 1))
            i += 1 + nbytes
        else:
            shape = tuple(int(x) for x in parts[2].split(","))
        return np.frombuffer(data, dtype, offset=i).reshape(shape)
    from streaming.base.format.mds.encodings import mds_decode  # rare encodings: let streaming decode

    return mds_decode(encoding, bytes(data))


def jsonable(obj: Any) -> Any:
    """A plain-JSON copy of ``obj`` (paths, enums and other objects as their ``str``): what run logs,
    settings and ``ettin_meta.json`` record."""
    return json.loads(json.dumps(obj, default=str))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON to a temporary sibling, fsync, rename: readers never see a partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    text = None if path.name == INDEX else indented_json(obj)
    with open(tmp, "w") as f:
        if text is None:
            json.dump(obj, f, sort_keys=True, indent=None if path.name == INDEX else 1)
        else:
            f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _Other(Exception):
    """A value :func:`indented_json` leaves to ``json``."""


def indented_json(obj: Any) -> str | None:
    """``json.dumps(obj, sort_keys=True, indent=1)`` for dicts with str keys, lists, str, int, bool and
    None (None for anything else): the same text, ~10x faster than json's pure-Python indenting encoder
    (stats.json, token_decile.json and .done files list every length or sample index)."""
    out: list[str] = []
    try:
        _indented(obj, "\n", out)
    except _Other:
        return None
    return "".join(out)


def _indented(o: Any, nl: str, out: list[str]) -> None:
    t = type(o)
    if t is str:
        out.append(_STR(o))
    elif o is None:
        out.append("null")
    elif o is True:
        out.append("true")
    elif o is False:
        out.append("false")
    elif t is int:
        out.append(int.__repr__(o))
    elif t is list:
        if not o:
            out.append("[]")
            return
        inner = nl + " "
        if all(type(x) is int for x in o):
            out.append("[" + inner + ("," + inner).join(map(int.__repr__, o)) + nl + "]")
            return
        out.append("[")
        sep = inner
        for x in o:
            out.append(sep)
            _indented(x, inner, out)
            sep = "," + inner
        out.append(nl + "]")
    elif t is dict:
        if not o:
            out.append("{}")
            return
        if not all(type(k) is str for k in o):
            raise _Other
        inner = nl + " "
        out.append("{")
        sep = inner
        for k in sorted(o):
            out.append(sep + _STR(k) + ": ")
            _indented(o[k], inner, out)
            sep = "," + inner
        out.append(nl + "}")
    else:
        raise _Other


_STR = json.encoder.encode_basestring_ascii


class ShardWriter:
    """Write samples into one folder of MDS shards plus its ``index.json`` (call :meth:`finish`).

    ``compression`` is ``"zstd"`` (level 3, as streaming) or ``None``; with zstd only the ``.mds.zstd``
    files are written, like streaming's ``MDSWriter``.
    """

    def __init__(self, dirname: str | Path, columns: dict[str, str], compression: str | None = "zstd",
                 size_limit: int = SIZE_LIMIT, on_shard: Callable[[Shard], None] | None = None):
        if compression not in (None, "zstd"):
            raise ValueError(f"compression must be None or 'zstd', got {compression!r}")
        self.dirname = Path(dirname)
        self.dirname.mkdir(parents=True, exist_ok=True)
        self.names = sorted(columns)
        self.encodings = [columns[n] for n in self.names]
        self.sizes = [_column_size(e) for e in self.encodings]
        self.compression = compression
        self.size_limit = size_limit
        self.config = {
            "column_encodings": self.encodings, "column_names": self.names, "column_sizes": self.sizes,
            "compression": compression, "format": "mds", "hashes": [HASH_ALGO], "size_limit": size_limit,
            "version": 2,
        }
        self._config_data = json.dumps({k: v for k, v in self.config.items()}, sort_keys=True).encode()
        self._samples: list[bytes] = []
        self._size = 0
        self._whole: Shard | None = None  # a whole input shard held back by write_shard (see there)
        self.shards: list[dict[str, Any]] = []
        self._zstd = zstandard.ZstdCompressor(level=3) if compression else None
        self._on_shard = on_shard  # sees every shard written, its bytes in memory (checks without a read back)

    @property
    def _budget(self) -> int:
        """Bytes of samples (each plus its 4-byte offset) a shard may hold before a new one starts."""
        return self.size_limit - 8 - len(self._config_data)

    def write(self, sample: dict[str, Any]) -> None:
        heads, body = [], []
        for name, enc, size in zip(self.names, self.encodings, self.sizes, strict=True):
            datum = encode_value(enc, sample[name])
            if size is None:
                heads.append(len(datum))
            elif len(datum) != size:
                raise ValueError(f"column {name}: expected {size} bytes, got {len(datum)}")
            body.append(datum)
        self.write_raw(np.array(heads, np.uint32).tobytes() + b"".join(body))

    def write_raw(self, data: bytes | memoryview) -> None:
        """Append one sample already encoded as :meth:`write` would (see ``token_rows.py``)."""
        if self._whole is not None:
            self._release_whole()
        if self._samples and self._size + len(data) + 4 > self._budget:
            self._flush()
        self._samples.append(data)
        self._size += len(data) + 4

    def write_shard(self, shard: Shard) -> None:
        """Append every sample of ``shard`` (a shard of the same columns, e.g. read from a compressed unit):
        the files are exactly those of ``write_raw`` for each sample, in order (tested). When the shard's
        samples would make one shard here too, its sample bytes are written as they are, behind a new
        header (the shard config with this writer's compression, offsets moved by the config's change of
        length): no per-sample work. Otherwise (other config, a boundary that would move) sample by sample."""
        n = shard.info["samples"]
        off = shard.offsets
        total = int(off[-1] - off[0]) + 4 * n
        if (self._samples or not n or (n > 1 and total > self._budget)
                or shard.config_bytes() != self._config_for(shard.info.get("compression"))):
            for sample in shard.raw_samples():
                self.write_raw(sample)
            return
        if self._whole is not None:
            if self._size + int(off[1] - off[0]) + 4 <= self._budget:  # its first sample joins the held one
                self._release_whole()
                for sample in shard.raw_samples():
                    self.write_raw(sample)
                return
            self._flush()
        self._whole, self._size = shard, total

    def _config_for(self, compression: str | None) -> bytes:
        """This writer's shard config as a writer with ``compression`` embeds it in its shards."""
        if compression == self.compression:
            return self._config_data
        return json.dumps({**self.config, "compression": compression}, sort_keys=True).encode()

    def _release_whole(self) -> None:
        """The held shard's samples become pending samples (they fit: write_shard checked)."""
        shard, size = self._whole, self._size
        self._whole = None
        self._samples = list(shard.raw_samples())
        self._size = size

    def _flush(self) -> None:
        shard = None
        if self._whole is not None:
            shard = self._whole
            self._whole = None
            n = shard.info["samples"]
            off = shard.offsets
            shift = 4 + 4 * (n + 1) + len(self._config_data) - int(off[0])
            parts = [np.uint32(n).tobytes() + (off + shift).astype(np.uint32).tobytes() + self._config_data,
                     memoryview(shard.data)[int(off[0]):]]
        elif self._samples:
            n = len(self._samples)
            offsets = np.zeros(n + 1, np.int64)
            np.cumsum([len(s) for s in self._samples], out=offsets[1:])
            offsets += 4 + 4 * (n + 1) + len(self._config_data)
            parts = [b"".join([np.uint32(n).tobytes(), offsets.astype(np.uint32).tobytes(), self._config_data,
                               *self._samples])]
        else:
            return
        basename = f"shard.{len(self.shards):05d}.mds"
        h = hashlib.sha1()
        for part in parts:
            h.update(part)
        raw_info = {"basename": basename, "bytes": sum(len(p) for p in parts), "hashes": {HASH_ALGO: h.hexdigest()}}
        zip_info = None
        if self._zstd:
            z = self._zstd.compress(b"".join(parts))
            zip_info = {"basename": basename + ".zstd", "bytes": len(z),
                        "hashes": {HASH_ALGO: hashlib.sha1(z).hexdigest()}}
            _write_file(self.dirname / zip_info["basename"], [z])
        else:
            _write_file(self.dirname / basename, parts)
        self.shards.append({**self.config, "raw_data": raw_info, "samples": n, "zip_data": zip_info})
        self._samples, self._size = [], 0
        if self._on_shard is not None:  # a shard written whole is passed as read: the same samples
            self._on_shard(shard or Shard(self.dirname / basename, self.shards[-1], parts[0]))

    def finish(self) -> dict[str, Any]:
        """Flush the last shard and write ``index.json``; returns the index."""
        self._flush()
        index = {"shards": self.shards, "version": 2}
        write_json_atomic(self.dirname / INDEX, index)
        return index

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, *_: Any) -> None:
        if exc_type is None:
            self.finish()


def _write_file(path: Path, parts: list[bytes | memoryview]) -> None:
    with open(path, "wb") as f:
        for part in parts:
            f.write(part)


def read_index(dirname: str | Path) -> dict[str, Any]:
    """Read and check an ``index.json``; errors name the file and what is wrong."""
    path = Path(dirname) / INDEX
    try:
        index = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path} does not exist (not an MDS folder?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid JSON ({e}); rerun the stage that wrote it") from None
    except RecursionError:
        raise InputError(f"{path} is nested too deeply to be an MDS index; rerun the stage that wrote it") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not an MDS index file") from None
    return check_index(index, dirname, path)


def shard_files(shard: dict[str, Any]) -> list[str]:
    """Basenames of the files that hold one shard (raw and/or compressed)."""
    out = [shard["raw_data"]["basename"]]
    if shard.get("zip_data"):
        out.append(shard["zip_data"]["basename"])
    return out


@dataclass
class Shard:
    """One decoded shard held in memory; samples are zero-copy views."""

    path: Path
    info: dict[str, Any]
    data: bytes

    @property
    def offsets(self) -> np.ndarray:
        n = self.info["samples"]
        return np.frombuffer(self.data, np.uint32, n + 1, 4).astype(np.int64)

    def samples(self, columns: set[str] | None = None) -> Iterator[dict[str, Any]]:
        """Decode the samples (only ``columns`` when given; values are views into the shard bytes)."""
        names, encs, sizes = (self.info[k] for k in ("column_names", "column_encodings", "column_sizes"))
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
        cols, encs, sizes = (self.info[k] for k in ("column_names", "column_encodings", "column_sizes"))
        want = {n: i for i, n in enumerate(names)}
        slots = [want.get(c) for c in cols]
        decoders = [_fast_decoder(e) for e in encs]
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
        n = self.info["samples"]
        return bytes(memoryview(self.data)[4 + 4 * (n + 1):int(self.offsets[0])])

    def spans(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(start, size)``: where column ``name``'s bytes lie in every sample (int64 arrays over the samples,
        positions in :attr:`data`), computed for all samples at once from the offsets and the u32 size heads."""
        names, sizes = self.info["column_names"], self.info["column_sizes"]
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
        enc = self.info["column_encodings"][self.info["column_names"].index(name)]
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

    def raw_samples(self) -> Iterator[memoryview]:
        mv = memoryview(self.data)
        off = self.offsets
        for i in range(len(off) - 1):
            yield mv[off[i]:off[i + 1]]


def gather(u8: np.ndarray, pos: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The values of ``dtype`` stored at byte positions ``pos`` of ``u8`` (unaligned, little-endian as MDS)."""
    k = np.dtype(dtype).itemsize
    if not len(pos):
        return np.zeros(0, dtype)
    return np.ascontiguousarray(u8[np.asarray(pos, np.int64)[:, None] + np.arange(k)]).view(dtype).ravel()


def _fast_decoder(encoding: str) -> Callable[[bytes, int, int], Any]:
    """``decode(data, pos, n)`` of one column value at ``data[pos:pos + n]`` (see :meth:`Shard.columns`)."""
    if encoding == "str":
        return lambda data, pos, n: data[pos:pos + n].decode("utf-8")
    parts = encoding.split(":")
    if len(parts) == 2 and parts[0] == "ndarray":  # one byte (ndim << 2 | shape code), the shape, the values
        dtype = np.dtype(parts[1])

        def ndarray(data: bytes, pos: int, n: int) -> np.ndarray:
            skip = 1 + (data[pos] >> 2) * (1 << (data[pos] & 3))
            return np.frombuffer(data, dtype, (n - skip) // dtype.itemsize, pos + skip)

        return ndarray
    return lambda data, pos, n: decode_value(encoding, memoryview(data)[pos:pos + n])


def load_shard(dirname: Path, shard: dict[str, Any], check_hash: bool = False) -> Shard:
    """Read a shard's raw bytes (decompressing in memory; the input folder is never modified)."""
    raw_path = dirname / shard["raw_data"]["basename"]
    zip_info = shard.get("zip_data")
    try:
        if raw_path.exists():
            data = raw_path.read_bytes()
            path = raw_path
        elif zip_info:
            path = dirname / zip_info["basename"]
            comp = path.read_bytes()
            _check_size(path, comp, zip_info)
            _check_hash(path, comp, zip_info)  # always: bit flips in zstd data can decode silently
            data = _decompress(shard.get("compression"), comp, path)
        else:
            raise InputError(f"{raw_path} is missing (named in {dirname / INDEX})")
    except FileNotFoundError as e:
        raise InputError(f"{e.filename} is missing (named in {dirname / INDEX})") from None
    _check_size(path, data, shard["raw_data"])
    if check_hash or path == raw_path:  # the bytes read from disk are always checked (sha1: ~1.4 GB/s)
        _check_hash(path, data, shard["raw_data"])
    n = shard["samples"]
    if len(data) < 4 * (n + 2) or int(np.frombuffer(data, np.uint32, 1)[0]) != n:
        raise InputError(f"{path} is corrupt: header does not hold {n} samples")
    off = np.frombuffer(data, np.uint32, n + 1, 4)
    if n and (off[-1] != len(data) or np.any(np.diff(off.astype(np.int64)) < 0)):
        raise InputError(f"{path} is corrupt: sample offsets do not match the file size")
    return Shard(path, shard, data)


def _check_size(path: Path, data: bytes, info: dict[str, Any]) -> None:
    expected = info.get("bytes")
    if expected is not None and len(data) != expected:
        raise InputError(f"{path} is corrupt: {len(data)} bytes, index says {expected} (truncated?)")


def _check_hash(path: Path, data: bytes, info: dict[str, Any]) -> None:
    for algo, want in (info.get("hashes") or {}).items():
        if algo in hashlib.algorithms_available and hashlib.new(algo, data).hexdigest() != want:
            raise InputError(f"{path} is corrupt: {algo} hash does not match the index")


def _decompress(compression: str | None, data: bytes, path: Path) -> bytes:
    try:
        if compression and compression.split(":")[0] == "zstd":
            return zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 32)
        from streaming.base.compression import decompress  # other codecs: streaming knows them

        return decompress(compression, data)
    except zstandard.ZstdError as e:
        raise InputError(f"{path} is corrupt: cannot decompress ({e})") from None


class UnitReader:
    """Read the samples of one MDS folder (a unit, or any folder with a flat index.json)."""

    def __init__(self, dirname: str | Path, check_hash: bool = False):
        self.dirname = Path(dirname)
        self.index = read_index(self.dirname)
        self.check_hash = check_hash
        shards = self.index["shards"]
        self.columns: dict[str, str] = {}
        for s in shards:
            cols = dict(zip(s["column_names"], s["column_encodings"], strict=True))
            if self.columns and cols != self.columns:
                raise InputError(f"{self.dirname / INDEX}: shards disagree on columns")
            self.columns = cols
        self.num_samples = sum(int(s["samples"]) for s in shards)

    def __len__(self) -> int:
        return self.num_samples

    def shards(self) -> Iterator[Shard]:
        for s in self.index["shards"]:
            yield load_shard(self.dirname, s, self.check_hash)

    def iter_samples(self, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """Yield samples as dicts (only ``columns`` decoded when given)."""
        for shard in self.shards():
            names = shard.info["column_names"]
            want = set(columns) if columns is not None else set(names)
            missing = want - set(names)
            if missing:
                raise InputError(
                    f"{self.dirname}: missing column(s) {sorted(missing)}; columns present: {names}"
                )
            yield from shard.samples(want)


def find_units(root: str | Path) -> list[str]:
    """Relative paths (posix, sorted) of the unit folders under ``root``: folders whose index.json lists
    shards by plain file names. Root indexes (nested basenames) and hidden/temporary folders are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder")
    found = []
    seen: set[str] = set()
    # symlinked unit folders are followed (never skipped silently); a symlink loop is walked once
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if INDEX in filenames:
            try:
                index = read_index(dirpath)
            except UnsafePath:  # names files outside the dataset: nothing may run on it
                raise
            except InputError:  # a broken index: a leaf folder is a (broken) unit that fails on its own
                if not dirnames:  # when the folder has units below, it was a root index: look below
                    rel = Path(dirpath).relative_to(root).as_posix()
                    found.append("" if rel == "." else rel)
                continue
            if not is_root_index(index):
                rel = Path(dirpath).relative_to(root).as_posix()
                found.append("" if rel == "." else rel)
                dirnames[:] = []
    return sorted(found)


def write_root_index(root: str | Path, units: list[str]) -> dict[str, Any]:
    """Merge the unit indexes into ``root/index.json`` with nested basenames (any depth)."""
    root = Path(root)
    shards = []
    for unit in units:
        for s in read_index(root / unit)["shards"]:
            s = json.loads(json.dumps(s))
            s["raw_data"]["basename"] = f"{unit}/{s['raw_data']['basename']}"
            if s.get("zip_data"):
                s["zip_data"]["basename"] = f"{unit}/{s['zip_data']['basename']}"
            shards.append(s)
    index = {"shards": shards, "version": 2}
    write_json_atomic(root / INDEX, index)
    return index
