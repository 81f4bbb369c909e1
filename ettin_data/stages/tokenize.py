"""tokenize: text MDS (convert's output) -> token MDS, with the ``tokenizers`` library directly.

One task per input unit; the output unit keeps the input unit's relative name (several inputs: prefixed
with each input's folder name). Before any unit runs, the tokenizer is resolved once and its json is
written to ``OUTPUT/tokenizer.json``; every worker loads that file (once per process), so all units use
the same bytes, and later stages can load it offline.

Per unit, documents are streamed shard by shard and encoded with ``encode_batch`` in batches of at most
``batch_size`` documents and ``BATCH_CHARS`` characters (the encodings of a batch take ~115 bytes per
token), so memory does not grow with the input. (``encode_batch_fast`` gives the same ids but measured
~10% slower here with tokenizers 0.22, so it is not used.) Truncation and padding stored in
a tokenizer.json are turned off: documents are always tokenized whole. A document with no content
tokens (nothing besides the special tokens the post-processor adds) is skipped and counted.

``--prefix-space``: a document that does not start with whitespace is tokenized as ``" " + text`` (the
tokenizer itself is unchanged), so with byte-level BPE its first word is ``Ġword``, the same id the word
gets mid-sentence. Unlike the pre-tokenizer's ``add_prefix_space``, it adds no space after special
tokens that occur inside the text. Tokenizers without a leading-space marker (WordPiece) are unaffected.

Output columns: ``id``, ``input_ids`` (``ndarray:uint32``, or ``uint16`` with ``--dtype uint16``),
``len`` and ``domain`` when the input has it. Dataset files: ``index.json``, ``tokenizer.json``,
``num_tokens.json`` and (written by the driver) ``ettin_meta.json`` with the tokenizer identity.
"""

from __future__ import annotations

import glob
import hashlib
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import progress
from .. import units as U
from ..config import TokenizeConfig
from ..errors import ConfigError, InputError
from ..mds import ShardWriter, UnitReader, find_units, read_index, write_json_atomic, write_root_index
from ..stats import Stats
from ..tokenizer import (
    TOKENIZER_FILE,
    read_tokenizer,
    save_tokenizer_json,
    tokenizer_from_bytes,
    tokenizer_identity,
)

NAME = "tokenize"
NUM_TOKENS = "num_tokens.json"
BATCH_CHARS = 8_000_000
MAX_1024 = 1024
_TYPECODES = {"uint16": "H", "uint32": "I" if array("I").itemsize == 4 else "L"}

__all__ = ["NAME", "NUM_TOKENS", "Encoder", "plan", "prepare", "process_unit", "finish", "run", "render"]

_WORKER: dict[str, Any] = {}  # per process: the tokenizer loaded from OUTPUT/tokenizer.json


def _inputs(cfg: TokenizeConfig) -> list[Path]:
    roots: list[Path] = []
    for inp in cfg.inputs:
        if any(c in inp for c in "*?["):
            matches = sorted(glob.glob(inp))
            if not matches:
                raise InputError(f"{inp}: no folder matches this pattern")
            roots.extend(Path(m) for m in matches)
        else:
            roots.append(Path(inp))
    for root in roots:
        if not root.is_dir():
            raise InputError(f"{root} is not a folder (tokenize reads a text MDS dataset, e.g. convert's output)")
    return roots


def plan(cfg: TokenizeConfig) -> list[U.Task]:
    """One task per input unit, in input order then unit order."""
    roots = _inputs(cfg)
    many = len(roots) > 1
    tasks = []
    for root in roots:
        units = find_units(root)
        if not units:
            raise InputError(f"{root}: no MDS units (folders with index.json); pass convert's output folder")
        for rel in units:
            src = root / rel
            try:
                shards = read_index(src)["shards"]
            except InputError:  # a broken unit index fails that unit alone, when it is processed
                shards = []
            names = set(shards[0]["column_names"]) if shards else {"id", "text"}
            if "text" not in names or "id" not in names:
                hint = " (already tokenized?)" if "input_ids" in names else ""
                raise InputError(f"{src}: tokenize needs 'id' and 'text' columns, found {sorted(names)}{hint}; "
                                 "pass a text dataset written by 'ettin-data convert'")
            tasks.append(U.Task(U.output_name(root, rel, many), str(src)))
    return tasks


def prepare(cfg: TokenizeConfig) -> tuple[bytes, Any]:
    """Resolve the tokenizer once, check it fits the options, and write ``OUTPUT/tokenizer.json``."""
    raw, tok = resolve(cfg)
    _worker_tokenizer(save_tokenizer_json(raw, Path(cfg.output)), tok)
    return raw, tok


def resolve(cfg: TokenizeConfig) -> tuple[bytes, Any]:
    """The tokenizer's json bytes and the parsed tokenizer, checked against the options and against an output
    already tokenized with another tokenizer.json (nothing is written)."""
    raw, where = read_tokenizer(cfg.tokenizer)
    tok = tokenizer_from_bytes(raw, where)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    if cfg.dtype == "uint16" and vocab > 1 << 16:
        raise ConfigError(f"--dtype uint16 holds ids < 65536, but tokenizer {cfg.tokenizer!r} has {vocab:,} ids; "
                          "use --dtype uint32")
    out = Path(cfg.output)
    dest = out / TOKENIZER_FILE
    if dest.is_file() and not cfg.overwrite and dest.read_bytes() != raw:
        done = list(out.rglob(U.DONE))
        if done:
            old = hashlib.sha256(dest.read_bytes()).hexdigest()[:12]
            new = hashlib.sha256(raw).hexdigest()[:12]
            raise ConfigError(f"{out} holds {len(done)} unit(s) tokenized with another tokenizer.json (sha256 "
                              f"{old}..., now {new}...); pass --overwrite to redo them, or choose a new output folder")
    return raw, tok


def _cache_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def _worker_tokenizer(path: Path, tok: Any = None) -> Any:
    """The tokenizer of ``path``, loaded once per process (reloaded only if the file changes); ``tok``:
    the tokenizer just parsed from that file's bytes (saves parsing it again in this process)."""
    key = _cache_key(path)
    if _WORKER.get("key") != key:
        _WORKER.clear()
        tok = tok if tok is not None else tokenizer_from_bytes(path.read_bytes(), str(path))
        tok.no_truncation()
        tok.no_padding()
        _WORKER.update(key=key, tok=tok)
    return _WORKER["tok"]


def _batches(reader: UnitReader, columns: list[str], batch_size: int) -> Any:
    """Lists of samples, at most ``batch_size`` documents and about BATCH_CHARS characters each."""
    batch: list[dict[str, Any]] = []
    chars = 0
    for sample in reader.iter_samples(columns):
        batch.append(sample)
        chars += len(sample["text"])
        if len(batch) >= batch_size or chars >= BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _with_prefix_space(text: str) -> str:
    """``--prefix-space``: a document that starts with a word (not whitespace) gets one space in front."""
    return " " + text if text and not text[0].isspace() else text


def _special_in_text(ids: np.ndarray, special: np.ndarray, added: bool) -> bool:
    """Does the text itself contain a special-token string (e.g. '[SEP]'), now a special id?"""
    content = ids[1:-1] if added and len(ids) >= 2 else ids
    return bool(len(special)) and bool(np.isin(content, special).any())


@dataclass(frozen=True)
class Encoder:
    """What encoding needs per process: the tokenizer (from OUTPUT/tokenizer.json) set up for the options."""

    tok: Any
    cfg: TokenizeConfig
    n_special: int
    special: np.ndarray
    dtype: np.dtype
    typecode: str

    @classmethod
    def load(cls, cfg: TokenizeConfig) -> Encoder:
        tok = _worker_tokenizer(Path(cfg.output) / TOKENIZER_FILE)
        tok.encode_special_tokens = cfg.split_special_tokens
        dtype = np.dtype(cfg.dtype)
        special = np.array(sorted(i for i, a in tok.get_added_tokens_decoder().items() if a.special), dtype)
        n_special = tok.num_special_tokens_to_add(False) if cfg.special_tokens else 0
        return cls(tok, cfg, n_special, special, dtype, _TYPECODES[cfg.dtype])

    def encode(self, texts: list[str], st: Stats) -> list[np.ndarray | None]:
        """Ids of each text (None: no content tokens, skipped and counted in ``st``)."""
        cfg = self.cfg
        if cfg.prefix_space:
            texts = [_with_prefix_space(t) for t in texts]
        out: list[np.ndarray | None] = []
        for enc in self.tok.encode_batch(texts, add_special_tokens=cfg.special_tokens):
            ids = np.frombuffer(array(self.typecode, enc.ids), self.dtype)  # 3x faster than np.array(list)
            if len(ids) <= self.n_special:
                st.add("skipped.empty_tokens")
                out.append(None)
                continue
            if not cfg.split_special_tokens and _special_in_text(ids, self.special, cfg.special_tokens):
                st.add("documents_with_special_token_text")
            out.append(ids)
        return out


def token_columns(dtype: str, has_domain: bool) -> dict[str, str]:
    return {"id": "str", "input_ids": f"ndarray:{dtype}", "len": "int", **({"domain": "str"} if has_domain else {})}


def write_token_unit(dst: Path, rows: list[tuple[str, np.ndarray, str | None]], columns: dict[str, str]) -> Stats:
    """Write encoded documents ``(id, ids, domain)`` as one token unit into ``dst`` (prepare --keep-tokens)."""
    st = Stats()
    with ShardWriter(dst, columns) as w:
        for doc_id, ids, domain in rows:
            w.write({"id": doc_id, "input_ids": ids, "len": len(ids),
                     **({"domain": domain} if "domain" in columns else {})})
    lengths = [len(ids) for _, ids, _ in rows]
    st.add("documents_written", len(rows))
    st.add("tokens_written", sum(lengths))
    st.add_lengths(lengths)
    return st


def process_unit(task: U.Task, cfg: TokenizeConfig) -> Stats:
    out = Path(cfg.output)
    encoder = Encoder.load(cfg)
    reader = UnitReader(task.source)
    has_domain = "domain" in reader.columns
    read_cols = ["id", "text", *(["domain"] if has_domain else [])]
    columns = token_columns(cfg.dtype, has_domain)
    st = Stats()
    with U.atomic_dir(out / task.name) as tmp:
        writer = ShardWriter(tmp, columns)
        for batch in _batches(reader, read_cols, cfg.batch_size):
            lengths = []
            for sample, ids in zip(batch, encoder.encode([s["text"] for s in batch], st), strict=True):
                if ids is None:
                    continue
                row = {"id": sample["id"], "input_ids": ids, "len": len(ids)}
                if has_domain:
                    row["domain"] = sample["domain"]
                writer.write(row)
                lengths.append(len(ids))
            st.add("documents_in", len(batch))
            st.add("documents_written", len(lengths))
            st.add("tokens_written", sum(lengths))
            st.add_lengths(lengths)
            progress.advance(docs=len(batch), tokens=sum(lengths))
        writer.finish()
    if not reader.num_samples == st["documents_in"] == st["documents_written"] + st["skipped.empty_tokens"]:
        raise InputError(f"{task.source}: document accounting does not close ({reader.num_samples} in the index, "
                         f"{st['documents_in']} read, {st['documents_written']} written, "
                         f"{st['skipped.empty_tokens']} skipped); this is a bug")
    U.mark_done(out / task.name, st)
    return st


def num_tokens(stats: Stats) -> dict[str, int]:
    """``num_tokens.json``: total tokens, tokens counting each document at most 1024, documents."""
    return {
        "total_tokens": sum(n * c for n, c in stats.lengths.items()),
        "total_tokens_max_1024": sum(min(n, MAX_1024) * c for n, c in stats.lengths.items()),
        "documents": stats.samples,
    }


def finish(cfg: TokenizeConfig, stats: Stats, tasks: list[U.Task]) -> dict[str, Any]:
    out = Path(cfg.output)
    write_root_index(out, [t.name for t in tasks])
    counts = num_tokens(stats)
    write_json_atomic(out / NUM_TOKENS, counts)
    raw = (out / TOKENIZER_FILE).read_bytes()
    tok = _worker_tokenizer(out / TOKENIZER_FILE)
    identity = tokenizer_identity(tok, cfg.tokenizer, raw, special_tokens_added=cfg.special_tokens,
                                  prefix_space=cfg.prefix_space)
    return {
        "tokenizer": identity,
        "documents": stats["documents_written"],
        "documents_in": stats["documents_in"],
        "skipped": {"empty_tokens": stats["skipped.empty_tokens"]},
        "documents_with_special_token_text": stats["documents_with_special_token_text"],
        "tokens": counts["total_tokens"],
        "tokens_max_1024": counts["total_tokens_max_1024"],
        "length_percentiles": stats.percentiles((0, 50, 90, 99, 100)),
        "dtype": cfg.dtype,
    }


def run(cfg: TokenizeConfig, quiet: bool = True) -> dict[str, Any]:
    from ..pipeline import run_stage

    plan(cfg)  # bad inputs are reported before the tokenizer is resolved or anything is written
    from ..outputs import check_outputs

    check_outputs(cfg)  # before tokenizer.json is written
    prepare(cfg)
    return run_stage(__import__(__name__, fromlist=["NAME"]), cfg, quiet=quiet)


def render(summary: dict[str, Any]) -> None:
    from ..report import print_summary

    shown = dict(summary)
    tok = shown.pop("tokenizer", None)
    if isinstance(tok, dict):
        shown["tokenizer"] = (f"{tok.get('name')} (vocab {tok.get('vocab_size'):,}, bos {tok.get('bos_id')}, "
                              f"eos {tok.get('eos_id')}, sha256 {str(tok.get('sha256'))[:12]})")
    print_summary(shown)
