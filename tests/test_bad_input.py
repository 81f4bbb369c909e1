"""The bad-input catalogue, each case through the CLI: either one clear error line and exit code 1
(never a traceback), or the input is handled and counted in the summary (never a silent drop)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers_faults import write_jsonl
from typer.testing import CliRunner

from ettin_data.cli import app
from ettin_data.mds import UnitReader, find_units

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [*args, "-w", "1", "-q"])


def ok_json(*args: str) -> dict:
    """Run with --json; the run must succeed without a traceback and print its summary."""
    r = runner.invoke(app, [*args, "-w", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    return json.loads(r.stdout.strip().splitlines()[-1])


def fails(*args: str, code: int = 1) -> str:
    r = invoke(*args)
    out = r.output
    assert r.exit_code == code, out
    assert "Traceback" not in out, out
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert errors, out
    return "\n".join(errors)


def read_all(root: Path, columns=None) -> list[dict]:
    return [s for u in find_units(root) for s in UnitReader(root / u).iter_samples(columns)]


def accounting_closes(summary: dict) -> None:
    assert summary["documents_in"] == summary["documents"] + sum(summary["skipped"].values())


# ---------------------------------------------------------------- convert: errors with file:line


def test_malformed_json_line_names_file_and_line(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [{"text": "one"}, '{"text": "tw', {"text": "three"}])
    err = fails("convert", str(src), "-o", str(tmp_path / "o"))
    assert f"{src.as_posix()}:2: malformed JSON" in err and "--skip-bad-lines" in err
    assert not (tmp_path / "o" / "index.json").exists()
    s = ok_json("convert", str(src), "-o", str(tmp_path / "o2"), "--skip-bad-lines")
    assert s["documents"] == 2 and s["skipped"] == {"bad_line": 1}
    accounting_closes(s)
    assert [d["text"] for d in read_all(tmp_path / "o2")] == ["one", "three"]


def test_invalid_utf8_line_is_a_bad_line(tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe"}\n')
    err = fails("convert", str(src), "-o", str(tmp_path / "o"))
    assert f"{src.as_posix()}:2: malformed JSON" in err


@pytest.mark.parametrize("value,kind", [(5, "int"), (["a"], "list"), ({"a": 1}, "dict"), (True, "bool")])
def test_text_not_a_string(tmp_path, value, kind):
    src = write_jsonl(tmp_path / "a.jsonl", [{"text": "fine"}, {"text": value}])
    err = fails("convert", str(src), "-o", str(tmp_path / "o"))
    assert f"{src.as_posix()}:2: field 'text' is a {kind}, not a string" in err


def test_text_null_is_skipped_and_counted(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [{"text": "fine"}, {"text": None}, {"text": "also"}])
    s = ok_json("convert", str(src), "-o", str(tmp_path / "o"))
    assert s["documents"] == 2 and s["skipped"] == {"null_text": 1}
    accounting_closes(s)


def test_missing_text_field_names_the_fields_seen(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [{"text": "fine"}, {"body": "x", "meta": {}}])
    err = fails("convert", str(src), "-o", str(tmp_path / "o"))
    assert f"{src.as_posix()}:2: no field 'text' (fields: body, meta)" in err and "--text-field" in err


def test_not_an_object(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [{"text": "fine"}, "[1, 2]"])
    err = fails("convert", str(src), "-o", str(tmp_path / "o"))
    assert f"{src.as_posix()}:2: expected a JSON object, got list" in err


@pytest.mark.parametrize("compress,name", [("gzip", "a.jsonl.gz"), ("zstd", "a.jsonl.zst")])
def test_truncated_compressed_file(tmp_path, compress, name):
    recs = [{"text": f"document number {i} " * 20} for i in range(3000)]
    src = write_jsonl(tmp_path / name, recs, compress)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    err = fails("convert", str(src), "-o", str(tmp_path / "o"))
    assert f"{src.as_posix()}: truncated or corrupt compressed file" in err
    assert not (tmp_path / "o" / "index.json").exists()


def test_one_bad_source_fails_only_its_unit(tmp_path):
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "good.jsonl", [{"text": f"doc {i}"} for i in range(5)])
    write_jsonl(tmp_path / "in" / "bad.jsonl", [{"text": "x"}, "{oops"])
    err = fails("convert", str(tmp_path / "in"), "-o", str(tmp_path / "o"))
    assert "1 of 2 units failed" in err and "unit bad:" in err and "bad.jsonl:2: malformed JSON" in err
    assert (tmp_path / "o" / "good" / ".done").is_file()
    assert [d["text"] for d in read_all(tmp_path / "o" / "good")] == [f"doc {i}" for i in range(5)]
    assert not (tmp_path / "o" / "index.json").exists()


# ---------------------------------------------------------------- convert: handled and counted


def test_lone_surrogates_replaced_and_counted_nul_kept(tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text('{"text": "a\\ud800b"}\n{"text": "x\\u0000y\\u0000"}\n{"text": "\\udfff"}\n')
    s = ok_json("convert", str(src), "-o", str(tmp_path / "o"))
    assert s["documents"] == 3 and s["lone_surrogates_fixed"] == 2
    accounting_closes(s)
    assert [d["text"] for d in read_all(tmp_path / "o")] == ["a\ufffdb", "x\x00y\x00", "\ufffd"]


def test_empty_and_whitespace_documents_skipped_and_counted(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [{"text": ""}, {"text": " \n\t "}, {"text": "\u3000"}, {"text": "x"}])
    s = ok_json("convert", str(src), "-o", str(tmp_path / "o"))
    assert s["documents"] == 1 and s["skipped"] == {"empty": 3}
    accounting_closes(s)


def test_duplicate_and_integer_ids(tmp_path):
    recs = [{"id": "a", "text": "one"}, {"id": "a", "text": "two"}, {"id": 7, "text": "three"},
            {"id": 7.5, "text": "four"}, {"text": "five"}]
    src = write_jsonl(tmp_path / "a.jsonl", recs)
    s = ok_json("convert", str(src), "-o", str(tmp_path / "o"))
    assert s["documents"] == 5 and s["duplicate_ids"] == 1
    got = read_all(tmp_path / "o")
    assert [d["id"] for d in got] == ["a", "a", "7", "7.5", f"{src.as_posix()}:5"]
    assert [d["text"] for d in got] == ["one", "two", "three", "four", "five"]


def test_huge_word_and_long_document_are_kept_whole(tmp_path):
    word = "x" * 200_000
    long_doc = "word " * 400_000
    src = write_jsonl(tmp_path / "a.jsonl", [{"text": word}, {"text": long_doc}])
    s = ok_json("convert", str(src), "-o", str(tmp_path / "o"))
    assert s["documents"] == 2 and s["characters"] == len(word) + len(long_doc)
    assert [d["text"] for d in read_all(tmp_path / "o")] == [word, long_doc]


# ---------------------------------------------------------------- tokenize and chunk


def _text_mds(root: Path, texts: list[tuple[str, str]]) -> Path:
    """A text dataset as another tool could write it (one unit), bypassing convert's checks."""
    from ettin_data.mds import TEXT_COLUMNS, ShardWriter, write_root_index

    with ShardWriter(root / "u", TEXT_COLUMNS) as w:
        for doc_id, text in texts:
            w.write({"id": doc_id, "text": text})
    write_root_index(root, ["u"])
    return root


def _decode(tok, ids) -> str:
    return tok.decode([int(i) for i in ids], skip_special_tokens=True)


def test_tokenize_hostile_documents_round_trip_and_are_counted(tmp_path):
    import unicodedata

    from ettin_data.tokenizer import load_tokenizer

    texts = [("a", ""), ("b", "   \n\t"), ("c", "\x00"), ("c", "x\x00y\x00 z"), ("7", "w" * 200_000),
             ("e", "Cafe\u0301 \u212b"), ("f", "\ufffd lone surrogate replaced by convert")]
    src = _text_mds(tmp_path / "text", texts)
    s = ok_json("tokenize", str(src), "-o", str(tmp_path / "tok"), "-t", "builtin:modernbert")
    assert s["documents_in"] == len(texts)
    assert s["skipped"] == {"empty_tokens": 1} and s["documents"] == len(texts) - 1  # only "" has no tokens
    got = read_all(tmp_path / "tok")
    tok = load_tokenizer("builtin:modernbert")
    assert [d["id"] for d in got] == [i for i, t in texts if t]  # duplicates kept, order kept
    for d, (_, text) in zip(got, [x for x in texts if x[1]], strict=True):
        assert d["input_ids"][0] == 50281 and d["input_ids"][-1] == 50282 and d["len"] == len(d["input_ids"])
        assert _decode(tok, d["input_ids"]) == unicodedata.normalize("NFC", text)
    assert s["tokens"] == sum(d["len"] for d in got)


@pytest.mark.parametrize("content", ["{not json", '{"version": "1.0", "model": {"type": "Nope"}}', "\xff"])
def test_tokenizer_file_that_does_not_parse(tmp_path, text_dataset, content):
    bad = tmp_path / "tokenizer.json"
    bad.write_bytes(content.encode("latin-1"))
    err = fails("tokenize", str(text_dataset), "-o", str(tmp_path / "tok"), "-t", str(bad))
    assert f"{bad}: not a valid tokenizer.json" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "tok" / "index.json").exists()


def test_missing_tokenizer_and_text_input_of_wrong_kind(tmp_path, text_dataset, token_dataset):
    err = fails("tokenize", str(text_dataset), "-o", str(tmp_path / "t1"), "-t", str(tmp_path / "nope.json"))
    assert "nope.json: no such tokenizer file" in err
    err = fails("tokenize", str(token_dataset), "-o", str(tmp_path / "t2"), "-t", "builtin:modernbert")
    assert "needs 'id' and 'text' columns" in err and "already tokenized" in err


def test_chunk_refuses_a_tokenizer_that_differs_from_the_metadata(tmp_path, token_dataset):
    import shutil

    data = tmp_path / "tokens"
    shutil.copytree(token_dataset, data)
    tj = json.loads((data / "tokenizer.json").read_text())
    for t in tj["added_tokens"]:
        if t["content"] == "[CLS]":
            t["content"] = "<s>"  # another tokenizer: its BOS is not the recorded one
    (data / "tokenizer.json").write_text(json.dumps(tj))
    err = fails("chunk", str(data), "-o", str(tmp_path / "ch"))
    meta = json.loads((data / "ettin_meta.json").read_text())["tokenizer"]
    assert str(data / "tokenizer.json") in err and meta["sha256"] in err and "builtin:modernbert" in err
    assert not (tmp_path / "ch").exists() or not any((tmp_path / "ch").rglob(".done"))


def test_chunk_refuses_text_data(tmp_path, text_dataset):
    err = fails("chunk", str(text_dataset), "-o", str(tmp_path / "ch"))
    assert "tokenizer" in err and str(text_dataset) in err


def _token_mds_like(ref: Path, root: Path, docs: list[np.ndarray]) -> Path:
    """A token dataset with ``ref``'s metadata and tokenizer.json and the given documents (one unit)."""
    import shutil

    from ettin_data.mds import TOKEN_COLUMNS, ShardWriter, write_root_index

    root.mkdir(parents=True)
    for name in ("ettin_meta.json", "tokenizer.json"):
        shutil.copyfile(ref / name, root / name)
    with ShardWriter(root / "u", TOKEN_COLUMNS) as w:
        for i, ids in enumerate(docs):
            w.write({"id": f"d{i}", "input_ids": ids, "len": len(ids)})
    write_root_index(root, ["u"])
    return root


def test_chunk_a_document_of_more_than_a_million_tokens(tmp_path, token_dataset):
    rng = np.random.default_rng(0)
    n = 1_200_000
    big = np.concatenate([[50281], rng.integers(300, 50_000, n), [50282]]).astype(np.uint32)
    small = np.array([50281, 510, 5347, 50282], np.uint32)
    src = _token_mds_like(token_dataset, tmp_path / "tokens", [big, small, big[: 5000].copy()])
    s = ok_json("chunk", str(src), "-o", str(tmp_path / "ch"), "-c", "1024", "-m", "0", "-a", "0",
                "--no-word-boundaries")
    assert s["documents"] == 3
    assert s["content_tokens_in"] == n + 2 + 4999  # the third document: [CLS] + 4999 tokens, no [SEP]
    assert s["content_tokens_in"] == s["content_tokens_written"] + s["total_tokens_skipped"] - s[
        "total_duplicated_tokens"]
    chunks = read_all(tmp_path / "ch")
    assert len(chunks) == s["samples"] and sum(c["len"] for c in chunks) == s["total_tokens_written"]
    assert all(c["input_ids"][0] == 50281 and c["input_ids"][-1] == 50282 and c["len"] <= 1024 for c in chunks)
    first = np.concatenate([c["input_ids"][1:-1] for c in chunks if c["id"] == "d0"])
    assert np.array_equal(first, big[1:-1])  # every token once, in order: nothing lost, nothing repeated


@pytest.mark.slow
def test_tokenize_and_chunk_a_document_of_more_than_a_million_tokens(tmp_path):
    from ettin_data.tokenizer import load_tokenizer

    text = "a " * 1_050_000
    src = _text_mds(tmp_path / "text", [("big", text), ("small", "hello world")])
    s = ok_json("tokenize", str(src), "-o", str(tmp_path / "tok"), "-t", "builtin:modernbert")
    big, small = read_all(tmp_path / "tok")
    assert big["len"] > 1_000_000 and s["tokens"] == big["len"] + small["len"]
    tok = load_tokenizer("builtin:modernbert")
    assert _decode(tok, big["input_ids"]) == text
    c = ok_json("chunk", str(tmp_path / "tok"), "-o", str(tmp_path / "ch"), "-c", "8192", "-m", "0", "-a", "0")
    assert c["content_tokens_in"] == big["len"] + small["len"] - 4
    chunks = read_all(tmp_path / "ch")
    assert np.array_equal(np.concatenate([x["input_ids"][1:-1] for x in chunks if x["id"] == "big"]),
                          big["input_ids"][1:-1])
