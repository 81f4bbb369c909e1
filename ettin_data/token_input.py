"""A token dataset as the stages that read tokens see it (chunk, sample *, finalize): which tokenizer made
its ids, where the ids are, and, for a dataset another tool wrote, what was checked and what the output
records about it.

ettin-data's own token datasets say who tokenized them (``ettin_meta.json["tokenizer"]`` and the exact
``tokenizer.json``). A dataset written by another tool (mosaicml-streaming's ``MDSWriter``, the seed's scripts,
Ettin's published data, llm-foundry) has no ``ettin_meta.json``: its tokenizer is named with ``--tokenizer``,
which gives the id range and the BOS/EOS and special ids. Layouts recognised, one document (or chunk) per sample:

  input_ids  ``ndarray:<integer type>`` (ettin-data, the seed's scripts, Ettin's data, MDSWriter users), or
             ``bytes`` of little-endian int64 (ModernBERT's streaming layout)
  tokens     the same encodings under llm-foundry's column name. llm-foundry's ``concat_tokens`` windows
             (documents joined by EOS into equal-length samples) are refused: they hold no whole documents.

``id`` is optional (a sample without one is ``<unit>:<index>``), ``domain`` is kept. Checked before any unit
runs, on the first shard of each input: ids are non-negative and below the tokenizer's id range (vocabulary and
added tokens); when the tokenizer's post-processor adds tokens (``[CLS] ... [SEP]``) either every document
carries them or none does. Every id of every later shard is checked against the id range as a stage reads it
(:meth:`TokenColumn.lengths` with :attr:`TokenInput.check_limit`; ettin-data's own datasets were checked when
written and are not read again for it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import META, SPLITS, TOKENIZER_FILE, read_meta
from .errors import ConfigError, InputError
from .ids import id_bound
from .mds import INDEX, Shard, find_units, load_shard, read_index

__all__ = ["TokenColumn", "TokenInput", "token_column", "open_token_input", "id_limit", "check_ids", "PROBE_SAMPLES"]

TOKEN_NAMES = ("input_ids", "tokens")
PROBE_SAMPLES = 1000  # documents of the first shard checked before any unit runs


@dataclass(frozen=True)
class TokenColumn:
    """Where a dataset's ids are: ``name`` (input_ids or tokens) and its MDS ``encoding``."""

    name: str
    encoding: str

    @property
    def standard(self) -> bool:
        """``input_ids`` as an integer ndarray: what every stage of this tool writes and reads as it is."""
        return self.name == "input_ids" and self.encoding.startswith("ndarray")

    def ids(self, value: Any, where: str = "") -> np.ndarray:
        """The ids of one decoded column value as a 1-D integer array."""
        if self.encoding == "bytes":
            if len(value) % 8:
                raise InputError(f"{where}: {self.name} holds {len(value)} bytes, not whole int64 ids")
            return np.frombuffer(value, "<i8")
        arr = np.asarray(value)
        if arr.dtype.kind not in "iu" or arr.ndim != 1:
            raise InputError(f"{where}: {self.name} is a {arr.ndim}-D {arr.dtype} array, expected 1-D integer ids")
        return arr

    def lengths(self, shard: Shard, limit: int | None = None) -> np.ndarray:
        """The token count of every sample of ``shard``, read off the shard bytes for all samples at once (a typed
        ndarray or int64 bytes column; sample by sample otherwise). With ``limit``, every id is checked to lie in
        [0, limit): InputError naming the shard file and the sample (its index in that file) otherwise."""
        span = self._spans(shard)
        if span is None:
            counts = []
            for k, (value,) in enumerate(shard.columns((self.name,))):
                ids = self.ids(value, f"{shard.path}: sample {k}")
                if limit is not None:
                    check_ids(ids, limit, f"{shard.path}: sample {k}")
                counts.append(len(ids))
            return np.asarray(counts, np.int64)
        start, count, dtype = span
        if limit is not None and count.size:
            u8 = np.frombuffer(shard.data, np.uint8)
            n = dtype.itemsize
            flat = np.concatenate([u8[a:a + c * n] for a, c in zip(start.tolist(), count.tolist(), strict=True)])
            flat = flat.view(dtype)
            bad = (flat >= limit) | (flat < 0) if dtype.kind == "i" else flat >= limit
            if bad.any():
                ends = np.cumsum(count)
                k = int(np.searchsorted(ends, int(np.argmax(bad)), side="right"))
                check_ids(flat[int(ends[k] - count[k]):int(ends[k])], limit, f"{shard.path}: sample {k}")
        return count

    def _spans(self, shard: Shard) -> tuple[np.ndarray, np.ndarray, np.dtype] | None:
        """(start, ids, dtype) of the column's values in every sample of ``shard``; None when they must be decoded
        one by one (an ``ndarray`` without its type in the encoding, a value that is not 1-D)."""
        if self.encoding == "bytes":
            try:
                return shard.id_spans(self.name)
            except ValueError as e:
                raise InputError(f"{shard.path}: {e}") from None
        parts = self.encoding.split(":")
        if len(parts) != 2:  # no type (decoded per value) or a fixed shape in the encoding (no header to read)
            return shard.array_spans(self.name) if len(parts) == 3 else None
        u8 = np.frombuffer(shard.data, np.uint8)
        heads = u8[shard.spans(self.name)[0]]
        if np.any(heads >> 2 != 1):  # a value of another rank: its one line comes from ids()
            return None
        return shard.array_spans(self.name)


def token_column(columns: dict[str, str], where: str) -> TokenColumn:
    """The token column among ``columns`` (input_ids first, then llm-foundry's tokens); one line otherwise."""
    for name in TOKEN_NAMES:
        enc = columns.get(name)
        if enc is None:
            continue
        parts = enc.split(":")
        if enc == "bytes" or (parts[0] == "ndarray" and (len(parts) == 1 or np.dtype(parts[1]).kind in "iu")
                              and (len(parts) < 3 or "," not in parts[2])):
            return TokenColumn(name, enc)
        raise InputError(f"{where}: column {name!r} is {enc!r}; token ids must be an integer ndarray "
                         "(ndarray:uint32, ...) or bytes of int64")
    raise InputError(f"{where}: no token column ('input_ids' or 'tokens'; columns: {', '.join(sorted(columns))}); "
                     "text data is tokenized with 'ettin-data tokenize'")


def id_limit(tok: dict[str, Any]) -> int | None:
    """One past the largest id a tokenizer identity can emit (``ids.id_bound``: its ``max_id``, else the
    vocabulary size of identities recorded before it; and its special ids)."""
    bound = id_bound(tok)
    if bound is None:
        return None
    return max([bound, *(int(i) + 1 for i in tok.get("special_ids") or [])])


@dataclass(frozen=True)
class TokenInput:
    """One token dataset as a stage reads it. ``tokenizer`` is its identity (``ettin_meta.json`` form);
    ``tokenizer_bytes`` the tokenizer.json it came from (None when a native dataset has none); ``foreign`` the
    record of a dataset another tool wrote (None for ettin-data's own)."""

    root: Path
    tokenizer: dict[str, Any] | None
    column: TokenColumn
    foreign: dict[str, Any] | None = None
    tokenizer_bytes: bytes | None = field(default=None, repr=False)

    @property
    def limit(self) -> int | None:
        """One past the largest id the tokenizer can emit (vocabulary, added and special tokens)."""
        return id_limit(self.tokenizer) if self.tokenizer else None

    @property
    def check_limit(self) -> int | None:
        """The id range every id is checked against as a stage reads it: the tokenizer's for a dataset another tool
        wrote; None for ettin-data's own (its ids were checked when they were written)."""
        return self.limit if self.foreign is not None else None


def _meta_root(root: Path) -> dict[str, Any] | None:
    """The ``ettin_meta.json`` describing ``root``: its own, or its parent's for a split folder (train/)."""
    meta = read_meta(root, strict=True)
    if meta is None and root.name in SPLITS:
        meta = read_meta(root.parent, strict=True)
    return meta


def _first_unit(root: Path, units: list[str] | None) -> Path:
    names = units if units is not None else find_units(root)
    if not names:
        raise InputError(f"{root}: no MDS units found (no index.json here or below)")
    return root / names[0] if names[0] else root


def _columns(unit: Path) -> dict[str, str]:
    shards = read_index(unit).shards
    return shards[0].columns if shards else {}


def open_token_input(root: str | Path, spec: str | None, *, units: list[str] | None = None,
                     need_tokenizer: bool = True) -> TokenInput:
    """Read what a stage needs of the token dataset at ``root``. ``spec`` is ``--tokenizer``: required for a
    dataset another tool wrote (no ``ettin_meta.json``), and when given for one of ours it must be the tokenizer
    it records. ``units``: the dataset's units when the caller found them already. ``need_tokenizer`` False: a
    native dataset that records no tokenizer is accepted (tokenizer None)."""
    root = Path(root)
    meta = _meta_root(root)
    tok = meta.get("tokenizer") if meta is not None and isinstance(meta.get("tokenizer"), dict) else None
    if meta is not None and tok is None and need_tokenizer:
        raise InputError(f"{root / META} has no 'tokenizer' entry (stage {meta.get('stage')!r}): this stage "
                         "needs a token dataset; run 'ettin-data tokenize' first")
    first = _first_unit(root, units)
    column = token_column(_columns(first), str(first / INDEX))
    if meta is not None:
        raw = None
        if spec is not None:
            raw = _spec_bytes(spec)
            sha = hashlib.sha256(raw).hexdigest()
            if tok is not None and tok.get("sha256") not in (None, sha):
                raise ConfigError(f"{root} was tokenized with {tok.get('name')!r} (sha256 {str(tok['sha256'])[:12]}), "
                                  f"but --tokenizer {spec} is another tokenizer (sha256 {sha[:12]}); drop --tokenizer "
                                  "(the dataset records its own)")
        path = root / TOKENIZER_FILE
        if raw is None and path.is_file():
            raw = path.read_bytes()
        return TokenInput(root, tok, column, None, raw)
    if spec is None:
        raise InputError(f"{root} has no {META}: it was not written by ettin-data, so its tokenizer is unknown; pass "
                         "--tokenizer with the tokenizer that produced its ids (a tokenizer.json, a folder holding "
                         "one, builtin:modernbert or a hub name)")
    return _foreign(root, spec, first, column, units)


def _spec_bytes(spec: str) -> bytes:
    from .tokenizer import read_tokenizer

    return read_tokenizer(spec)[0]


_PARSED: dict[str, Any] = {}  # sha256 of a tokenizer.json -> its parsed Tokenizer (a run opens its input ~3 times)


def _parsed(raw: bytes, where: str) -> Any:
    from .tokenizer import tokenizer_from_bytes

    key = hashlib.sha256(raw).hexdigest()
    if key not in _PARSED:
        _PARSED.clear()
        _PARSED[key] = tokenizer_from_bytes(raw, where)
    return _PARSED[key]


def _foreign(root: Path, spec: str, first: Path, column: TokenColumn, units: list[str] | None) -> TokenInput:
    from .tokenizer import read_tokenizer, template_ids, tokenizer_identity

    raw, where = read_tokenizer(spec)
    tok = _parsed(raw, where)
    head, tail = template_ids(raw, tok.token_to_id)
    probed = _probe(first, column, tok)
    docs = probed or []
    carried = _carried(docs, head, tail, str(first))
    ident = tokenizer_identity(tok, spec, raw, special_tokens_added=carried)
    limit = id_limit(ident)
    for k, ids in enumerate(docs):
        if ids.size and (int(ids.min()) < 0 or (limit is not None and int(ids.max()) >= limit)):
            bad = int(ids.max()) if int(ids.min()) >= 0 else int(ids.min())
            raise InputError(f"{first}: sample {k} holds token id {bad}, outside tokenizer {spec!r} (ids "
                             f"0..{limit - 1} incl. added tokens); pass the --tokenizer that produced this dataset")
    if column.name == "tokens":
        _refuse_windows(docs, ident, str(first))
    names = units if units is not None else find_units(root)
    record = {"path": str(root), "columns": _columns(first), "token_column": column.name,
              "encoding": column.encoding, "tokenizer": spec, "tokenizer_sha256": ident["sha256"],
              "units": len(names), "documents_carry_special_tokens": carried,
              "checked": (f"first {len(docs)} sample(s) of {first.relative_to(root).as_posix() or '.'}: ids in "
                          f"[0, {limit}), special tokens added to all or none; " if probed is not None else "")
              + f"every id below {limit} as read"}
    return TokenInput(root, ident, column, record, raw)


def _probe(unit: Path, column: TokenColumn, tok: Any) -> list[np.ndarray] | None:
    """The first shard's documents (at most PROBE_SAMPLES); None when its files are not here (object storage
    fetches shards per unit: the ids are then checked as they are read)."""
    shards = read_index(unit).shards
    if not shards:
        return []
    first = shards[0]
    if not first.present(unit):
        return None
    shard = load_shard(unit, first)
    out = []
    for k, s in enumerate(shard.samples({column.name})):
        if k >= PROBE_SAMPLES:
            break
        out.append(column.ids(s[column.name], f"{shard.path}: sample {k}"))
    return out


def _carried(docs: list[np.ndarray], head: int | None, tail: int | None, where: str) -> bool:
    """Whether the documents carry the tokens the tokenizer's post-processor adds (all of them, or none)."""
    if head is None and tail is None or not docs:
        return True

    def framed(ids: np.ndarray) -> bool:
        return len(ids) > 0 and (head is None or int(ids[0]) == head) and (tail is None or int(ids[-1]) == tail)

    flags = [framed(d) for d in docs]
    if all(flags) or not any(flags):
        return flags[0]
    raise InputError(f"{where}: sample {flags.index(True)} carries the tokens the tokenizer adds ({head} ... {tail}) "
                     f"but sample {flags.index(False)} does not: were its documents tokenized by one tokenizer with "
                     "one setting? pass the --tokenizer that produced them")


def _refuse_windows(docs: list[np.ndarray], tok: dict[str, Any], where: str) -> None:
    """llm-foundry's concat_tokens: equal-length samples that hold a separator (EOS/BOS) inside."""
    seps = {i for i in (tok.get("eos_id"), tok.get("bos_id")) if i is not None}
    if len(docs) < 2 or len({len(d) for d in docs}) != 1 or not seps:
        return
    for k, d in enumerate(docs):
        inner = np.isin(d[1:-1], list(seps))
        if inner.any():
            raise InputError(f"{where}: sample {k} holds separator id {int(d[1:-1][inner][0])} inside, and every "
                             f"sample has {len(d)} tokens: llm-foundry's concat_tokens windows join documents; "
                             "chunking needs one document per sample (convert and tokenize the text instead)")


def check_ids(ids: np.ndarray, limit: int | None, where: str) -> None:
    """Every id of a document in [0, limit): one line naming the document otherwise."""
    if not ids.size:
        return
    top = int(ids.max())
    low = int(ids.min()) if ids.dtype.kind == "i" else 0
    if low < 0 or (limit is not None and top >= limit):
        raise InputError(f"{where} has token id {low if low < 0 else top} outside the tokenizer's ids "
                         f"(0..{(limit or 1) - 1}); was it tokenized with another tokenizer?")
