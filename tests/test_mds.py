"""The native MDS layer is byte-compatible with mosaicml-streaming and reads back what it wrote."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ettin_data.errors import InputError
from ettin_data.mds import (
    TOKEN_COLUMNS,
    ShardWriter,
    UnitReader,
    decode_value,
    encode_value,
    find_units,
    write_root_index,
)


def _samples(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ids = rng.integers(0, 50_000, int(rng.integers(1, 3000))).astype(np.uint32)
        out.append({"id": f"doc-{i}", "input_ids": ids, "len": len(ids)})
    return out


def test_native_writer_is_byte_identical_to_streaming(tmp_path):
    from streaming import MDSWriter

    samples = _samples(300)
    with ShardWriter(tmp_path / "ours", TOKEN_COLUMNS, size_limit=1 << 20) as w:
        for s in samples:
            w.write(s)
    with MDSWriter(out=str(tmp_path / "ref"), columns=TOKEN_COLUMNS, compression="zstd", size_limit=1 << 20,
                   hashes=["sha1"]) as w:
        for s in samples:
            w.write(s)
    ours = json.loads((tmp_path / "ours" / "index.json").read_text())
    ref = json.loads((tmp_path / "ref" / "index.json").read_text())
    assert len(ours["shards"]) > 1
    assert ours == ref  # same shard boundaries, sizes and sha1 of raw and compressed bytes
    for s in ref["shards"]:
        name = s["zip_data"]["basename"]
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


def test_streaming_reads_nested_root_index(tmp_path):
    from streaming import StreamingDataset

    samples = _samples(120, seed=1)
    units = ["a/split_00000", "a/split_00001", "b/deeper/split_00000"]
    for k, u in enumerate(units):
        with ShardWriter(tmp_path / u, TOKEN_COLUMNS, size_limit=1 << 18) as w:
            for s in samples[k * 40:(k + 1) * 40]:
                w.write(s)
    assert find_units(tmp_path) == units
    write_root_index(tmp_path, units)
    assert find_units(tmp_path) == units  # the root index is not a unit
    ds = StreamingDataset(local=str(tmp_path), batch_size=1)
    assert len(ds) == 120
    for i in (0, 39, 40, 119):
        assert ds[i]["id"] == samples[i]["id"]
        assert np.array_equal(ds[i]["input_ids"], samples[i]["input_ids"])
    got = list(UnitReader(tmp_path).iter_samples())  # our reader reads the root index too
    assert [g["id"] for g in got] == [s["id"] for s in samples]


@pytest.mark.parametrize(
    ("encoding", "value"),
    [("str", "héllo\x00 wörld"), ("int", -5), ("uint16", 7), ("json", {"a": [1, 2]}), ("bytes", b"\x00\x01"),
     ("ndarray:uint16", np.arange(5, dtype=np.uint16)), ("ndarray", np.ones((2, 3), np.int64)),
     ("ndarray:int32:4", np.arange(4, dtype=np.int32))],
)
def test_encodings_match_streaming(encoding, value):
    from streaming.base.format.mds.encodings import mds_decode, mds_encode

    ours = encode_value(encoding, value)
    assert ours == mds_encode(encoding, value)
    back = decode_value(encoding, ours)
    ref = mds_decode(encoding, ours)
    if isinstance(value, np.ndarray):
        assert np.array_equal(back, ref) and back.dtype == ref.dtype
    else:
        assert back == ref


def test_corrupt_index_and_shards_name_the_file(tmp_path):
    with ShardWriter(tmp_path / "u", TOKEN_COLUMNS) as w:
        for s in _samples(10):
            w.write(s)
    shard = tmp_path / "u" / "shard.00000.mds.zstd"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="shard.00000.mds.zstd"):
        list(UnitReader(tmp_path / "u").iter_samples())
    shard.unlink()
    with pytest.raises(InputError, match="missing"):
        list(UnitReader(tmp_path / "u").iter_samples())
    (tmp_path / "u" / "index.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        UnitReader(tmp_path / "u")


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_fast_columns_equal_the_full_decoder(tmp_path, dtype):
    """Shard.columns (the fast path chunk reads with) gives what samples() decodes, column by column."""
    columns = {"id": "str", "input_ids": f"ndarray:{dtype}", "len": "int", "domain": "str"}
    rng = np.random.default_rng(3)
    written = []
    with ShardWriter(tmp_path / "u", columns, size_limit=1 << 16) as w:
        for i in range(400):
            ids = rng.integers(0, 60_000, int(rng.integers(1, 700))).astype(dtype)
            s = {"id": f"d{i}-é", "input_ids": ids, "len": len(ids), "domain": ["web", "code", ""][i % 3]}
            w.write(s)
            written.append(s)
    got, full = [], []
    for shard in UnitReader(tmp_path / "u").shards():
        got += shard.columns(("domain", "input_ids", "id", "len", "absent"))
        full += shard.samples()
    assert len(got) == len(full) == 400
    for (domain, ids, doc_id, n, absent), s, w in zip(got, full, written, strict=True):
        assert (doc_id, domain, n, absent) == (s["id"], s["domain"], s["len"], None) == (w["id"], w["domain"], len(ids),
                                                                                      None)
        assert ids.dtype == np.dtype(dtype) and np.array_equal(ids, w["input_ids"])


def test_indented_json_is_the_text_of_json_dumps() -> None:
    """write_json_atomic's fast encoder (mds.indented_json) writes json.dumps(sort_keys=True, indent=1)'s text."""
    import random

    from ettin_data.jsonio import indented_json
    from ettin_data.stats import Stats

    st = Stats()
    st.add("documents", 3)
    st.add_lengths([5, 5, 1024, 7])
    cases = [{}, [], {"a": []}, {"b": {}, "a": [1, -2, 3]}, [{"x": None, "y": True, "z": False}],
             {'é\n"\\': "ü😀\x00\ud800"}, 5, "s", None, st.to_json(), [[], [[]], {}], {"k": [1, [2, {"q": [3]}]]},
             {"big": 10**30, "neg": -5}, {str(b): list(range(b, b + 40)) for b in range(5)}]
    rng = random.Random(0)

    def value(depth: int):
        r = rng.random()
        if depth > 3 or r < 0.3:
            return rng.choice([rng.randint(-10**12, 10**12), "".join(chr(rng.randint(1, 0x2FFFF)) for _ in range(3)),
                               None, True, False])
        if r < 0.6:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {"".join(chr(rng.randint(32, 0x3000)) for _ in range(rng.randint(0, 4))): value(depth + 1)
                for _ in range(rng.randint(0, 4))}

    cases += [value(0) for _ in range(2000)]
    for c in cases:
        assert indented_json(c) == json.dumps(c, sort_keys=True, indent=1)
    for other in (1.5, {"a": 1.0}, {1: 2}, (1, 2), {"a": (1,)}, [True, 1.0], {"a": np.int64(1)}):
        assert indented_json(other) is None  # left to json (its text, or its error)


def _files(root) -> dict:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.lists(st.integers(1, 60), min_size=1, max_size=12), min_size=1, max_size=5),
       limit_in=st.integers(150, 700), limit_out=st.integers(150, 700), comp_in=st.sampled_from([None, "zstd"]),
       comp_out=st.sampled_from([None, "zstd"]), same_limit=st.booleans())
def test_write_shard_equals_writing_every_sample(tmp_path_factory, sizes, limit_in, limit_out, comp_in, comp_out,
                                                  same_limit):
    """write_shard (whole shards behind a new header where the boundaries allow) == write_raw per sample: files
    and index byte for byte, across compressions (the config's length changes), size limits and units."""
    from ettin_data.mds import UnitReader

    base = tmp_path_factory.mktemp("ws")
    cols = {"id": "str", "input_ids": "ndarray:uint32", "len": "int"}
    limit_out = limit_in if same_limit else limit_out
    units = []
    for u, unit in enumerate(sizes):
        with ShardWriter(base / f"in{u}", cols, comp_in, size_limit=limit_in) as w:
            for i, n in enumerate(unit):
                w.write({"id": f"d{u}-{i}", "input_ids": np.arange(n, dtype=np.uint32) + i, "len": n})
        units.append(UnitReader(base / f"in{u}"))
    with ShardWriter(base / "fast", cols, comp_out, size_limit=limit_out) as fast, \
            ShardWriter(base / "ref", cols, comp_out, size_limit=limit_out) as ref:
        for reader in units:
            for shard in reader.shards():
                fast.write_shard(shard)
                for sample in shard.raw_samples():
                    ref.write_raw(sample)
    assert _files(base / "fast") == _files(base / "ref")


def test_spans_and_array_spans_match_decoding(tmp_path):
    from ettin_data.mds import UnitReader

    cols = {"domain": "str", "id": "str", "input_ids": "ndarray:uint16", "len": "int", "w": "ndarray:int64:2"}
    rng = np.random.default_rng(3)
    rows = [{"domain": "x" * int(rng.integers(0, 5)), "id": f"doc{i}", "len": i,
             "input_ids": rng.integers(0, 60000, int(rng.integers(1, 400))).astype(np.uint16),
             "w": np.array([i, -i], np.int64)} for i in range(200)]
    with ShardWriter(tmp_path, cols, size_limit=1 << 14) as w:
        for r in rows:
            w.write(r)
    k = 0
    for shard in UnitReader(tmp_path).shards():
        start, count, dtype = shard.array_spans("input_ids")
        pos, size = shard.spans("id")
        lpos, _ = shard.spans("len")
        wpos, wcount, wdtype = shard.array_spans("w")
        for j in range(len(start)):
            r = rows[k + j]
            got = np.frombuffer(shard.data, dtype, int(count[j]), int(start[j]))
            assert np.array_equal(got, r["input_ids"])
            assert shard.data[pos[j]:pos[j] + size[j]].decode() == r["id"]
            assert int(np.frombuffer(shard.data, np.int64, 1, int(lpos[j]))[0]) == r["len"]
            assert np.array_equal(np.frombuffer(shard.data, wdtype, int(wcount[j]), int(wpos[j])), r["w"])
        k += len(start)
    assert k == len(rows)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.dictionaries(st.sampled_from(["a", "b", "skipped.x"]), st.integers(0, 5)),
                          st.lists(st.integers(0, 40), max_size=30)), max_size=12))
def test_stats_total_is_the_sum(parts) -> None:
    """Stats.total (one pass, what a run's finish uses) equals sum(..., Stats()) (``+``): the same counters, zero
    counts dropped, the same length histogram."""
    from ettin_data.stats import Stats

    stats = []
    for counts, lengths in parts:
        s = Stats()
        for k, n in counts.items():
            s.add(k, n)
        s.add_lengths(lengths)
        stats.append(s)
    total, summed = Stats.total(stats), sum(stats, Stats())
    assert total.counts == summed.counts and dict(total.counts) == dict(summed.counts)
    assert dict(total.lengths) == dict(summed.lengths) and total.to_json() == summed.to_json()
