"""The token-row fast path (``token_rows.py``) writes the bytes ``ShardWriter.write`` writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ettin_data.mds import ShardWriter
from ettin_data.stages import tokenize as stage
from ettin_data.token_rows import token_samples


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("dtype", ["uint32", "uint16"])
@pytest.mark.parametrize("with_domain", [False, True])
def test_token_rows_are_the_bytes_shardwriter_writes(tmp_path: Path, dtype: str, with_domain: bool) -> None:
    lengths = np.array([0, 1, 5, 300, 70_000, 2], np.int64)
    ids = np.random.default_rng(0).integers(0, 50_000, int(lengths.sum())).astype(dtype)
    keep, doc_ids, domains = lengths > 0, [f"d{i}é" for i in range(6)], ["x", "yy", "", "é", "z", "w"]
    cols = stage.token_columns(dtype, with_domain)
    a, b = ShardWriter(tmp_path / "a", cols), ShardWriter(tmp_path / "b", cols)
    ends = np.cumsum(lengths)
    for i in np.flatnonzero(keep):
        a.write({"id": doc_ids[i], "input_ids": ids[ends[i] - lengths[i]:ends[i]], "len": int(lengths[i]),
                 **({"domain": domains[i]} if with_domain else {})})
    for data, _ in token_samples(doc_ids, ids, lengths, keep, domains if with_domain else None):
        b.write_raw(data)
    a.finish()
    b.finish()
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


@pytest.mark.parametrize("dtype", ["uint32", "uint16"])
@pytest.mark.parametrize("with_domain", [False, True])
def test_token_row_is_the_bytes_shardwriter_writes(tmp_path: Path, dtype: str, with_domain: bool) -> None:
    """chunk's rows (token_rows.token_row): ids of either dtype, lengths across the shape-code bounds."""
    from ettin_data.token_rows import fast_columns, token_row

    cols = stage.token_columns(dtype, with_domain)
    want = fast_columns(cols)
    assert want == np.dtype(dtype)
    assert fast_columns({**cols, "extra": "str"}) is None and fast_columns({**cols, "input_ids": "ndarray"}) is None
    rng = np.random.default_rng(1)
    a, b = ShardWriter(tmp_path / "a", cols), ShardWriter(tmp_path / "b", cols)
    for i, n in enumerate([1, 2, 255, 256, 65_535, 65_536, 1024]):
        ids = rng.integers(0, 50_000, n).astype("uint32" if i % 2 else "uint16")
        doc, dom = f"doc-{i}é", "ü" * i
        a.write({"id": doc, "input_ids": ids, "len": n, **({"domain": dom} if with_domain else {})})
        b.write_raw(token_row(doc.encode(), ids, want, dom.encode() if with_domain else None))
    a.finish()
    b.finish()
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    with pytest.raises(ValueError, match="empty array"):
        token_row(b"x", np.zeros(0, dtype), want)


