"""R4 (issue 25): ids are checked against the integer type they are stored in, wherever ids are narrowed.

The largest id a tokenizer can emit (model vocabulary with its gaps, added tokens, post-processor ids)
decides which --dtype is allowed; the one guarded cast (``ids.narrow``) refuses instead of wrapping in
tokenize, chunk rows, MDS encoding (finalize and its loader profiles) and the flat files of --for numpy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from typer.testing import CliRunner

from ettin_data import run
from ettin_data.cli import app
from ettin_data.config import ChunkConfig, ConvertConfig, FinalizeConfig, SplitConfig, TokenizeConfig
from ettin_data.errors import ConfigError
from ettin_data.ids import IdOverflow, check_fits, id_bound, max_token_id, narrow
from ettin_data.mds import TOKEN_COLUMNS, ShardWriter, UnitReader, encode_value, find_units
from ettin_data.stages.export import iter_records
from ettin_data.token_rows import token_row
from ettin_data.verify import verify

runner = CliRunner()


def _template(cls_id: int, sep_id: int) -> dict:
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [cls_id], "tokens": ["[CLS]"]},
                               "[SEP]": {"id": "[SEP]", "ids": [sep_id], "tokens": ["[SEP]"]}}}


def _added(content: str, i: int) -> dict:
    return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


def sparse_tokenizer(path: Path, words: dict[str, int], cls_id: int | None = None, sep_id: int | None = None,
                     in_vocab: bool = True) -> Path:
    """A WordLevel tokenizer.json with ``words`` at the given (possibly sparse) ids and, when ``cls_id`` is
    given, special tokens [CLS]/[SEP] at ``cls_id``/``sep_id`` added by a template post-processor
    (``in_vocab``: the specials are vocabulary entries, so tokenizers keeps their ids)."""
    tok = Tokenizer(models.WordLevel(vocab={"[UNK]": 0, **words}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    d = json.loads(tok.to_str())
    if cls_id is not None:
        if in_vocab:
            d["model"]["vocab"].update({"[CLS]": cls_id, "[SEP]": sep_id})
        d["added_tokens"] = [_added("[CLS]", cls_id), _added("[SEP]", sep_id)]
        d["post_processor"] = _template(cls_id, sep_id)
    path.write_text(json.dumps(d))
    return path


# ---------------------------------------------------------------- the guarded cast


@pytest.mark.parametrize("src,dst,values,bad", [
    ("uint32", "uint16", [1, 65535, 70000], 70000),
    ("uint32", "int16", [1, 40000], 40000),
    ("int64", "uint32", [5, -1], -1),
    ("int64", "int32", [2**31], 2**31),
    ("uint64", "int64", [2**63], 2**63),
])
def test_narrow_refuses_what_does_not_fit(src, dst, values, bad):
    ids = np.array(values, src)
    with pytest.raises(IdOverflow, match=f"unit x: token id {bad:,} does not fit {dst}"):
        narrow(ids, dst, "unit x")
    ok = ids[np.array([v != bad for v in values])]
    assert narrow(ok, dst, "unit x").tolist() == ok.tolist()  # what fits is kept exactly


def test_narrow_checks_only_when_values_could_be_lost():
    ids = np.array([1, 2, 3], np.uint16)
    assert narrow(ids, "uint16", "") is ids
    assert narrow(ids, "int64", "").dtype == np.int64  # widening: no check needed
    assert narrow(np.zeros(0, np.int64), "uint16", "").dtype == np.uint16
    with pytest.raises(IdOverflow, match="does not fit uint16"):
        check_fits("uint16", 65536, "BOS id")
    check_fits("uint16", 65535, "BOS id")


def test_every_writer_of_ids_uses_the_guard(tmp_path):
    """The generic MDS encoder (finalize, profiles, sampling rewrites) and chunk's byte rows refuse a value the
    column cannot hold; storing 70000 as uint16 would have written 4464."""
    big = np.array([1, 70000], np.uint32)
    with pytest.raises(IdOverflow, match="70,000 does not fit uint16"):
        encode_value("ndarray:uint16", big)
    with pytest.raises(IdOverflow, match="70,000 does not fit uint16"):
        token_row(b"d", big, np.dtype(np.uint16))
    with pytest.raises(IdOverflow, match="-3 does not fit uint32"):
        encode_value("ndarray:uint32", np.array([-3], np.int64))
    cols = dict(TOKEN_COLUMNS, input_ids="ndarray:uint16")
    with pytest.raises(IdOverflow):
        ShardWriter(tmp_path / "u", cols).write({"id": "d", "input_ids": big, "len": 2})
    assert encode_value("ndarray:uint16", np.array([1, 65535], np.uint32))[-4:] == np.array(
        [1, 65535], np.uint16).tobytes()
    assert encode_value("ndarray:float32", np.array([0.5], np.float64))[-4:] == np.float32(0.5).tobytes()


# ---------------------------------------------------------------- the largest id a tokenizer can emit


def test_max_token_id_is_the_largest_id_not_the_entry_count(tmp_path, modernbert_json):
    sparse = Tokenizer.from_file(str(sparse_tokenizer(tmp_path / "s.json", {"hello": 1, "world": 70000})))
    assert sparse.get_vocab_size(with_added_tokens=True) == 3 and max_token_id(sparse) == 70000
    specials = Tokenizer.from_file(str(sparse_tokenizer(tmp_path / "t.json", {"hello": 1}, 100000, 100001)))
    assert max_token_id(specials) == 100001 and specials.encode("hello").ids == [100000, 1, 100001]
    mb = Tokenizer.from_file(str(modernbert_json))  # dense vocabulary + added tokens: the fast path
    assert max_token_id(mb) == max(mb.get_vocab(with_added_tokens=True).values()) == 50367
    from tokenizers.processors import BertProcessing

    mb.post_processor = BertProcessing(("[SEP]", 70001), ("[CLS]", 70000))  # ids only the post-processor has
    assert max_token_id(mb) == 70001
    assert id_bound({"max_id": 70000, "vocab_size": 3}) == 70001
    assert id_bound({"vocab_size": 300}) == 300 and id_bound(None) is None  # metadata of earlier versions


def _cli(*args):
    r = runner.invoke(app, [*args, "-w", "1", "-q"])
    assert "Traceback" not in r.output
    return r


@pytest.fixture(scope="module")
def hello_text(tmp_path_factory):
    d = tmp_path_factory.mktemp("hello")
    docs = [{"id": f"d{i}", "text": " ".join(["hello world"] * (20 + 7 * i))} for i in range(40)]
    (d / "in.jsonl").write_text("".join(json.dumps(x) + "\n" for x in docs))
    run(ConvertConfig(inputs=[str(d / "in.jsonl")], output=str(d / "text"), docs_per_shard=10, workers=1))
    return d / "text"


@pytest.mark.parametrize("where", ["vocabulary", "added", "post-processor"])
def test_tokenize_uint16_is_decided_by_the_largest_id(tmp_path, hello_text, where):
    if where == "vocabulary":
        tok = sparse_tokenizer(tmp_path / "t.json", {"hello": 1, "world": 70000})
    elif where == "added":
        tok = sparse_tokenizer(tmp_path / "t.json", {"hello": 1, "world": 2}, 3, 65536)
    else:
        tok = sparse_tokenizer(tmp_path / "t.json", {"hello": 1, "world": 2}, 3, 4)
        d = json.loads(tok.read_text())
        d["post_processor"] = {"type": "BertProcessing", "sep": ["[SEP]", 4], "cls": ["[CLS]", 3]}
        d["model"]["vocab"]["[SEP]"] = 99999
        d["added_tokens"] = []
        tok.write_text(json.dumps(d))
    r = _cli("tokenize", str(hello_text), "-o", str(tmp_path / "o"), "-t", str(tok), "--dtype", "uint16")
    if where == "post-processor":  # [SEP] is 99999 to the tokenizer, 4 to its post-processor: refused
        assert r.exit_code == 1 and "post-processor adds '[SEP]' as id 4" in r.output
        return
    assert r.exit_code == 2, r.output
    assert "--dtype uint16" in r.output and "can emit id" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "index.json").exists()


def test_ids_beyond_the_vocabulary_work_through_every_stage(tmp_path, hello_text):
    """A tokenizer whose special ids lie far beyond its 5 entries (consistently: they are vocabulary entries)
    tokenizes, chunks, splits and finalizes (--for numpy picks uint32 by the largest id, not by the entry
    count); verification passes and export gives the text back."""
    tok = sparse_tokenizer(tmp_path / "t.json", {"hello": 1, "world": 2}, 100000, 100001)
    run(TokenizeConfig(inputs=[str(hello_text)], output=str(tmp_path / "tok"), tokenizer=str(tok), workers=1))
    meta = json.loads((tmp_path / "tok" / "ettin_meta.json").read_text())["tokenizer"]
    assert meta["vocab_size"] == 5 and meta["max_id"] == 100001 and (meta["bos_id"], meta["eos_id"]) == (100000,
                                                                                                          100001)
    first = next(UnitReader(tmp_path / "tok" / find_units(tmp_path / "tok")[0]).iter_samples(["input_ids"]))
    assert first["input_ids"][0] == 100000 and first["input_ids"][-1] == 100001
    run(ChunkConfig(inputs=[str(tmp_path / "tok")], output=str(tmp_path / "ch"), chunk_size=64, min_chunk_size=8,
                    always_skip_size=4, workers=1))
    run(SplitConfig(inputs=[str(tmp_path / "ch")], output=str(tmp_path / "sp"), validation_fraction=0.2, workers=1))
    s = run(FinalizeConfig(inputs=[str(tmp_path / "sp")], output=str(tmp_path / "fin"), loader="numpy", workers=1))
    assert s["problems"] == []
    header = json.loads((tmp_path / "fin" / "train" / "header.json").read_text())
    assert header["dtype"] == "uint32"
    flat = np.memmap(tmp_path / "fin" / "train" / "tokens.npy", dtype="uint32", mode="r")
    assert flat.max() == 100001 and set(np.unique(flat).tolist()) == {1, 2, 100000, 100001}
    assert verify(tmp_path / "fin") == []
    with pytest.raises(ConfigError, match="--dtype uint16: tokenizer .* can emit id 100,001"):
        run(FinalizeConfig(inputs=[str(tmp_path / "sp")], output=str(tmp_path / "f16"), dtype="uint16", workers=1))
    assert not (tmp_path / "f16").exists()
    texts = {r["text"] for r in iter_records(tmp_path / "tok")}
    assert "hello world hello world" in {t[:23] for t in texts}


def test_added_token_ids_the_tokenizer_renumbers_are_one_line(tmp_path, hello_text):
    """added_tokens at 100000/100001 that are not vocabulary entries: tokenizers renumbers them (3, 4) while
    the template keeps 100000; every unit used to fail with a bare IndexError. Now: one line at the start,
    and the same tokenizer works without the template."""
    tok = sparse_tokenizer(tmp_path / "t.json", {"hello": 1, "world": 2}, 100000, 100001, in_vocab=False)
    r = _cli("tokenize", str(hello_text), "-o", str(tmp_path / "o"), "-t", str(tok))
    assert r.exit_code == 1
    assert "post-processor adds '[CLS]' as id 100000, but the tokenizer gives '[CLS]' id 3" in r.output
    assert "IndexError" not in r.output and not (tmp_path / "o" / "index.json").exists()
    r = _cli("tokenize", str(hello_text), "-o", str(tmp_path / "o2"), "-t", str(tok), "--no-special-tokens")
    assert r.exit_code == 0, r.output


def test_chunk_refuses_bos_eos_its_stored_type_cannot_hold(tmp_path):
    from ettin_data.chunking import ChunkParams
    from ettin_data.stages.chunk import chunk_into

    p = ChunkParams(chunk_size=8, bos_id=70000, eos_id=2, strip_special=False)
    docs = [("d", np.array([5, 6, 7], np.uint16), None)]
    with pytest.raises(IdOverflow, match="u: BOS id 70,000 does not fit uint16"):
        chunk_into(tmp_path / "c", docs, p, dict(TOKEN_COLUMNS, input_ids="ndarray:uint16"), "u")
