"""Issue 25, the input half: bounded memory on any input (R3), per-line errors are per-line (R2), and the
smaller items (export's compression suffixes, one-line config errors, disk-full messages).

R3: a JSONL line is never held beyond --max-line-mb (read in bounded pieces from plain, .gz, .bz2, .xz and
.zst files), and a shard never inflates beyond the raw size its index declares (``codecs.decompress_shard``,
used by every reader of shards through ``mds.load_shard``). Memory is measured with tracemalloc (every
decompressed piece is a Python bytes object) on bombs far larger than the bound.
R2: whatever a line's content makes Python raise is that line's error, named ``file:line`` and skipped and
counted under --skip-bad-lines; ``id``/``domain`` are strings, or numbers written as their decimal text.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import io
import json
import lzma
import random
import tracemalloc
from pathlib import Path

import pytest
import zstandard
from helpers_faults import mounted_tmpfs
from typer.testing import CliRunner

from ettin_data import codecs, sources
from ettin_data.cli import app
from ettin_data.codecs import Inflated, decompress_shard
from ettin_data.errors import InputError, os_error_message
from ettin_data.mds import UnitReader, find_units
from ettin_data.verify import verify

runner = CliRunner()

COMPRESS = {
    "": lambda d: d,
    ".gz": lambda d: gzip.compress(d, 1),
    ".bz2": lambda d: bz2.compress(d, 1),
    ".xz": lambda d: lzma.compress(d, preset=0),
    ".zst": lambda d: zstandard.ZstdCompressor(level=1).compress(d),
}


def cli(*args: str):
    r = runner.invoke(app, [*args, *([] if args[0] == "export" else ["-w", "1"])])
    assert "Traceback" not in r.output, r.output
    return r


def error_lines(r) -> list[str]:
    return [ln for ln in r.output.splitlines() if ln.startswith("error:")]


def summary(r) -> dict:
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout.strip().splitlines()[-1])


def texts(root: Path, column: str = "text") -> list:
    return [s[column] for u in find_units(root) for s in UnitReader(root / u).iter_samples([column])]


# ---------------------------------------------------------------- R3: lines read in bounded pieces


def _expected(data: bytes, limit: int) -> list:
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [ln if len(ln) <= limit else len(ln) for ln in lines]


@pytest.mark.parametrize("suffix", list(COMPRESS))
def test_lines_split_exactly_and_long_lines_are_read_through(tmp_path, monkeypatch, suffix):
    """Against bytes.split: lines across piece boundaries, empty lines, CRLF, no final newline, lines at and
    just past the limit (reported as their length, the next line keeps its number), for every codec."""
    monkeypatch.setattr(sources, "CHUNK", 7)
    rng = random.Random(suffix)
    for trial in range(12):
        lines = [b"x" * rng.choice([0, 1, 5, 6, 7, 8, 13, 20, 40]) + (b"\r" if rng.random() < 0.2 else b"")
                 for _ in range(rng.randint(1, 30))]
        data = b"\n".join(lines) + (b"\n" if trial % 2 else b"")
        path = tmp_path / f"t{trial}.jsonl{suffix}"
        path.write_bytes(COMPRESS[suffix](data))
        for limit in (6, 7, 13, 1 << 30):
            assert list(sources._lines(str(path), max_line=limit)) == _expected(data, limit), (trial, limit)
        if not suffix:  # byte ranges of an uncompressed file (parts cut at line starts)
            cut = data.find(b"\n", len(data) // 2) + 1 or len(data)
            got = list(sources._lines(str(path), 0, cut, 13)) + list(sources._lines(str(path), cut, len(data), 13))
            assert got == _expected(data, 13)


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zst"])
def test_a_compressed_line_bomb_is_never_held(tmp_path, suffix):
    """One 24 MiB line (a few KB compressed) between two good lines, a 1 MiB limit: the reader's peak Python
    allocation stays a few MiB, the good lines come through with their numbers."""
    data = b'{"text": "first"}\n{"text": "' + b"x" * (24 << 20) + b'"}\n{"text": "third"}\n'
    path = tmp_path / f"bomb.jsonl{suffix}"
    path.write_bytes(COMPRESS[suffix](data))
    src = sources.Source("bomb", "jsonl", str(path), "bomb.jsonl")
    tracemalloc.start()
    try:
        got = list(sources.read_records(src, max_line=1 << 20))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB"
    assert [w for w, _ in got] == ["bomb.jsonl:1", "bomb.jsonl:2", "bomb.jsonl:3"]
    assert got[0][1] == {"text": "first"} and got[2][1] == {"text": "third"}
    assert isinstance(got[1][1], sources.LineTooLong)
    assert f"bomb.jsonl:2: a line of {(24 << 20) + 12:,} bytes" in str(got[1][1])


def test_too_long_lines_are_one_line_errors_or_skipped_and_counted(tmp_path):
    path = tmp_path / "a.jsonl.zst"
    recs = [{"text": "short one"}, {"text": "y" * (1 << 20)}, {"text": "short two"}]
    path.write_bytes(COMPRESS[".zst"]("".join(json.dumps(r) + "\n" for r in recs).encode()))
    r = cli("convert", str(path), "-o", str(tmp_path / "o"), "--max-line-mb", "1", "-q")
    assert r.exit_code == 1 and len(error_lines(r)) == 2  # the unit's error and the run's
    assert f"{path.as_posix()}:2: a line of 1,048,588 bytes, longer than --max-line-mb 1" in r.output
    s = summary(cli("convert", str(path), "-o", str(tmp_path / "o2"), "--max-line-mb", "1", "--skip-bad-lines",
                    "--json"))
    assert s["documents"] == 2 and s["skipped"] == {"too_long": 1} and s["documents_in"] == 3
    ids = texts(tmp_path / "o2", "id")
    assert ids == [f"{path.as_posix()}:1", f"{path.as_posix()}:3"]  # numbering continues past the long line
    assert summary(cli("convert", str(path), "-o", str(tmp_path / "o3"), "--json"))["documents"] == 3  # 64 MiB
    only = tmp_path / "only.jsonl"
    only.write_text(json.dumps(recs[1]) + "\n")
    s = summary(cli("convert", str(only), "-o", str(tmp_path / "o4"), "--max-line-mb", "1", "--skip-bad-lines",
                    "--json"))
    assert s["warnings"] == [f"{only}: no documents (1 records read, all skipped)"]


def test_parquet_documents_longer_than_the_limit(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["ok", "z" * ((1 << 20) + 1), "fine"]}), path)
    r = cli("convert", str(path), "-o", str(tmp_path / "o"), "--max-line-mb", "1", "-q")
    assert r.exit_code == 1 and f"{path.as_posix()}:2: a text of 1,048,577 characters" in r.output
    s = summary(cli("convert", str(path), "-o", str(tmp_path / "o2"), "--max-line-mb", "1", "--skip-bad-lines",
                    "--json"))
    assert s["skipped"] == {"too_long": 1} and texts(tmp_path / "o2") == ["ok", "fine"]


def test_truncated_zstd_is_found_before_reading_and_whole_frames_are_read(tmp_path):
    data = b"".join(json.dumps({"text": f"doc {i}"}).encode() + b"\n" for i in range(20000))
    one = zstandard.ZstdCompressor().compress(data)
    skippable = (0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    (tmp_path / "multi.jsonl.zst").write_bytes(one + skippable + one)  # frames and a skippable frame
    assert len(list(sources._lines(str(tmp_path / "multi.jsonl.zst")))) == 40000
    for cut in (5, len(one) // 2, len(one) - 1):
        (tmp_path / "cut.jsonl.zst").write_bytes(one[:cut])
        with pytest.raises(EOFError, match="incomplete"):
            codecs.open_read(tmp_path / "cut.jsonl.zst")
    (tmp_path / "junk.jsonl.zst").write_bytes(one + b"junk and more junk")
    with pytest.raises(ValueError, match="not a zstd frame"):
        codecs.open_read(tmp_path / "junk.jsonl.zst")


# ---------------------------------------------------------------- R3: shards inflate no further than declared


def _shard_codecs():
    import brotli
    import snappy

    return {
        "zstd": lambda d: zstandard.ZstdCompressor(level=1).compress(d),
        "zstd:7": lambda d: _zstd_unsized(d),
        "gz": lambda d: gzip.compress(d, 1),
        "bz2": lambda d: bz2.compress(d, 1),
        "br": lambda d: brotli.compress(d, quality=1),
        "snappy": lambda d: snappy.compress(d),
    }


def _zstd_unsized(data: bytes) -> bytes:
    """A zstd frame without a content size (as a stream writer makes it)."""
    buf = io.BytesIO()
    w = zstandard.ZstdCompressor(level=1).stream_writer(buf, closefd=False)
    w.write(data)
    w.flush(zstandard.FLUSH_FRAME)
    return buf.getvalue()


@pytest.mark.parametrize("codec", ["zstd", "zstd:7", "gz", "bz2", "br", "snappy"])
def test_decompress_shard_stops_at_the_declared_size(codec):
    compress = _shard_codecs()[codec]
    data = bytes(random.Random(1).randbytes(3000)) * 20
    packed = compress(data)
    assert decompress_shard(codec, packed, len(data)) == data
    with pytest.raises(Inflated, match=f"beyond the {len(data) - 1:,} bytes its index declares"):
        decompress_shard(codec, packed, len(data) - 1)
    bomb = compress(b"\0" * (32 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(Inflated):
            decompress_shard(codec, bomb, 1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 << 20, f"{codec}: peak {peak / 2**20:.1f} MiB for a 1 MiB declared shard"
    try:  # cut short: an error, or fewer bytes than declared (which load_shard's size check refuses)
        short = decompress_shard(codec, packed[: len(packed) // 2], len(data))
    except Inflated:
        raise
    except Exception:
        short = None
    assert short is None or len(short) < len(data)


@pytest.fixture()
def bombed(tmp_path):
    """A text dataset whose first shard is swapped for an 8 KB zstd bomb (256 MiB inflated) with a correct
    compressed size and sha1 in the index: only the declared raw size tells it apart."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": str(i), "text": "word " * 500}) + "\n" for i in range(100)))
    assert cli("convert", str(src), "-o", str(tmp_path / "text"), "--docs-per-shard", "50", "-q").exit_code == 0
    unit = tmp_path / "text" / "in" / "split_00000"
    idx = json.loads((unit / "index.json").read_text())
    shard = idx["shards"][0]
    buf = io.BytesIO()
    w = zstandard.ZstdCompressor(level=1).stream_writer(buf, closefd=False)
    for _ in range(64):
        w.write(b"\0" * (1 << 22))
    w.flush(zstandard.FLUSH_FRAME)
    data = buf.getvalue()
    (unit / shard["zip_data"]["basename"]).write_bytes(data)
    shard["zip_data"]["bytes"] = len(data)
    shard["zip_data"]["hashes"] = {"sha1": hashlib.sha1(data).hexdigest()}
    (unit / "index.json").write_text(json.dumps(idx))
    return tmp_path / "text", unit, shard


def test_a_shard_bomb_is_one_line_naming_the_shard_with_flat_memory(bombed):
    root, unit, shard = bombed
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=f"{shard['zip_data']['basename']} is corrupt: it inflates beyond the "
                                             f"{shard['raw_data']['bytes']:,} bytes its index declares"):
            list(UnitReader(unit).iter_samples())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB"
    problems = verify(unit)  # stats --verify, finalize and export read shards the same way
    assert any("inflates beyond" in p for p in problems), problems


def test_shard_sizes_are_checked_before_reading(bombed):
    root, unit, shard = bombed
    idx = json.loads((unit / "index.json").read_text())
    idx["shards"][0]["raw_data"]["bytes"] = 1 << 32
    (unit / "index.json").write_text(json.dumps(idx))
    with pytest.raises(InputError, match="more than an MDS shard can hold"):
        list(UnitReader(unit).iter_samples())
    other = root / "in" / "split_00001"  # a raw .mds beside its index, grown after the index was written
    raw = json.loads((other / "index.json").read_text())["shards"][0]["raw_data"]
    (other / raw["basename"]).write_bytes(b"\0" * (raw["bytes"] + 10))
    with pytest.raises(InputError, match=f"{raw['bytes'] + 10} bytes, index says {raw['bytes']}"):
        list(UnitReader(other).iter_samples())


# ---------------------------------------------------------------- R2: per-line errors are per-line


GOOD = '{"id": "g1", "text": "good one"}'
LAST = '{"id": "g3", "text": "good three"}'
HOSTILE = {
    "deep nesting": ('{"id": "a", "text": "x", "m": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    "deep text value": ('{"id": "a", "text": ' + "[" * 50_000 + "]" * 50_000 + "}", "nested too deeply"),
    "5000-digit id": ('{"id": ' + "9" * 5000 + ', "text": "x"}', "cannot read (Exceeds the limit (4300 digits)"),
    "surrogate id": ('{"id": "\\ud800", "text": "x"}', "field 'id' holds a lone surrogate"),
    "surrogate domain": ('{"id": "b", "text": "x", "src": "x\\udfffy"}', "field 'src' holds a lone surrogate"),
    "list id": ('{"id": [1], "text": "x"}', "field 'id' is a list; it must be a string or a number"),
    "object domain": ('{"id": "b", "text": "x", "src": {"a": 1}}', "field 'src' is a dict"),
    "bool id": ('{"id": true, "text": "x"}', "field 'id' is a bool"),
    "infinite id": ('{"id": 1e999, "text": "x"}', "field 'id' is a non-finite number"),
    "text object": ('{"id": "b", "text": {"t": "x"}}', "field 'text' is a dict, not a string"),
    "no text": ('{"id": "b", "body": "x"}', "no field 'text' (fields: id, body)"),
    "not an object": ("[1, 2]", "expected a JSON object, got list"),
    "bad utf-8": (b'{"id": "b", "text": "\xff"}', "malformed JSON"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_what_a_line_makes_python_raise_is_that_lines_error(tmp_path, case):
    line, words = HOSTILE[case]
    line = line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass")
    src = tmp_path / "in.jsonl"
    src.write_bytes(GOOD.encode() + b"\n" + line + b"\n" + LAST.encode() + b"\n")
    r = cli("convert", str(src), "-o", str(tmp_path / "o"), "--domain-field", "src", "-q")
    assert r.exit_code == 1, r.output
    errors = error_lines(r)
    assert f"{src.as_posix()}:2: " in errors[0] and words in errors[0] and "--skip-bad-lines" in errors[0], errors
    assert len(errors) == 2 and all(len(e) < 600 for e in errors)
    s = summary(cli("convert", str(src), "-o", str(tmp_path / "o2"), "--domain-field", "src", "--skip-bad-lines",
                    "--json"))
    reason = "no_text_field" if case == "no text" else "bad_line"
    assert s["documents"] == 2 and s["skipped"] == {reason: 1} and s["documents_in"] == 3
    assert texts(tmp_path / "o2", "id") == ["g1", "g3"]


def test_ids_and_domains_are_strings_or_numbers_as_documented(tmp_path):
    recs = [{"id": 7, "text": "a", "src": 3}, {"id": 7.5, "text": "b", "src": None}, {"id": "x\U0001f600",
            "text": "c", "src": "web"}, {"id": "", "text": "d"}, {"id": -2**62, "text": "e", "src": 1.25}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = summary(cli("convert", str(src), "-o", str(tmp_path / "o"), "--domain-field", "src", "--json"))
    assert s["documents"] == 5
    assert texts(tmp_path / "o", "id") == ["7", "7.5", "x\U0001f600", f"{src.as_posix()}:4", str(-2**62)]
    assert texts(tmp_path / "o", "domain") == ["3", "", "web", "", "1.25"]


def test_parquet_values_that_cannot_be_stored_are_per_row(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": [[1], [2, 3], None], "text": ["one", "two", "three"]}), path)
    r = cli("convert", str(path), "-o", str(tmp_path / "o"), "-q")
    assert r.exit_code == 1 and f"{path.as_posix()}:1: field 'id' is a list" in r.output
    s = summary(cli("convert", str(path), "-o", str(tmp_path / "o2"), "--skip-bad-lines", "--json"))
    assert s["skipped"] == {"bad_line": 2} and texts(tmp_path / "o2") == ["three"]


def test_a_wrong_text_field_is_still_an_error_when_skipping(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"body": "a"}\n{"body": "b"}\n')
    r = cli("convert", str(src), "-o", str(tmp_path / "o"), "--skip-bad-lines", "-q")
    assert r.exit_code == 1 and "no field 'text' (fields: body)" in r.output and "--text-field" in r.output


# ---------------------------------------------------------------- the smaller items


@pytest.fixture(scope="module")
def small_text(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    (d / "in.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": f"text {i} ü"}) + "\n" for i in range(30)))
    assert cli("convert", str(d / "in.jsonl"), "-o", str(d / "text"), "-q").exit_code == 0
    return d / "text"


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zst"])
def test_export_writes_what_its_name_says_and_convert_reads_it_back(tmp_path, small_text, suffix):
    plain = tmp_path / "plain.jsonl"
    assert cli("export", str(small_text), "-o", str(plain), "-q").exit_code == 0
    out = tmp_path / f"x.jsonl{suffix}"
    assert cli("export", str(small_text), "-o", str(out), "-q").exit_code == 0
    with codecs.open_read(out) as f:
        assert f.read() == plain.read_bytes()
    s = summary(cli("convert", str(out), "-o", str(tmp_path / "back"), "--json"))
    assert s["documents"] == 30 and texts(tmp_path / "back") == texts(small_text)


@pytest.mark.parametrize("name", ["x.jsonl.br", "x.jsonl.lz4", "x.zip", "x.tar"])
def test_export_refuses_a_compression_it_cannot_write(tmp_path, small_text, name):
    r = cli("export", str(small_text), "-o", str(tmp_path / name), "-q")
    assert r.exit_code == 2 and len(error_lines(r)) == 1 and "cannot write" in r.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("content,suffix,words", [
    ("convert:\n  docs_per_shard: 5\n   bad: [1\n", ".yaml", "line 3, column 7: mapping values are not allowed"),
    ("convert: {a: 1\n", ".yml", "line 2, column 1: expected ',' or '}'"),
    ("[convert]\ndocs_per_shard = \n", ".toml", "Invalid value (at line 2"),
])
def test_config_file_errors_are_one_line(tmp_path, content, suffix, words):
    cfg = tmp_path / f"c{suffix}"
    cfg.write_text(content)
    r = cli("convert", "x.jsonl", "-o", str(tmp_path / "o"), "--config", str(cfg))
    assert r.exit_code == 2 and r.output.count("\n") == 1 and words in r.output, r.output
    r = cli("convert", "x.jsonl", "-o", str(tmp_path / "o"), "--config", str(tmp_path))
    assert r.exit_code == 2 and f"config file {tmp_path} is a folder" in r.output


def test_disk_full_names_the_file_being_written_not_the_one_copied(tmp_path):
    e = OSError(errno.ENOSPC, "No space left on device", "/in/tokenizer.json", None, "/out/tokenizer.json")
    msg = os_error_message(e, "/out")
    assert "while writing /out/tokenizer.json" in msg and "/in/" not in msg
    big = tmp_path / "src.bin"
    big.write_bytes(b"\1" * (3 << 20))
    from ettin_data.zerocopy import link_or_copy

    with mounted_tmpfs(tmp_path / "mnt", size="1m") as mnt:  # another file system: a copy, which fills it
        with pytest.raises(OSError) as err:
            link_or_copy(big, mnt / "out" / "dst.bin")
        msg = os_error_message(err.value, str(mnt / "out"))
    assert msg.startswith(f"no space left on the device of {mnt / 'out'}")
    assert f"while writing {mnt / 'out' / 'dst.bin'}" in msg and str(big) not in msg
