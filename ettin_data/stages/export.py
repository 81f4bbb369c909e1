"""Export MDS back to JSONL (``export MDS_DIR -o FILE.jsonl``) and print samples
(``stats --show N``): the seed's ``mds_to_jsonl.py`` and ``decode_mds.py``.

Text data is written as it is stored; token data is decoded with a tokenizer (special tokens dropped):
``--tokenizer`` when given, else the ``tokenizer.json`` that every token-producing stage copies to its
output root. One record per sample (a document, or a chunk of one): ``{"id", "text"}`` plus ``domain``
when the data has it, in dataset order.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..codecs import check_write_name, open_write
from ..config import ExportConfig
from ..dataset import TOKENIZER_FILE
from ..errors import ConfigError, InputError
from ..mds import INDEX, UnitReader, find_units
from ..stage import Command

__all__ = ["Export", "export_jsonl", "iter_records", "dataset_readers", "load_decoder", "show_samples"]

BATCH = 1000


def dataset_readers(path: str | Path) -> list[UnitReader]:
    """Readers covering an MDS dataset once, in order: its root index, else each unit below it."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if (path / INDEX).is_file():
        return [UnitReader(path)]
    units = find_units(path)
    if not units:
        raise InputError(f"{path}: no index.json here or below (not an MDS dataset)")
    return [UnitReader(path / u) for u in units]


def _find_tokenizer_file(path: Path) -> Path | None:
    """The tokenizer.json shipped with a dataset: at its root, or at a parent (a split of a sample output)."""
    for p in (path, *path.parents[:2]):
        if (p / TOKENIZER_FILE).is_file():
            return p / TOKENIZER_FILE
    return None


def load_decoder(spec: str | None, dataset: str | Path) -> Any:
    """A ``tokenizers.Tokenizer`` for decoding ``dataset``: ``spec`` (a tokenizer.json, a folder holding one,
    or any name the tokenize stage accepts), else the dataset's own tokenizer.json."""
    from tokenizers import Tokenizer

    if spec is None:
        found = _find_tokenizer_file(Path(dataset))
        if found is None:
            raise InputError(f"{dataset} holds token ids but no {TOKENIZER_FILE}; pass --tokenizer to decode them")
        spec = str(found)
    p = Path(spec)
    if p.is_dir() and (p / TOKENIZER_FILE).is_file():
        p = p / TOKENIZER_FILE
    if p.is_file():
        try:
            return Tokenizer.from_file(str(p))
        except Exception as e:
            raise InputError(f"{p} is not a tokenizer.json the tokenizers library can read ({e})") from None
    try:  # builtin:..., hub names: the tokenize stage knows how to find them
        from .. import tokenizer as tk
    except ImportError:  # pragma: no cover - the tokenize stage is part of the package
        raise ConfigError(f"--tokenizer {spec}: no such file or folder") from None
    loader = getattr(tk, "load_tokenizer", None)
    if loader is None:  # pragma: no cover
        raise ConfigError(f"--tokenizer {spec}: no such file or folder")
    loaded = loader(spec)
    return loaded[0] if isinstance(loaded, tuple) else loaded


def iter_records(path: str | Path, tokenizer: str | None = None, limit: int | None = None
                 ) -> Iterator[dict[str, Any]]:
    """Yield ``{"id", "text"[, "domain"]}`` for each sample of a text or token MDS dataset."""
    from ..token_input import token_column

    readers = dataset_readers(path)
    columns = readers[0].columns
    column = None
    if "text" not in columns:
        try:  # input_ids (ettin-data, MDSWriter users) or llm-foundry's tokens, an integer ndarray or int64 bytes
            column = token_column(columns, str(path))
        except InputError:
            raise InputError(f"{path}: neither a 'text' nor a token column ('input_ids' or 'tokens'; columns: "
                             f"{sorted(columns)})") from None
    want = [c for c in ("id", column.name if column else "text", "domain") if c in columns]
    decoder = load_decoder(tokenizer, path) if column else None
    batch: list[dict[str, Any]] = []

    def flush() -> list[dict[str, Any]]:
        ids = [column.ids(s[column.name], str(path)).tolist() for s in batch]
        texts = decoder.decode_batch(ids, skip_special_tokens=True)
        return [_record(s, t) for s, t in zip(batch, texts, strict=True)]

    samples = (s for r in readers for s in r.iter_samples(want))
    for s in itertools.islice(samples, limit):
        if decoder is None:
            yield _record(s, s["text"])
            continue
        batch.append(s)
        if len(batch) == BATCH:
            yield from flush()
            batch = []
    if batch:
        yield from flush()


def _record(sample: dict[str, Any], text: str) -> dict[str, Any]:
    rec = {"id": sample.get("id"), "text": text}
    if "domain" in sample:
        rec["domain"] = sample["domain"]
    return rec


def _open(path: Path, codec: str | None) -> Any:
    """A text file for writing, compressed with ``codec`` (``codecs.open_write``)."""
    import io

    return io.TextIOWrapper(open_write(path, codec), encoding="utf-8")


class Export(Command):
    name = "export"
    Config = ExportConfig

    def run(self, cfg: ExportConfig) -> dict[str, Any]:
        return export_jsonl(cfg)

    def dry_run(self, cfg: ExportConfig) -> dict[str, Any]:
        out = Path(cfg.output)
        return {"export": {"inputs": list(cfg.inputs), "output": cfg.output, "output_exists": out.exists()}}


def export_jsonl(cfg: ExportConfig) -> dict[str, Any]:
    """Write every sample of the MDS ``cfg.inputs`` to one JSONL file (.gz/.bz2/.xz/.zst: compressed as named)."""
    out = Path(cfg.output)
    if out.is_dir():
        raise ConfigError(f"export writes one file, but {out} is a folder; pass -o FILE.jsonl")
    if out.exists() and not cfg.overwrite:
        raise ConfigError(f"{out} exists; pass --overwrite to replace it")
    try:  # the name says how the bytes are compressed: never plain JSONL under a .bz2 or .br name
        codec = check_write_name(out.name)
    except ValueError as e:
        raise ConfigError(f"-o {out}: {e}") from None
    for p in cfg.inputs:
        dataset_readers(p)  # every input is checked before anything is written
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    n = chars = 0
    try:
        with _open(tmp, codec) as f:
            for p in cfg.inputs:
                for rec in iter_records(p, cfg.tokenizer):
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    n += 1
                    chars += len(rec["text"])
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    return {"stage": "export", "output": str(out), "format": "jsonl", "records": n, "characters": chars,
            "inputs": list(cfg.inputs)}


def show_samples(path: str | Path, n: int, tokenizer: str | None = None) -> list[dict[str, Any]]:
    """The first ``n`` samples of a dataset, decoded (for ``stats --show``)."""
    return list(iter_records(path, tokenizer, limit=n))
