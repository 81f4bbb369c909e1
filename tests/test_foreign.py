"""Token datasets another tool wrote (issue 23): mosaicml-streaming's MDSWriter, a seed-script-style layout,
llm-foundry's ``tokens`` column and Ettin-style published chunks. Given ``--tokenizer``, ``chunk`` gives exactly
the chunks it gives for the same documents tokenized by ``ettin-data tokenize``; sample, finalize and
``stats --verify`` work on the results, and the metadata says the input was foreign. A missing or wrong
``--tokenizer`` is one line. (streaming is imported only inside the tests that write with MDSWriter.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers_chunks import read_chunks
from helpers_cli import cli, one_line

from ettin_data import run
from ettin_data.config import ChunkConfig, FinalizeConfig, SplitConfig
from ettin_data.mds import ShardWriter, UnitReader, find_units, read_index, write_root_index
from ettin_data.verify import verify

SETTINGS = {"chunk_size": 128, "min_chunk_size": 32, "always_skip_size": 8, "backfill": True,
            "backfill_no_duplicates": True}
SEP = 50282


def _docs(token_dataset: Path) -> list[tuple[str, np.ndarray]]:
    out = []
    for u in find_units(token_dataset):
        out += [(s["id"], np.asarray(s["input_ids"])) for s in UnitReader(token_dataset / u).iter_samples()]
    return out


def _chunk(inp: Path, out: Path, **kw) -> dict:
    return run(ChunkConfig(inputs=[str(inp)], output=str(out), workers=1, **{**SETTINGS, **kw}))


@pytest.fixture(scope="module")
def ref(token_dataset, tmp_path_factory):
    """The documents of the built-in corpus tokenized by ettin-data, and the chunks `chunk` makes of them."""
    base = tmp_path_factory.mktemp("foreign")
    _chunk(token_dataset, base / "native")
    return base, _docs(token_dataset), read_chunks(base / "native")


@pytest.fixture(scope="module")
def mdswriter(ref) -> Path:
    """The same documents written by mosaicml-streaming's MDSWriter: `id` + `input_ids` ndarray:uint32, zstd,
    two subfolders (no root index, no ettin metadata), as a user of the library writes them."""
    from streaming import MDSWriter

    base, docs, _ = ref
    root = base / "mdswriter"
    half = len(docs) // 2
    for sub, part in (("a", docs[:half]), ("b", docs[half:])):
        with MDSWriter(out=str(root / sub), columns={"id": "str", "input_ids": "ndarray:uint32"},
                       compression="zstd", size_limit=1 << 20) as w:
            for doc_id, ids in part:
                w.write({"id": doc_id, "input_ids": ids})
    return root


def _seed_layout(root: Path, docs: list[tuple[str, np.ndarray]]) -> Path:
    """A seed-script-style tree: uncompressed shards of `id`, `input_ids` (ndarray:uint16) and `len` in
    source/subset folders, with a root index at each level as `make_recursive_root.py` (merge_index per level)
    leaves them."""
    parts = {"books/000": docs[:60], "books/001": docs[60:130], "web/000": docs[130:]}
    for name, part in parts.items():
        with ShardWriter(root / name, {"id": "str", "input_ids": "ndarray:uint16", "len": "int"}, compression=None,
                         size_limit=1 << 18) as w:
            for doc_id, ids in part:
                w.write({"id": doc_id, "input_ids": ids.astype(np.uint16), "len": len(ids)})
    write_root_index(root / "books", ["000", "001"])
    write_root_index(root / "web", ["000"])
    write_root_index(root, list(parts))
    return root


def test_mdswriter_dataset_chunks_exactly_like_tokenize_output(ref, mdswriter):
    base, _, want = ref
    s = _chunk(mdswriter, base / "from-mdswriter", tokenizer="builtin:modernbert")
    assert read_chunks(base / "from-mdswriter") == want
    assert s["samples"] == len(want)
    meta = json.loads((base / "from-mdswriter" / "ettin_meta.json").read_text())
    (rec,) = meta["foreign"]
    assert rec["path"] == str(mdswriter) and rec["tokenizer"] == "builtin:modernbert" and rec["units"] == 2
    assert rec["columns"] == {"id": "str", "input_ids": "ndarray:uint32"}
    assert rec["documents_carry_special_tokens"] is True
    assert meta["tokenizer"]["name"] == "builtin:modernbert" and meta["framing"]["bos_id"] == 50281
    # the output is an ettin-data chunk dataset: its tokenizer.json is the one given
    native = json.loads((base / "native" / "ettin_meta.json").read_text())
    assert meta["tokenizer"]["sha256"] == native["tokenizer"]["sha256"]
    tokenizer = (base / "from-mdswriter" / "tokenizer.json").read_bytes()
    assert tokenizer == (base / "native" / "tokenizer.json").read_bytes()
    assert verify(base / "from-mdswriter") == []


def test_seed_style_layout_chunks_exactly_like_tokenize_output(ref, modernbert_json):
    base, docs, want = ref
    seed = _seed_layout(base / "seed", docs)
    assert verify(seed) == []  # the input itself, a foreign MDS tree, verifies
    _chunk(seed, base / "from-seed", tokenizer=str(modernbert_json))
    got = read_chunks(base / "from-seed")
    assert got == want  # uint16 ids in, the same chunks out (kept uint16)
    assert UnitReader(base / "from-seed").columns["input_ids"] == "ndarray:uint16"
    assert sorted(find_units(base / "from-seed")) == ["books/000", "books/001", "web/000"]


def test_llm_foundry_tokens_column_of_whole_documents(ref, tmp_path):
    """`tokens` as bytes of int64, one document per sample, no id column: the ids of the chunks are the
    same; document ids are made from the unit and sample index."""
    _, docs, _ = ref
    lf = tmp_path / "lf"
    with ShardWriter(lf / "shards", {"tokens": "bytes"}) as w:
        for _, ids in docs:
            w.write({"tokens": ids.astype(np.int64).tobytes()})
    _chunk(lf, tmp_path / "out", tokenizer="builtin:modernbert")
    got = read_chunks(tmp_path / "out")
    # the reference: the same documents, ids named the same way, as input_ids ndarray:uint32
    want_root = tmp_path / "want"
    with ShardWriter(want_root / "shards", {"id": "str", "input_ids": "ndarray:uint32"}) as w:
        for k, (_, ids) in enumerate(docs):
            w.write({"id": f"shards:{k}", "input_ids": ids})
    _chunk(want_root, tmp_path / "want-out", tokenizer="builtin:modernbert")
    assert got == read_chunks(tmp_path / "want-out")
    assert got[0][0] == "shards:0" and UnitReader(tmp_path / "out").columns["input_ids"] == "ndarray:uint32"
    # stats counts the ids of the bytes column (8 bytes each), export decodes them
    res = cli("stats", lf, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["tokens"] == sum(len(ids) for _, ids in docs)
    res = cli("export", lf, "-o", tmp_path / "lf.jsonl", "--tokenizer", "builtin:modernbert")
    assert res.exit_code == 0, res.output
    from ettin_data.tokenizer import load_tokenizer

    first = json.loads((tmp_path / "lf.jsonl").read_text().splitlines()[0])
    assert first["text"] == load_tokenizer("builtin:modernbert").decode(docs[0][1].tolist())


def test_llm_foundry_concat_windows_are_refused(ref, tmp_path):
    _, docs, _ = ref
    flat = np.concatenate([ids for _, ids in docs[:40]]).astype(np.int64)
    lf = tmp_path / "concat"
    with ShardWriter(lf, {"tokens": "bytes"}) as w:
        for k in range(len(flat) // 256):
            w.write({"tokens": flat[k * 256:(k + 1) * 256].tobytes()})
    res = cli("chunk", lf, "-o", tmp_path / "o", "-t", "builtin:modernbert")
    one_line(res, 1, "concat_tokens", "one document per sample")
    assert not (tmp_path / "o").exists()


def test_missing_or_wrong_tokenizer_is_one_line(ref, mdswriter, tmp_path, token_dataset):
    from ettin_data.tokenizer import _olmo_json_path

    one_line(cli("chunk", mdswriter, "-o", tmp_path / "o1"), 1, str(mdswriter), "no ettin_meta.json",
             "pass --tokenizer")
    olmo = _olmo_json_path()  # 50,280 ids: the ModernBERT documents hold [CLS] = 50281
    line = one_line(cli("chunk", mdswriter, "-o", tmp_path / "o2", "--tokenizer", olmo), 1,
                    "holds token id 5028", "outside tokenizer", "pass the --tokenizer that produced this dataset")
    assert str(mdswriter / "a") in line
    one_line(cli("sample", "split", mdswriter, "-o", tmp_path / "o3", "--validation-fraction", "0.1"), 1,
             "pass --tokenizer")
    # ours, with another --tokenizer than it records: refused (exit 2), drop the option
    one_line(cli("chunk", token_dataset, "-o", tmp_path / "o4", "--tokenizer", olmo), 2, "drop --tokenizer")
    for o in ("o1", "o2", "o3", "o4"):
        assert not (tmp_path / o).exists() or not find_units(tmp_path / o)


def test_sample_finalize_and_verify_work_on_the_results(ref, mdswriter, tmp_path):
    base, _, want = ref
    chunks = base / "from-mdswriter"
    if not chunks.is_dir():
        _chunk(mdswriter, chunks, tokenizer="builtin:modernbert")
    assert cli("sample", "split", chunks, "-o", tmp_path / "split", "--validation-fraction", "0.1").exit_code == 0
    assert cli("sample", "budget", chunks, "-o", tmp_path / "budget", "--target-tokens", 20000).exit_code == 0
    res = cli("finalize", tmp_path / "split", "-o", tmp_path / "final", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["verified"] and summary["problems"] == []
    manifest = json.loads((tmp_path / "final" / "manifest.json").read_text())
    chain = manifest["datasets"]["split"]["stages"]
    assert [s["stage"] for s in chain] == ["chunk", "sample split"]
    assert chain[0]["foreign"][0]["path"] == str(mdswriter) and chain[0]["foreign"][0]["tokenizer"] == \
        "builtin:modernbert"
    assert chain[0]["framing"] == {"bos": "[CLS]", "bos_id": 50281, "eos": "[SEP]", "eos_id": SEP}
    got = read_chunks(tmp_path / "final" / "train") + read_chunks(tmp_path / "final" / "validation")
    assert sorted(got) == sorted(want)
    assert cli("stats", "--verify", tmp_path / "final").exit_code == 0
    assert cli("stats", "--verify", tmp_path / "budget").exit_code == 0


def _published(src: Path, dst: Path) -> Path:
    """Chunks as a published dataset holds them: the unit folders' index and shards only (no ettin files)."""
    for u in find_units(src):
        (dst / u).mkdir(parents=True)
        for f in (src / u).iterdir():
            if f.name == "index.json" or f.name.startswith("shard."):
                shutil.copy(f, dst / u / f.name)
    write_root_index(dst, find_units(dst))
    return dst


def test_published_chunks_sample_and_finalize_with_tokenizer(ref, tmp_path):
    base, _, want = ref
    pub = _published(base / "native", tmp_path / "published")
    one_line(cli("sample", "split", pub, "-o", tmp_path / "s0", "--validation-fraction", "0.1"), 1,
             "no ettin_meta.json", "pass --tokenizer")
    run(SplitConfig(inputs=[str(pub)], output=str(tmp_path / "split"), validation_fraction=0.1, workers=1,
                    tokenizer="builtin:modernbert"))
    meta = json.loads((tmp_path / "split" / "train" / "ettin_meta.json").read_text())
    assert meta["foreign"][0]["path"] == str(pub) and meta["tokenizer"]["name"] == "builtin:modernbert"
    s = run(FinalizeConfig(inputs=[str(tmp_path / "split")], output=str(tmp_path / "final"), workers=1,
                           loader="llm-foundry"))
    assert s["problems"] == [] and s["tokenizer"]["vocab_size"] == 50368
    manifest = json.loads((tmp_path / "final" / "manifest.json").read_text())
    assert manifest["datasets"]["split"]["stages"][0]["foreign"][0]["columns"] == \
        {"id": "str", "input_ids": "ndarray:uint32", "len": "int"}
    # finalize reads a published split folder directly (train/ and validation/ of another tool), given --tokenizer
    direct = tmp_path / "direct"
    for sp in ("train", "validation"):
        _published(tmp_path / "split" / sp, direct / sp)
    one_line(cli("finalize", direct, "-o", tmp_path / "f0"), 1, "pass --tokenizer")
    s = run(FinalizeConfig(inputs=[str(direct)], output=str(tmp_path / "f1"), workers=1,
                           tokenizer="builtin:modernbert"))
    assert s["problems"] == []
    manifest = json.loads((tmp_path / "f1" / "manifest.json").read_text())
    assert manifest["datasets"]["direct"]["foreign"]["path"] == str(direct / "train")
    assert manifest["tokenizer"]["name"] == "builtin:modernbert"
    got = read_chunks(tmp_path / "f1" / "train") + read_chunks(tmp_path / "f1" / "validation")
    assert sorted(got) == sorted(want)


# ------------------------------------------------- sample and finalize on every token layout (issue 23)

MODERNBERT_LIMIT = 50368  # one past ModernBERT's largest id
LAYOUTS = {  # how other tools store the same documents: columns, compression
    "tokens-ndarray": ({"id": "str", "tokens": "ndarray:int32"}, "zstd"),  # llm-foundry, ndarray
    "tokens-bytes": ({"tokens": "bytes"}, "zstd"),  # llm-foundry's convert scripts: int64 bytes, no id column
    "input_ids-bytes": ({"id": "str", "input_ids": "bytes"}, None),  # ModernBERT's streaming layout
}


def _write_foreign(root: Path, docs: list[tuple[str, np.ndarray]], columns: dict[str, str], compression: str | None,
                   bad: int | None = None) -> Path:
    """The documents as another tool writes them with MDSWriter, in a split layout: train/a and train/b (several
    shards each), validation/v (the last 5 documents). ``bad``: this id replaces one of the last document of
    train/b (the last sample of its last shard)."""
    from streaming import MDSWriter

    col = "tokens" if "tokens" in columns else "input_ids"
    train, val = docs[:-5], docs[-5:]
    half = len(train) // 2
    for sub, part in (("train/a", train[:half]), ("train/b", train[half:]), ("validation/v", val)):
        with MDSWriter(out=str(root / sub), columns=columns, compression=compression, size_limit=1 << 17) as w:
            for k, (doc_id, ids) in enumerate(part):
                ids = ids.astype(np.int64)
                if bad is not None and sub == "train/b" and k == len(part) - 1:
                    ids[len(ids) // 2] = bad
                value = ids.tobytes() if columns[col] == "bytes" else ids.astype(columns[col].split(":")[1])
                w.write({**({"id": doc_id} if "id" in columns else {}), col: value})
    return root


def _samples(root: Path) -> list[tuple[str | None, tuple[int, ...]]]:
    """(id, token ids) of every sample through the root index, whatever the token layout."""
    from ettin_data.token_input import token_column

    reader = UnitReader(root)
    col = token_column(reader.columns, str(root))
    return [(s.get("id"), tuple(col.ids(s[col.name]).tolist())) for s in reader.iter_samples()]


def _sample_runs(train: Path, out: Path, tokenizer: str) -> dict:
    """sample split, budget (--exact: a trimmed unit), context and mix (upsampled) of a foreign train folder."""
    from ettin_data.config import BudgetConfig, ContextConfig, MixConfig

    common = {"workers": 1, "tokenizer": tokenizer}
    (out / "mix.toml").write_text(f'total_tokens = 500_000\n[sources.lf]\npath = "{train}"\nproportion = 1.0\n')
    return {
        "mix": run(MixConfig(inputs=[str(out / "mix.toml")], output=str(out / "mix"), **common)),
        "split": run(SplitConfig(inputs=[str(train)], output=str(out / "split"), validation_fraction=0.1, **common)),
        "budget": run(BudgetConfig(inputs=[str(train)], output=str(out / "budget"), target_tokens=100_000,
                                   exact=True, **common)),
        "context": run(ContextConfig(inputs=[str(train)], output=str(out / "context"), num_tokens=20_000,
                                     min_length=2000, **common)),
    }


@pytest.fixture(scope="module")
def reference(ref, tmp_path_factory):
    """The same runs on the input_ids ndarray:uint32 form of the same documents (with and without an id column)."""
    _, docs, _ = ref
    done: dict[bool, Path] = {}

    def get(with_id: bool) -> Path:
        if with_id not in done:
            base = tmp_path_factory.mktemp("reference")
            cols = {"input_ids": "ndarray:uint32", **({"id": "str"} if with_id else {})}
            _sample_runs(_write_foreign(base / "in", docs, cols, "zstd") / "train", base, "builtin:modernbert")
            done[with_id] = base
        return done[with_id]

    return get


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_sample_and_finalize_take_every_token_layout(ref, reference, layout, tmp_path):
    from test_finalize import _modernbert_read

    _, docs, _ = ref
    columns, compression = LAYOUTS[layout]
    root = _write_foreign(tmp_path / "in", docs, columns, compression)
    total = sum(len(ids) for _, ids in docs[:-5])
    s = _sample_runs(root / "train", tmp_path, "builtin:modernbert")
    want = reference("id" in columns)
    # the same documents chosen, in the same order, with the same ids, as from input_ids ndarrays; columns kept
    for out in ("split/train", "split/validation", "budget", "context", "mix"):
        got = _samples(tmp_path / out)
        assert got and got == _samples(want / out), out
        assert UnitReader(tmp_path / out).columns == columns
        assert cli("stats", "--verify", tmp_path / out).exit_code == 0, out
    # token accounting: tokens in = tokens written (nothing is skipped by sampling)
    assert s["split"]["train_tokens"] + s["split"]["validation_tokens"] == total
    assert s["budget"]["input_tokens"] == total
    assert s["budget"]["achieved_tokens"] == sum(len(ids) for _, ids in _samples(tmp_path / "budget"))
    assert s["context"]["achieved_tokens"] == sum(len(ids) for _, ids in _samples(tmp_path / "context"))
    assert s["mix"]["achieved_tokens"] == sum(len(ids) for _, ids in _samples(tmp_path / "mix")) >= 500_000
    meta = json.loads((tmp_path / "split" / "train" / "ettin_meta.json").read_text())
    assert meta["foreign"][0]["path"] == str(root / "train") and meta["foreign"][0]["token_column"] == \
        ("tokens" if "tokens" in columns else "input_ids")
    # finalize the split: input_ids ndarray:uint32, read as ModernBERT's streaming: false loader reads them
    f = run(FinalizeConfig(inputs=[str(tmp_path / "split")], output=str(tmp_path / "final"), workers=1))
    assert f["problems"] == []
    for sp in ("train", "validation"):
        assert [tuple(a.tolist()) for a in _modernbert_read(tmp_path / "final", sp)] == \
            [ids for _, ids in _samples(tmp_path / "split" / sp)]
        assert UnitReader(tmp_path / "final" / sp).columns["input_ids"] == "ndarray:uint32"
    assert sum(e["tokens"] for e in f["splits"].values()) == total
    manifest = json.loads((tmp_path / "final" / "manifest.json").read_text())
    chain = manifest["datasets"]["split"]["stages"]
    assert chain[-1]["stage"] == "sample split" and chain[-1]["foreign"][0]["encoding"] == columns[
        "tokens" if "tokens" in columns else "input_ids"]
    assert cli("stats", "--verify", tmp_path / "final").exit_code == 0
    # finalize the foreign split layout directly (every id checked as its workers read it): the documents, exactly
    f = run(FinalizeConfig(inputs=[str(root)], output=str(tmp_path / "direct"), workers=1,
                           tokenizer="builtin:modernbert", loader="modernbert-streaming"))
    assert f["problems"] == [] and f["splits"]["train"]["tokens"] == total
    got = [tuple(np.frombuffer(s["input_ids"], np.int64).tolist())  # ModernBERT streaming: true's read
           for s in UnitReader(tmp_path / "direct" / "train").iter_samples(["input_ids"])]
    assert got == [tuple(ids.tolist()) for _, ids in docs[:-5]]
    manifest = json.loads((tmp_path / "direct" / "manifest.json").read_text())
    assert manifest["datasets"]["in"]["foreign"]["path"] == str(root / "train")
    assert cli("stats", "--verify", tmp_path / "direct").exit_code == 0


@pytest.mark.parametrize(("columns", "compression", "bad"), [
    ({"id": "str", "input_ids": "ndarray:uint32"}, None, MODERNBERT_LIMIT),  # finalize links it, then reads
    ({"id": "str", "input_ids": "ndarray:uint32"}, "zstd", MODERNBERT_LIMIT),  # finalize writes its shards whole
    ({"tokens": "bytes"}, "zstd", -3),  # finalize converts it sample by sample
], ids=["raw", "zstd", "tokens-bytes"])
def test_a_bad_id_in_the_last_shard_stops_sample_and_finalize(ref, tmp_path, columns, compression, bad):
    """The first shard is checked before any unit runs; an id outside the tokenizer in a LATER shard (the last
    of the last unit) is found as the stage reads it: one line naming the shard file and the sample, exit 1, and
    no output that looks complete."""
    _, docs, _ = ref
    root = _write_foreign(tmp_path / "in", docs, columns, compression, bad=bad)
    last = read_index(root / "train" / "b").shards[-1]
    shard = f"{root / 'train' / 'b' / last.stored.basename}: sample {last.samples - 1} "
    line = one_line(cli("sample", "split", root / "train", "-o", tmp_path / "split", "-t", "builtin:modernbert",
                        "--validation-fraction", "0.1"), 1, shard, f"token id {bad} outside")
    assert not (tmp_path / "split").exists() or not find_units(tmp_path / "split"), line
    res = cli("finalize", root, "-o", tmp_path / "final", "-t", "builtin:modernbert")
    assert res.exit_code == 1
    errors = [x for x in res.stderr.strip().splitlines() if x.startswith("error: unit ")]
    assert len(errors) == 1 and errors[0].startswith("error: unit train/in/b: " + shard), res.stderr
    assert f"token id {bad} outside" in errors[0]
    assert (tmp_path / "final" / ".ettin_incomplete").exists() and not (tmp_path / "final" / "train" /
                                                                          "index.json").exists()
    assert not (tmp_path / "final" / "manifest.json").exists()
    one_line(cli("stats", tmp_path / "final"), 1, "incomplete")  # readers refuse it


def test_int64_bytes_that_are_not_whole_ids_are_named_by_sample(tmp_path) -> None:
    """A ``bytes`` token column whose value is not a whole number of int64 ids: the counts (and the id checks)
    stop with one line naming the shard and the sample; the vectorized rule checks leave it to per-sample
    decoding."""
    from ettin_data.errors import InputError
    from ettin_data.rules import _rule_violations
    from ettin_data.token_input import token_column

    with ShardWriter(tmp_path / "u", {"tokens": "bytes"}, compression=None) as w:
        for value in (np.arange(3, dtype="<i8").tobytes(), b"\x01" * 12, np.arange(2, dtype="<i8").tobytes()):
            w.write({"tokens": value})
    (shard,) = list(UnitReader(tmp_path / "u").shards())
    column = token_column(dict(shard.entry.columns), "x")
    with pytest.raises(InputError, match=r"shard\.00000\.mds: sample 1: tokens holds 12 bytes, not whole int64"):
        column.lengths(shard)
    assert _rule_violations(shard, (None, None, 100)) is None
