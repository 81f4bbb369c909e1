"""MDS column encodings: one value to bytes and back, as mosaicml-streaming's ``mds_encode``/``mds_decode``
(common encodings natively; rare ones left to streaming), and the vectorized helpers readers use."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from ..ids import narrow

__all__ = ["MAX_SHARD_BYTES", "TEXT_COLUMNS", "TOKEN_COLUMNS", "encode_value", "decode_value", "column_size",
           "scalar_dtype", "gather", "fast_decoder"]

MAX_SHARD_BYTES = 1 << 32  # a shard's sample offsets are u32
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


def column_size(encoding: str) -> int | None:
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
            arr = narrow(arr, parts[1], "") if arr.dtype.kind in "iub" and parts[1][0] in "iu" else \
                arr.astype(parts[1])
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


def gather(u8: np.ndarray, pos: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The values of ``dtype`` stored at byte positions ``pos`` of ``u8`` (unaligned, little-endian as MDS)."""
    k = np.dtype(dtype).itemsize
    if not len(pos):
        return np.zeros(0, dtype)
    return np.ascontiguousarray(u8[np.asarray(pos, np.int64)[:, None] + np.arange(k)]).view(dtype).ravel()


def fast_decoder(encoding: str) -> Callable[[bytes, int, int], Any]:
    """``decode(data, pos, n)`` of one column value at ``data[pos:pos + n]`` (see ``Shard.columns``)."""
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
