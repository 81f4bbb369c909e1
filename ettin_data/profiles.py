"""``finalize --for LOADER``: the output each training loader reads correctly, and its checks.

Each profile follows the loader's own read path (checked in its source, see README "Train with it"):

  modernbert            ModernBERT ``streaming: false`` (``NoStreamingDataset``, what Ettin trained with):
                        raw ``.mds`` shards, ``input_ids`` any integer array. Today's output, unchanged.
  modernbert-streaming  ModernBERT ``streaming: true`` (``StreamingTextDataset._read_binary_tokenized_sample``):
                        ``np.frombuffer(sample["input_ids"], np.int64)``, length from ``len`` (else
                        ``len(input_ids)``). Written as ``ndarray:int64``: the decoded array's buffer *is*
                        the int64 ids, ``len()`` is the token count, and ``streaming: false`` reads it too
                        (a ``bytes`` column would break ``streaming: false`` and ``len()``).
                        ``--keep-compressed`` writes zstd shards (object storage).
  llm-foundry           llm-foundry ``StreamingTextDataset``: a ``tokens`` column; an ndarray is used as is
                        (cast to int64), bytes are read as ``token_encoding_type`` (default int64); older
                        releases read ``np.frombuffer(tokens, int64)`` only. Written as ``ndarray:int64``
                        (every release reads it; ``--dtype uint32`` halves it for releases with the
                        ndarray branch).
  numpy                 OLMo/Megatron-style flat tokens per split: ``tokens.npy`` (raw memmap of the ids, no
                        header, as ``dolma tokens`` writes; uint16 when the vocabulary fits, else uint32),
                        ``offsets.npy`` (int64, chunk i = ``tokens[offsets[i]:offsets[i+1]]``),
                        ``metadata.csv.gz`` (start,end,id,dataset per chunk) and ``header.json``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import MANIFEST, SPLITS, read_meta
from .errors import InputError
from .ids import id_bound, narrow
from .jsonio import write_json_atomic
from .mds import INDEX, UnitReader, read_index
from .safefile import atomic_file

__all__ = ["PROFILES", "DEFAULT", "FIX", "CONVERTED", "name", "output_columns", "source_column", "can_link",
           "compression", "flat_dtype", "to_numpy", "is_flat", "read_flat", "verify_profile", "column_problem",
           "sample_problems", "describe_flat", "loader_warnings"]

PROFILES = ("modernbert", "modernbert-streaming", "llm-foundry", "numpy")
DEFAULT = "modernbert"
FIX = "ettin-data finalize --for modernbert-streaming"
CONVERTED = "ndarray:uint32"  # input_ids of another token layout (tokens, int64 bytes): what tokenize and chunk write
HEADER, TOKENS, OFFSETS, METADATA = "header.json", "tokens.npy", "offsets.npy", "metadata.csv.gz"
FLAT_FORMAT = "ettin-data flat tokens v1"
_TOKEN_COLUMN = {"modernbert": "input_ids", "modernbert-streaming": "input_ids", "llm-foundry": "tokens"}


def name(cfg: Any) -> str:
    return getattr(cfg, "loader", None) or DEFAULT


def output_columns(cols: dict[str, str], cfg: Any) -> dict[str, str]:
    """Column encodings finalize writes for the profile (after --columns/--dtype narrowing)."""
    prof = name(cfg)
    if "input_ids" not in cols or prof not in ("modernbert-streaming", "llm-foundry"):
        return cols
    out = dict(cols)
    if prof == "modernbert-streaming":
        out["input_ids"] = "ndarray:int64"
    else:
        del out["input_ids"]
        out["tokens"] = f"ndarray:{cfg.dtype or 'int64'}"
    return out


def source_column(column: str) -> str:
    """The input column an output column is read from (llm-foundry's ``tokens`` is ``input_ids``)."""
    return "input_ids" if column == "tokens" else column


def can_link(cfg: Any, compressed: bool) -> bool:
    """Whether input shards can be hard-linked unchanged (no option narrows the samples)."""
    prof = name(cfg)
    if prof == "numpy":  # the MDS units are only a step to the flat files
        return True
    return prof == DEFAULT and (cfg.keep_compressed or not compressed)


def compression(cfg: Any, compressed: bool) -> str | None:
    prof = name(cfg)
    if prof == DEFAULT:
        return "zstd" if cfg.keep_compressed and compressed else None
    return "zstd" if cfg.keep_compressed and prof != "numpy" else None


# ---------------------------------------------------------------- numpy: flat files per split

def flat_dtype(tok: dict[str, Any] | None, dtype: str | None) -> str:
    if dtype:
        return dtype
    bound = id_bound(tok)  # one past the largest id the tokenizer can emit (not its number of entries)
    return "uint16" if bound is not None and bound <= 1 << 16 else "uint32"


def _write_bytes_atomic(path: Path, data: bytes | None = None, chunks: Any = None) -> None:
    with atomic_file(path) as f:
        if data is not None:
            f.write(data)
        for c in chunks or ():
            f.write(c)


def _file_entry(path: Path, samples: int) -> dict[str, Any]:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return {"file": path.name, "bytes": path.stat().st_size, "sha1": h.hexdigest(), "samples": samples}


def to_numpy(root: Path, tok: dict[str, Any] | None, dtype: str | None, datasets: list[str]) -> list[dict[str, Any]]:
    """Turn one finished MDS split (root index over ``datasets``' units) into the flat files, chunks in root
    index order, then remove the MDS units and root index. Returns the manifest's file entries."""
    dt = np.dtype(flat_dtype(tok, dtype))
    reader = UnitReader(root)
    lengths: list[int] = []
    meta_rows = io.StringIO()
    rows = csv.writer(meta_rows, lineterminator="\n")
    start = 0

    def blocks():
        nonlocal start
        for shard in reader.shards():
            dataset = shard.entry.unit.split("/", 1)[0]
            for s in shard.samples({"id", "input_ids"}):
                ids = narrow(np.asarray(s["input_ids"]), dt, str(shard.path), "pass --dtype uint32")
                lengths.append(int(ids.size))
                rows.writerow([start, start + ids.size, s.get("id", ""), dataset])
                start += int(ids.size)
                yield ids.tobytes()

    _write_bytes_atomic(root / TOKENS, chunks=blocks())
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    buf = io.BytesIO()
    np.save(buf, offsets)
    _write_bytes_atomic(root / OFFSETS, buf.getvalue())
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as f:  # mtime=0: identical bytes on every run
        f.write(meta_rows.getvalue().encode())
    _write_bytes_atomic(root / METADATA, gz.getvalue())
    n = len(lengths)
    header = {"format": FLAT_FORMAT, "dtype": dt.name, "vocab_size": (tok or {}).get("vocab_size"),
              "tokenizer": tok, "tokens": int(offsets[-1]), "chunks": n,
              "files": {"tokens": TOKENS, "offsets": OFFSETS, "metadata": METADATA},
              "order": "chunks in the root index order of the MDS layout: datasets in INPUT order, units "
                       "sorted, samples as chunk wrote them",
              "read": f"np.memmap('{TOKENS}', dtype='{dt.name}', mode='r'); chunk i = tokens[offsets[i]:offsets[i+1]]"}
    write_json_atomic(root / HEADER, header)
    entries = [_file_entry(root / f, n) for f in (TOKENS, OFFSETS, METADATA, HEADER)]
    (root / INDEX).unlink(missing_ok=True)
    import shutil

    for d in datasets:
        shutil.rmtree(root / d, ignore_errors=True)
    return entries


def is_flat(path: Path) -> bool:
    p = Path(path) / HEADER
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("format") == FLAT_FORMAT
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def read_flat(root: Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """(header, tokens memmap, offsets) of a flat split, as a training loader opens them."""
    header = json.loads((root / HEADER).read_text())
    tokens = np.memmap(root / TOKENS, dtype=header["dtype"], mode="r") if (root / TOKENS).stat().st_size \
        else np.zeros(0, header["dtype"])
    return header, tokens, np.load(root / OFFSETS, mmap_mode="r")


def describe_flat(path: Path) -> dict[str, Any]:
    """``stats`` of a flat split (or a final folder of flat splits)."""
    from .stats import Stats

    path = Path(path)
    roots = [path] if is_flat(path) else [path / s for s in SPLITS if is_flat(path / s)]
    st = Stats()
    nbytes = samples = 0
    dtypes = set()
    for r in roots:
        header, _, offsets = read_flat(r)
        dtypes.add(header["dtype"])
        st.add_lengths(np.diff(np.asarray(offsets, np.int64)))
        samples += len(offsets) - 1
        nbytes += sum((r / f).stat().st_size for f in (TOKENS, OFFSETS, METADATA) if (r / f).is_file())
    tokens = int(sum(k * v for k, v in st.lengths.items()))
    return {"path": str(path), "samples": samples, "units": len(roots), "shards": len(roots), "bytes": nbytes,
            "columns": {"tokens": "/".join(sorted(dtypes))}, "tokens": tokens, "length_unit": "tokens",
            "max_length": st.max_length,
            "mean_length": round(tokens / samples, 2) if samples else None,
            "length_percentiles": st.percentiles(), "_hist": st.lengths}


# ---------------------------------------------------------------- MDS profiles: checks and warnings

def verify_profile(root: Path, profile: str, vocab: int | None) -> list[str]:
    """The loader's read rule on every sample of an MDS split: its token column has the encoding the
    profile writes, decodes (as the loader decodes it) to ``len`` ids, all below ``vocab`` (one past the
    largest id the tokenizer can emit: ``ids.id_bound``)."""
    if _TOKEN_COLUMN.get(profile) is None or profile == DEFAULT:
        return []
    try:
        reader = UnitReader(root)
    except InputError as e:
        return [str(e)]
    bad = column_problem(root, reader.columns, profile)
    if bad is not None:
        return [bad] if bad else []
    bad_len = bad_vocab = seen = 0
    first = None
    for shard in reader.shards():
        n_len, n_vocab, at = sample_problems(shard, profile, vocab)
        bad_len, bad_vocab = bad_len + n_len, bad_vocab + n_vocab
        if first is None and at is not None:
            first = seen + at
        seen += shard.entry.samples
    out = []
    if bad_len:
        out.append(f"{root}: {bad_len} sample(s) decode to another number of ids than `len` (first: sample {first})")
    if bad_vocab:
        out.append(f"{root}: {bad_vocab} sample(s) hold ids outside [0, {vocab}) as the loader reads them "
                   f"(first: sample {first})")
    return out


def column_problem(root: Path, columns: dict[str, str], profile: str) -> str | None:
    """"" when the profile has no sample rule; a problem line when the token column is not what the profile
    writes; None when the samples are to be checked (:func:`sample_problems`)."""
    col = _TOKEN_COLUMN.get(profile)
    if col is None or profile == DEFAULT:
        return ""
    want = "ndarray:int64" if profile == "modernbert-streaming" else None
    enc = columns.get(col)
    if enc is None:
        return (f"{root / INDEX}: no {col} column, which the {profile} loader reads (columns: "
                f"{', '.join(sorted(columns))})")
    if (want and enc != want) or not enc.startswith("ndarray:"):
        return (f"{root / INDEX}: {col} is {enc}, the {profile} profile writes {want or 'an integer ndarray'}; "
                f"rerun `ettin-data finalize --for {profile}`")
    return None


def sample_problems(shard: Any, profile: str, vocab: int | None) -> tuple[int, int, int | None]:
    """(samples whose ids as the loader decodes them are not ``len`` long, samples with ids outside
    [0, vocab), the first such sample) of one shard whose token column passed :func:`column_problem`."""
    col = _TOKEN_COLUMN[profile]
    cols = shard.entry.column_names
    bad_len = bad_vocab = 0
    first = None
    for i, s in enumerate(shard.samples({c for c in (col, "len") if c in cols})):
        ids = np.frombuffer(s[col], np.int64) if profile == "modernbert-streaming" else \
            np.asarray(s[col]).astype(np.int64)
        if "len" in s and s["len"] != len(ids):
            bad_len += 1
            first = i if first is None else first
        if vocab is not None and ids.size and (int(ids.max()) >= vocab or int(ids.min()) < 0):
            bad_vocab += 1
            first = i if first is None else first
    return bad_len, bad_vocab, first


def _profile_of(path: Path) -> str | None:
    """The profile a dataset was finalized for (manifest, or the finalize stage's metadata); None when it
    is not a finalize output."""
    for p in (path, path.parent):
        m = p / MANIFEST
        if m.is_file():
            try:
                return json.loads(m.read_text()).get("profile") or DEFAULT
            except (OSError, json.JSONDecodeError, AttributeError):
                return None
    meta = read_meta(path) or read_meta(path.parent)
    if meta and meta.get("stage") == "finalize":
        return (meta.get("settings") or {}).get("loader") or DEFAULT
    return None


def _is_ettin_intermediate(path: Path) -> bool:
    meta = read_meta(path) or read_meta(path.parent)
    return bool(meta) and meta.get("stage") != "finalize"


def loader_warnings(path: str | Path) -> list[str]:
    """One line per dataset whose token column a known loader would misread the way it is likely used,
    naming the fix. Intermediate ettin-data outputs (tokenize, chunk, sample) are not training inputs."""
    path = Path(path)
    if not path.is_dir() or is_flat(path) or _is_ettin_intermediate(path):
        return []
    profile = _profile_of(path)
    if profile not in (None, DEFAULT):
        return []  # written for a streaming loader: its rules are verified (verify_profile)
    roots = [path] if (path / INDEX).is_file() else [path / s for s in SPLITS
                                                     if (path / s / INDEX).is_file()]
    found: dict[str, list[str]] = {}
    for root in roots:
        try:
            shards = read_index(root).shards
        except InputError:
            continue
        cols = {n: e for s in shards for n, e in s.columns.items()}
        enc = cols.get("input_ids")
        if enc is not None and enc != "ndarray:int64":
            found.setdefault(enc, []).append(root.name if root != path else "")
    out = []
    for enc, splits in found.items():
        where = f"{path}" + (f" ({', '.join(splits)})" if any(splits) else "")
        if enc == "bytes":
            out.append(f"{where}: input_ids is bytes: ModernBERT's streaming: false loader needs an integer array; "
                       f"run `{FIX}` (ndarray:int64 reads correctly with streaming true and false)")
        else:
            out.append(f"{where}: input_ids is {enc}: ModernBERT's streaming: true loader reads "
                       f"np.frombuffer(input_ids, int64) and would train on wrong ids (streaming: false reads it "
                       f"correctly); to stream it, run `{FIX}`")
    return out
