"""Token rows straight from a flat id array into MDS samples: the bytes ``ShardWriter.write`` makes for
``{"id", "input_ids", "len"[, "domain"]}`` (tested byte for byte), without a dict, ``encode_value`` or a
numpy call per column. At ~15 M tokens/s per core the per-document Python cost of the generic path is
what bounds tokenize; this path keeps it to one ``struct.pack`` and one slice per document.

Sample layout (columns sorted by name: domain, id, input_ids, len): u32 sizes of the variable columns
(domain, id, input_ids), then domain and id as UTF-8, input_ids as ``ndarray:<dtype>`` (1 byte
``ndim << 2 | code``, the length in ``1 << code`` bytes, the ids), len as int64.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

from .ids import narrow

__all__ = ["token_samples", "token_row", "chunk_rows", "fast_columns"]

_HEADS = {False: struct.Struct("<II"), True: struct.Struct("<III")}
_LEN = struct.Struct("<q")


def _shape(n: int) -> bytes:
    code = 0 if n < 1 << 8 else 1 if n < 1 << 16 else 2 if n < 1 << 32 else 3
    return bytes([(1 << 2) | code]) + n.to_bytes(1 << code, "little")


def token_samples(doc_ids: list[str], ids: np.ndarray, lengths: np.ndarray, keep: np.ndarray,
                  domains: list[str] | None = None) -> Iterator[tuple[bytes, int]]:
    """(encoded sample, token count) of every kept document; document ``i`` holds
    ``ids[sum(lengths[:i]) : sum(lengths[:i + 1])]``."""
    ends = np.cumsum(lengths).tolist()
    starts = [0, *ends[:-1]]
    heads = _HEADS[domains is not None]
    pack_len = _LEN.pack
    buf = memoryview(ids.tobytes())  # one copy of the batch; slices of it are free
    size = ids.dtype.itemsize
    for i in np.flatnonzero(keep).tolist():
        a, b = starts[i], ends[i]
        n = b - a
        payload = _shape(n)
        id_b = str(doc_ids[i]).encode("utf-8")
        body = buf[a * size:b * size]
        if domains is None:
            data = b"".join((heads.pack(len(id_b), len(payload) + n * size), id_b, payload, body, pack_len(n)))
        else:
            dom_b = str(domains[i]).encode("utf-8")
            data = b"".join((heads.pack(len(dom_b), len(id_b), len(payload) + n * size), dom_b, id_b, payload,
                             body, pack_len(n)))
        yield data, n


def fast_columns(columns: dict[str, str]) -> np.dtype | None:
    """The ids dtype when ``columns`` are the token columns these rows encode (``id``, ``input_ids`` as
    ``ndarray:uint16|uint32``, ``len`` and optionally ``domain``), else None (use ``ShardWriter.write``)."""
    names = {"id": "str", "input_ids": columns.get("input_ids"), "len": "int"}
    if "domain" in columns:
        names["domain"] = "str"
    if columns != names or columns["input_ids"] not in ("ndarray:uint16", "ndarray:uint32"):
        return None
    return np.dtype(columns["input_ids"].split(":")[1])


def token_row(id_b: bytes, ids: np.ndarray, dtype: np.dtype, dom_b: bytes | None = None) -> bytes:
    """One sample ``{"id", "input_ids", "len"[, "domain"]}`` (UTF-8 id and domain already encoded), the bytes
    ``ShardWriter.write`` makes (chunk writes every chunk this way)."""
    n = len(ids)
    if not n:
        raise ValueError("cannot encode an empty array (MDS ndarray columns reject 0 elements)")
    body = (ids if ids.dtype == dtype else narrow(ids, dtype, "")).tobytes()
    payload = _shape(n)
    if dom_b is None:
        return b"".join((_HEADS[False].pack(len(id_b), len(payload) + len(body)), id_b, payload, body, _LEN.pack(n)))
    return b"".join((_HEADS[True].pack(len(dom_b), len(id_b), len(payload) + len(body)), dom_b, id_b, payload, body,
                     _LEN.pack(n)))


def chunk_rows(chunked: Any, doc_ids: list[str], domains: list[str] | None, dtype: np.dtype) -> Iterator[bytes]:
    """``token_row`` of every chunk of a :class:`~ettin_data.chunking.Chunked` (``[BOS] + content + [EOS]`` of
    document ``doc_ids[chunked.doc[k]]``, without a framing id that is None), sliced from one bytes copy of the
    content: the same bytes (tested)."""
    content = narrow(chunked.content, dtype, "")
    size = dtype.itemsize
    buf = memoryview(content.tobytes())
    bos = b"" if chunked.bos is None else np.array([chunked.bos], dtype).tobytes()
    eos = b"" if chunked.eos is None else np.array([chunked.eos], dtype).tobytes()
    framing = (chunked.bos is not None) + (chunked.eos is not None)
    pack_len = _LEN.pack
    heads = _HEADS[domains is not None]
    last, id_b, dom_b = -1, b"", b""
    for d, a, b in zip(chunked.doc.tolist(), chunked.start.tolist(), chunked.end.tolist(), strict=True):
        if d != last:
            last, id_b = d, doc_ids[d].encode("utf-8")
            if domains is not None:
                dom_b = domains[d].encode("utf-8")
        n = b - a + framing
        payload = _shape(n)
        body = (bos, buf[a * size:b * size], eos)
        if domains is None:
            yield b"".join((heads.pack(len(id_b), len(payload) + n * size), id_b, payload, *body, pack_len(n)))
        else:
            yield b"".join((heads.pack(len(dom_b), len(id_b), len(payload) + n * size), dom_b, id_b, payload, *body,
                            pack_len(n)))
