"""Writing MDS v2 shards natively (numpy + zstandard; byte-identical to streaming's ``MDSWriter``, tested):
``u32 count | u32 offsets[count+1] | config JSON | samples``, each sample the u32 sizes of its variable-size
columns then the column bytes, columns sorted by name; ``index.json`` last."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from ..errors import InputError
from ..jsonio import write_json_atomic
from ..safefile import new_file
from .encoding import MAX_SHARD_BYTES, column_size, encode_value
from .index import INDEX, ShardEntry
from .reader import Shard

__all__ = ["ShardWriter", "SIZE_LIMIT", "HASH_ALGO"]

SIZE_LIMIT = 1 << 26
HASH_ALGO = "sha1"


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
        self.sizes = [column_size(e) for e in self.encodings]
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
        n = shard.entry.samples
        off = shard.offsets
        total = int(off[-1] - off[0]) + 4 * n
        if (self._samples or not n or (n > 1 and total > self._budget)
                or shard.config_bytes() != self._config_for(shard.entry.compression)):
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
            n = shard.entry.samples
            off = shard.offsets
            shift = 4 + 4 * (n + 1) + len(self._config_data) - int(off[0])
            parts = [np.uint32(n).tobytes() + (off + shift).astype(np.uint32).tobytes() + self._config_data,
                     memoryview(shard.data)[int(off[0]):]]
        elif self._samples:
            n = len(self._samples)
            offsets = np.zeros(n + 1, np.int64)
            np.cumsum([len(s) for s in self._samples], out=offsets[1:])
            offsets += 4 + 4 * (n + 1) + len(self._config_data)
            if offsets[-1] >= MAX_SHARD_BYTES:  # u32 offsets would wrap: one sample of 4 GiB or more
                raise InputError(f"{self.dirname}: a sample of {max(len(x) for x in self._samples):,} bytes does "
                                 "not fit an MDS shard (u32 offsets: < 4 GiB)")
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
            self._on_shard(shard or Shard(self.dirname / basename, ShardEntry.of(self.shards[-1]), parts[0]))

    def finish(self) -> dict[str, Any]:
        """Flush the last shard and write ``index.json``; returns the index."""
        self._flush()
        index = {"shards": self.shards, "version": 2}
        write_json_atomic(self.dirname / INDEX, index, indent=None)
        return index

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, *_: Any) -> None:
        if exc_type is None:
            self.finish()


def _write_file(path: Path, parts: list[bytes | memoryview]) -> None:
    with new_file(path) as f:  # a new file in a fresh unit folder: never an existing file or a link
        for part in parts:
            f.write(part)
