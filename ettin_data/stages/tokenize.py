"""tokenize: text MDS (convert's output) -> token MDS, with the ``tokenizers`` library directly.

One task per input unit; the output unit keeps the input unit's relative name (several inputs: prefixed
with each input's folder name). Before any unit runs, the tokenizer is resolved once and its json is
written to ``OUTPUT/tokenizer.json``; every worker loads that file (once per process), so all units use
the same bytes, and later stages can load it offline.

Per unit, documents are streamed shard by shard and encoded in batches of at most ``batch_size``
documents and ``BATCH_CHARS`` characters, so memory does not grow with the input. The engine
(``--engine``, see ``engines/``) returns a batch as one flat id array plus lengths, which goes straight
into the shard bytes (``token_rows.py``: no per-document lists or dicts). ``tokenizers`` is the reference
(``encode_batch_fast``: ``encode_batch`` without character offsets, same ids; see ``engines/reference.py``);
``auto`` uses tokie behind an exactness guard, and a unit in which a verified document differs is redone
with the reference (counted: ``engine.mismatches``, ``engine.units_redone``). Truncation and padding stored
in a tokenizer.json are turned off: documents are always tokenized whole. A document with no content
tokens (nothing besides the special tokens the post-processor adds) is skipped and counted.

``--prefix-space``: a document that does not start with whitespace is tokenized as ``" " + text`` (the
tokenizer itself is unchanged), so with byte-level BPE its first word is ``Ġword``, the same id the word
gets mid-sentence. Unlike the pre-tokenizer's ``add_prefix_space``, it adds no space after special
tokens that occur inside the text. Tokenizers without a leading-space marker (WordPiece) are unaffected.

Output columns: ``id``, ``input_ids`` (``ndarray:uint32``, or ``uint16`` with ``--dtype uint16``),
``len`` and ``domain`` when the input has it. Dataset files: ``index.json``, ``tokenizer.json``,
``num_tokens.json`` and (written by the driver) ``ettin_meta.json`` with the tokenizer identity and the
``engine`` entry (requested, used, guard, fallback reason, documents by tokie / routed / verified,
mismatches, units redone).
"""

from __future__ import annotations

import dataclasses
import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import engines, progress
from .. import units as U
from ..config import TokenizeConfig
from ..dataset import NUM_TOKENS
from ..engines import Checked, Choice, Mismatch
from ..errors import ConfigError, InputError
from ..ids import fits, max_token_id, narrow
from ..jsonio import write_json_atomic
from ..mds import ShardWriter, UnitReader, find_units, read_index, write_root_index
from ..stage import Finished, Stage
from ..stats import Stats
from ..token_rows import token_samples
from ..tokenizer import (
    TOKENIZER_FILE,
    check_template,
    read_tokenizer,
    save_tokenizer_json,
    tokenizer_change,
    tokenizer_from_bytes,
    tokenizer_identity,
)

BATCH_CHARS = 8_000_000
MAX_1024 = 1024

__all__ = ["Tokenize", "Encoder"]

_WORKER: dict[str, Any] = {}  # per process: the tokenizer loaded from OUTPUT/tokenizer.json
_RESOLVED: dict[str, Any] = {}  # per process (the driver): the tokenizer resolved for the run's options


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


def resolve(cfg: TokenizeConfig, *, again: bool = False) -> tuple[bytes, Any]:
    """The tokenizer's json bytes and the parsed tokenizer, checked against the options (nothing is written).
    ``again``: the result of the last call for the same options in this process (check, then prepare)."""
    if again and _RESOLVED.get("cfg") == cfg:
        return _RESOLVED["val"]
    raw, where = read_tokenizer(cfg.tokenizer)
    tok = tokenizer_from_bytes(raw, where)
    if cfg.special_tokens:
        check_template(tok, where)
    if cfg.dtype != "uint32":  # tokenizers' ids are u32: only a narrower type needs the largest id
        top = max_token_id(tok)
        if not fits(cfg.dtype, top):
            raise ConfigError(f"--dtype {cfg.dtype} holds ids up to {np.iinfo(cfg.dtype).max:,}, but tokenizer "
                              f"{cfg.tokenizer!r} can emit id {top:,} (vocabulary, added tokens and "
                              "post-processor); use --dtype uint32")
    _RESOLVED.update(cfg=cfg, val=(raw, tok))
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


def _batches(reader: UnitReader, has_domain: bool, batch_size: int) -> Any:
    """``(ids, texts, domains or None)`` lists of at most ``batch_size`` documents and about BATCH_CHARS
    characters each, decoded straight from the shard bytes (``Shard.columns``: no dict per document)."""
    names = ("id", "text", "domain") if has_domain else ("id", "text")
    batch: list[tuple[Any, ...]] = []
    chars = 0
    for shard in reader.shards():
        for row in shard.columns(names):
            batch.append(row)
            chars += len(row[1])
            if len(batch) >= batch_size or chars >= BATCH_CHARS:
                yield _columns_of(batch, has_domain)
                batch, chars = [], 0
    if batch:
        yield _columns_of(batch, has_domain)


def _columns_of(rows: list[tuple[Any, ...]], has_domain: bool) -> tuple[list[Any], list[str], list[Any] | None]:
    cols = list(zip(*rows, strict=True))
    return list(cols[0]), list(cols[1]), list(cols[2]) if has_domain else None


def _with_prefix_space(text: str) -> str:
    """``--prefix-space``: a document that starts with a word (not whitespace) gets one space in front."""
    return " " + text if text and not text[0].isspace() else text


def _special_in_text(ids: np.ndarray, lengths: np.ndarray, keep: np.ndarray, special: np.ndarray,
                     added: bool) -> int:
    """How many kept documents contain a special-token string in the text itself (e.g. '[SEP]'), now a
    special id. With special tokens added, each document's first and last ids are not text. ``special``:
    a lookup table (True at the special ids), one gather per batch."""
    if not special.any() or not len(ids):
        return 0
    hit = np.flatnonzero(np.take(special, ids, mode="clip"))  # take: half the time of special[ids]
    if not len(hit):
        return 0
    ends = np.cumsum(lengths)
    doc = np.searchsorted(ends, hit, side="right")
    if added:
        start = ends[doc] - lengths[doc]
        inner = (lengths[doc] < 2) | ((hit != start) & (hit != ends[doc] - 1))
        doc = doc[inner]
    return int(np.count_nonzero(keep[np.unique(doc)]))


def _engine(path: Path, tok: Any, cfg: TokenizeConfig) -> tuple[Any, Choice]:
    """The engine of this run, selected once per process (per tokenizer file and options)."""
    key = ("engine", cfg.engine, cfg.split_special_tokens, cfg.verify)
    if _WORKER.get("engine_key") != key:
        _WORKER["engine"] = engines.select(cfg.engine, tok, path, split_special_tokens=cfg.split_special_tokens,
                                           verify=cfg.verify)
        _WORKER["engine_key"] = key
    return _WORKER["engine"]


@dataclass(frozen=True)
class Encoder:
    """What encoding needs per process: the tokenizer (from OUTPUT/tokenizer.json) set up for the options,
    and the engine selected by ``--engine`` (``choice`` says which one and why)."""

    tok: Any
    cfg: TokenizeConfig
    n_special: int
    special: np.ndarray  # bool lookup table: True at the special ids
    dtype: np.dtype
    engine: Any
    choice: Choice

    @classmethod
    def load(cls, cfg: TokenizeConfig) -> Encoder:
        """The encoder of ``cfg`` in this process (built once per tokenizer file and options)."""
        path = Path(cfg.output) / TOKENIZER_FILE
        tok = _worker_tokenizer(path)
        key = (cfg.engine, cfg.verify, cfg.split_special_tokens, cfg.special_tokens, cfg.dtype, cfg.prefix_space)
        if _WORKER.get("encoder_key") != key:
            _WORKER["encoder"] = cls._build(cfg, path, tok)
            _WORKER["encoder_key"] = key
        return _WORKER["encoder"]

    @classmethod
    def _build(cls, cfg: TokenizeConfig, path: Path, tok: Any) -> Encoder:
        tok.encode_special_tokens = cfg.split_special_tokens
        dtype = np.dtype(cfg.dtype)
        added = tok.get_added_tokens_decoder()
        # one slot past every special id: ids beyond the table are looked up clipped to that last (False) slot
        special = np.zeros(max([tok.get_vocab_size(with_added_tokens=True), *(i + 1 for i in added)]) + 1, bool)
        special[[i for i, a in added.items() if a.special]] = True
        n_special = tok.num_special_tokens_to_add(False) if cfg.special_tokens else 0
        engine, choice = _engine(path, tok, cfg)
        return cls(tok, cfg, n_special, special, dtype, engine, choice)

    def reference(self) -> Encoder:
        """The same encoder on the reference engine (a unit whose verification failed is redone with it)."""
        return dataclasses.replace(self, engine=engines.ReferenceEngine(self.tok))

    def encode_flat(self, texts: list[str], st: Stats, *, unit: str = "", doc_ids: list[str] | None = None,
                    first_index: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flat ids in the output dtype, int64 length per document, mask of the documents kept). Documents
        with no content tokens are not kept (counted in ``st``); ``unit``, ``doc_ids`` and ``first_index``
        (position of ``texts[0]`` in the unit) seed the guard's verification sample. Raises
        :class:`~ettin_data.engines.Mismatch` when a verified document differs from the reference."""
        cfg = self.cfg
        if cfg.prefix_space:
            texts = [_with_prefix_space(t) for t in texts]
        if isinstance(self.engine, Checked):
            ids, lengths = self.engine.encode(texts, cfg.special_tokens, unit=unit, doc_ids=doc_ids,
                                              first_index=first_index, st=st)
        else:
            ids, lengths = self.engine.encode(texts, cfg.special_tokens)
        keep = lengths > self.n_special
        st.add("skipped.empty_tokens", len(keep) - int(np.count_nonzero(keep)))
        if not cfg.split_special_tokens:
            st.add("documents_with_special_token_text",
                   _special_in_text(ids, lengths, keep, self.special, cfg.special_tokens))
        ids = narrow(ids, self.dtype, f"{unit or 'tokenize'}: --dtype {self.dtype}", "use --dtype uint32")
        return ids, lengths, keep


def token_columns(dtype: str, has_domain: bool) -> dict[str, str]:
    return {"id": "str", "input_ids": f"ndarray:{dtype}", "len": "int", **({"domain": "str"} if has_domain else {})}


def write_token_unit(dst: Path, batches: list[tuple[list[str], np.ndarray, np.ndarray, list[str] | None]],
                     columns: dict[str, str]) -> Stats:
    """Write encoded documents, batches of ``(ids, token ids back to back, lengths, domains)``, as one token unit
    into ``dst`` (prepare --keep-tokens): the rows tokenize writes."""
    st = Stats()
    with ShardWriter(dst, columns) as w:
        for doc_ids, ids, lengths, domains in batches:
            for data, _ in token_samples(doc_ids, ids, lengths, np.ones(len(lengths), bool),
                                         domains if "domain" in columns else None):
                w.write_raw(data)
            st.add("documents_written", len(lengths))
            st.add("tokens_written", int(np.sum(lengths)))
            st.add_lengths(lengths)
    return st


def _tokenize_unit(task: U.Task, dst: Path, cfg: TokenizeConfig, encoder: Encoder, reported: list[int]) -> Stats:
    """Encode one unit into the folder ``dst``. ``reported``: [documents, tokens] given to the progress bar so
    far (taken back if the unit is redone)."""
    reader = UnitReader(task.source)
    has_domain = "domain" in reader.columns
    missing = {"id", "text"} - set(reader.columns)
    if reader.columns and missing:
        raise InputError(f"{task.source}: missing column(s) {sorted(missing)}; columns present: "
                         f"{sorted(reader.columns)}")
    st = Stats()
    pos = 0
    writer = ShardWriter(dst, token_columns(cfg.dtype, has_domain))
    for doc_ids, texts, domains in _batches(reader, has_domain, cfg.batch_size):
        ids, lengths, keep = encoder.encode_flat(texts, st, unit=task.name, doc_ids=doc_ids, first_index=pos)
        pos += len(texts)
        for data, _ in token_samples(doc_ids, ids, lengths, keep, domains):
            writer.write_raw(data)
        kept = lengths[keep]
        st.add("documents_in", len(texts))
        st.add("documents_written", len(kept))
        st.add("tokens_written", int(kept.sum()))
        st.add_lengths(kept)
        progress.advance(docs=len(texts), tokens=int(kept.sum()))
        reported[0] += len(texts)
        reported[1] += int(kept.sum())
    writer.finish()
    if not reader.num_samples == st["documents_in"] == st["documents_written"] + st["skipped.empty_tokens"]:
        raise InputError(f"{task.source}: document accounting does not close ({reader.num_samples} in the index, "
                         f"{st['documents_in']} read, {st['documents_written']} written, "
                         f"{st['skipped.empty_tokens']} skipped); this is a bug")
    return st


def count_unit(st: Stats, choice: Choice) -> None:
    """Count the engines that encoded a unit (the driver's summary is checked against these counts)."""
    st.add(f"engine.units.{choice.used}")
    if choice.checker:
        st.add(f"engine.units_checked_by.{choice.checker}")


def _choice(cfg: TokenizeConfig, stats: Stats) -> Choice:
    """The engine choice of the run, for the summary. The driver loads no engine when the units' counts
    already say that every unit was encoded (and checked) as the choice made without loading predicts."""
    pre = engines.preselect(cfg.engine, _worker_tokenizer(Path(cfg.output) / TOKENIZER_FILE),
                            split_special_tokens=cfg.split_special_tokens, verify=cfg.verify)
    units = sum(n for k, n in stats.counts.items() if k.startswith("engine.units."))
    if pre.used == "tokenizers" or (units and stats[f"engine.units.{pre.used}"] == units and (
            not pre.checker or stats[f"engine.units_checked_by.{pre.checker}"] == units)):
        return pre
    return Encoder.load(cfg).choice  # a fallback decided by loading an engine (or nothing ran): select here


def engine_summary(choice: Choice, stats: Stats) -> dict[str, Any]:
    """The ``engine`` entry of the summary and ``ettin_meta.json``: what encoded, and the checks' counts."""
    return {**choice.record(), "documents_fast": stats["engine.fast"], "documents_routed": stats["engine.routed"],
            "documents_verified": stats["engine.verified"], "units_spot_checked": stats["engine.spot_checked"],
            "documents_checked": stats["engine.checked"], "disagreements": stats["engine.disagreements"],
            "mismatches": stats["engine.mismatches"], "units_redone": stats["engine.units_redone"]}


def num_tokens(stats: Stats) -> dict[str, int]:
    """``num_tokens.json``: total tokens, tokens counting each document at most 1024, documents."""
    return {
        "total_tokens": sum(n * c for n, c in stats.lengths.items()),
        "total_tokens_max_1024": sum(min(n, MAX_1024) * c for n, c in stats.lengths.items()),
        "documents": stats.samples,
    }


def render_engine(eng: dict[str, Any]) -> str:
    """One line: the engine used (and why not a fast one), and the checks' counts."""
    used = eng.get("used")
    skipped = f"; skipped: {'; '.join(eng['skipped'])}" if eng.get("skipped") and used != "tokenizers" else ""
    if used != "tokenizers":
        how = f"{used} {eng.get('version')}, " + (f"proven for {eng['guard']}" if eng.get("guard") else "unchecked")
        checks = ""
        if eng.get("verify") == "full":
            checks = (f", {eng.get('documents_checked', 0):,} checked by {eng.get('checker')} "
                      f"({eng.get('disagreements', 0):,} disagreements)")
        return (f"{how} (requested {eng.get('requested')}): {eng.get('documents_fast', 0):,} documents by {used}, "
                f"{eng.get('documents_routed', 0):,} routed to tokenizers{checks}, "
                f"{eng.get('documents_verified', 0):,} verified (+{eng.get('units_spot_checked', 0):,} unit starts), "
                f"{eng.get('mismatches', 0)} mismatches, {eng.get('units_redone', 0)} units redone{skipped}")
    why = f"; fallback: {eng['fallback']}" if eng.get("fallback") else ""
    return f"tokenizers (requested {eng.get('requested')}{why})"


class Tokenize(Stage):
    name = "tokenize"
    Config = TokenizeConfig
    lazy_inputs = True

    def plan(self, cfg: TokenizeConfig) -> list[U.Task]:
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
                    shards = read_index(src).shards
                except InputError:  # a broken unit index fails that unit alone, when it is processed
                    shards = []
                names = set(shards[0].column_names) if shards else {"id", "text"}
                if "text" not in names or "id" not in names:
                    hint = " (already tokenized?)" if "input_ids" in names else ""
                    raise InputError(f"{src}: tokenize needs 'id' and 'text' columns, found {sorted(names)}{hint}; "
                                     "pass a text dataset written by 'ettin-data convert'")
                tasks.append(U.Task(U.output_name(root, rel, many), str(src)))
        return tasks

    def check(self, cfg: TokenizeConfig) -> list[str]:
        """Resolve the tokenizer, check it fits the options and the output's tokenizer.json (read-only)."""
        raw, _ = resolve(cfg)
        return tokenizer_change(cfg.output, raw, cfg.overwrite)

    def prepare(self, cfg: TokenizeConfig) -> tuple[bytes, Any]:
        """Write ``OUTPUT/tokenizer.json`` (the output is locked by then: see the driver)."""
        raw, tok = resolve(cfg, again=True)
        _worker_tokenizer(save_tokenizer_json(raw, Path(cfg.output)), tok)
        return raw, tok

    def process_unit(self, task: U.Task, cfg: TokenizeConfig, dst: Path) -> Stats:
        encoder = Encoder.load(cfg)
        reported = [0, 0]
        try:
            st = _tokenize_unit(task, dst, cfg, encoder, reported)
        except Mismatch:  # the fast engine differed on a verified document: the whole unit comes from the reference
            progress.advance(docs=-reported[0], tokens=-reported[1])  # the redo reports the unit again
            U.empty(dst)
            st = _tokenize_unit(task, dst, cfg, encoder.reference(), [0, 0])
            st.add("engine.mismatches")
            st.add("engine.units_redone")
        count_unit(st, encoder.choice)
        return st

    def finish(self, cfg: TokenizeConfig, stats: Stats, tasks: list[U.Task]) -> Finished:
        out = Path(cfg.output)
        write_root_index(out, [t.name for t in tasks])
        counts = num_tokens(stats)
        write_json_atomic(out / NUM_TOKENS, counts)
        raw = (out / TOKENIZER_FILE).read_bytes()
        tok = _worker_tokenizer(out / TOKENIZER_FILE)
        identity = tokenizer_identity(tok, cfg.tokenizer, raw, special_tokens_added=cfg.special_tokens,
                                      prefix_space=cfg.prefix_space)
        engine = engine_summary(_choice(cfg, stats), stats)
        return Finished({
            "tokenizer": identity,
            "engine": engine,
            "documents": stats["documents_written"],
            "documents_in": stats["documents_in"],
            "skipped": {"empty_tokens": stats["skipped.empty_tokens"]},
            "documents_with_special_token_text": stats["documents_with_special_token_text"],
            "tokens": counts["total_tokens"],
            "tokens_max_1024": counts["total_tokens_max_1024"],
            "length_percentiles": stats.percentiles((0, 50, 90, 99, 100)),
            "dtype": cfg.dtype,
        }, {"tokenizer": identity, "engine": engine})

    def render(self, summary: dict[str, Any]) -> None:
        from ..report import print_summary

        shown = dict(summary)
        eng = shown.pop("engine", None)
        if isinstance(eng, dict):
            shown["engine"] = render_engine(eng)
        tok = shown.pop("tokenizer", None)
        if isinstance(tok, dict):
            shown["tokenizer"] = (f"{tok.get('name')} (vocab {tok.get('vocab_size'):,}, bos {tok.get('bos_id')}, "
                                  f"eos {tok.get('eos_id')}, sha256 {str(tok.get('sha256'))[:12]})")
        print_summary(shown)
