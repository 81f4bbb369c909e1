"""Compression, in one place, always with bounded memory: what a file name's suffix means (convert reads
and export writes the same table), reading a (compressed) file in bounded pieces, and decompressing an MDS
shard no further than the size its index declares.

Memory never follows what compressed data claims: a 196 KB ``.jsonl.zst`` can hold a 6 GiB line, a 64 KB
shard can inflate to 2 GiB. Every reader here returns at most the bytes asked for per call
(:func:`open_read`), and :func:`decompress_shard` stops one byte past the declared size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

__all__ = ["FILE_CODECS", "file_codec", "open_read", "open_write", "check_write_name", "decompress_shard",
           "Inflated"]

FILE_CODECS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd"}
# suffixes of compressed or archive formats this tool does not write (a name must never lie about its bytes)
_FOREIGN = (".br", ".lz4", ".lz", ".lzma", ".lzo", ".sz", ".snappy", ".z", ".zip", ".7z", ".tar", ".tgz", ".tbz2",
            ".txz", ".rar", ".zlib", ".deflate", ".bz", ".gzip", ".zstandard")


class Inflated(ValueError):
    """Compressed data that decompresses to more than the size declared for it."""


def file_codec(name: str | Path) -> str | None:
    """The codec a file name's last suffix names (``a.jsonl.gz`` -> gzip), None for anything else."""
    return FILE_CODECS.get(os.path.splitext(str(name))[1].lower())


def check_write_name(name: str | Path) -> str | None:
    """The codec to write ``name`` with; ValueError for a compressed or archive suffix this tool cannot write
    (``x.jsonl.br`` would otherwise hold plain JSONL under a name that says Brotli)."""
    suffix = os.path.splitext(str(name))[1].lower()
    if suffix in _FOREIGN:
        raise ValueError(f"cannot write {suffix} files; name the output .jsonl, or compress it with "
                         f"{', '.join(sorted(FILE_CODECS))}")
    return file_codec(name)


def open_read(path: str | Path) -> IO[bytes]:
    """``path`` opened for reading and decompressed by its suffix; every ``read(n)`` returns at most ``n``
    bytes, whatever the compression ratio. A truncated file raises EOFError (zstd: before anything is
    read; gzip, bz2, xz: when the reader reaches the cut)."""
    codec = file_codec(path)
    if codec is None:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    if codec == "gzip":
        import gzip

        return gzip.open(path, "rb")
    if codec == "bz2":
        import bz2

        return bz2.open(path, "rb")
    if codec == "xz":
        import lzma

        return lzma.open(path, "rb")
    import zstandard

    f = open(path, "rb")  # noqa: SIM115 - closed by the stream reader
    try:
        _zstd_frames_complete(f.fileno())
    except BaseException:
        f.close()
        raise
    return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)


def _zstd_frames_complete(fd: int) -> None:
    """Walk the frame and block headers of a zstd file (RFC 8878; no decompression, one small read per block):
    EOFError when the last frame is cut short, ValueError for bytes that are not zstd frames. zstandard's
    bounded stream reader ends silently at a cut, so this is how a truncated file is told from a whole one."""
    size = os.fstat(fd).st_size
    pos = 0
    while pos < size:
        head = os.pread(fd, 14, pos)
        if len(head) < 8:
            raise EOFError("the last zstd frame is incomplete")
        magic = int.from_bytes(head[:4], "little")
        if magic & 0xFFFFFFF0 == 0x184D2A50:  # skippable frame: 4-byte size, then that many bytes
            pos += 8 + int.from_bytes(head[4:8], "little")
            continue
        if magic != 0xFD2FB528:
            raise ValueError(f"not a zstd frame at byte {pos}")
        fhd = head[4]
        single = (fhd >> 5) & 1
        fcs = (1 if single else 0, 2, 4, 8)[fhd >> 6]
        pos += 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + fcs
        while True:
            block = os.pread(fd, 3, pos)
            if len(block) < 3:
                raise EOFError("the last zstd frame is incomplete")
            h = int.from_bytes(block, "little")
            kind = (h >> 1) & 3
            if kind == 3:
                raise ValueError(f"corrupt zstd block at byte {pos}")
            pos += 3 + (1 if kind == 1 else h >> 3)  # RLE: one byte; raw and compressed: the block size
            if h & 1:  # last block of the frame
                break
        pos += 4 if (fhd >> 2) & 1 else 0  # content checksum
    if pos > size:
        raise EOFError("the last zstd frame is incomplete")


def open_write(path: str | Path, codec: str | None) -> IO[bytes]:
    """``path`` opened for writing, compressed with ``codec`` (gzip without a timestamp: the same data gives
    the same bytes)."""
    raw = open(path, "wb")  # noqa: SIM115 - closed by the returned writer
    if codec is None:
        return raw
    if codec == "gzip":
        import gzip

        return _Closing(gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0), raw)
    if codec == "bz2":
        import bz2

        return _Closing(bz2.BZ2File(raw, "wb"), raw)
    if codec == "xz":
        import lzma

        return _Closing(lzma.LZMAFile(raw, "wb"), raw)
    import zstandard

    return zstandard.ZstdCompressor().stream_writer(raw)


class _Closing:
    """A compressing writer that also closes the file under it (GzipFile/BZ2File/LZMAFile given a file
    object leave it open)."""

    def __init__(self, writer: Any, raw: IO[bytes]):
        self._writer, self._raw = writer, raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            self._raw.close()

    def __enter__(self) -> _Closing:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


# ---------------------------------------------------------------- MDS shards


def decompress_shard(compression: str, data: bytes, limit: int) -> bytes:
    """Decompress a shard compressed with MDS ``compression`` (``zstd``, ``gz``, ``bz2``, ``br``, ``snappy``,
    optionally ``:level``), producing at most ``limit + 1`` bytes: :class:`Inflated` when it holds more than
    ``limit`` (the size its index declares), so memory stays at the declared size whatever the data says."""
    codec = compression.split(":")[0]
    if codec == "zstd":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
        out = _read_bounded(reader.read, limit)
    elif codec == "gz":
        import zlib

        out = _members(lambda: zlib.decompressobj(wbits=31), data, limit)
    elif codec == "bz2":
        import bz2

        out = _members(bz2.BZ2Decompressor, data, limit)
    elif codec == "br":
        import brotli

        d = brotli.Decompressor()
        out = d.process(data, output_buffer_limit=limit + 1)
        if len(out) <= limit and not d.is_finished():
            raise EOFError("compressed data ends inside a stream")
    elif codec == "snappy":
        out = _snappy(data, limit)
    else:
        raise ValueError(f"unknown compression {compression!r}")
    if len(out) > limit:
        raise Inflated(f"inflates beyond the {limit:,} bytes its index declares")
    return out


def _read_bounded(read: Any, limit: int) -> bytes:
    parts, n = [], 0
    while n <= limit:
        b = read(limit + 1 - n)
        if not b:
            break
        parts.append(b)
        n += len(b)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _members(new: Any, data: bytes, limit: int) -> bytes:
    """Concatenated gzip members / bz2 streams, at most ``limit + 1`` bytes in all (``max_length``)."""
    parts, n = [], 0
    while data and n <= limit:
        d = new()
        out = d.decompress(data, limit + 1 - n)
        parts.append(out)
        n += len(out)
        if not d.eof:
            if n <= limit:  # input ran out inside a member: truncated
                raise EOFError("compressed data ends inside a stream")
            break
        data = d.unused_data
    return b"".join(parts)


def _snappy(data: bytes, limit: int) -> bytes:
    """Raw snappy: its preamble declares the uncompressed length (a varint), checked before decompressing."""
    size = shift = i = 0
    while i < len(data) and i < 5:
        byte = data[i]
        size |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            break
        shift += 7
    if size > limit:
        raise Inflated(f"inflates to {size:,} bytes (its snappy header says), beyond the {limit:,} bytes its "
                       "index declares")
    import snappy

    return snappy.decompress(data)
