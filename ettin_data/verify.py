"""Verification of MDS datasets (``stats --verify`` and ``finalize``): every problem is one line that
names the file.

Checks: every shard file named in an index exists with the recorded size and hash and decodes; the
shards agree on columns; the root index's sample count equals the sum of its units' indexes; counted
samples and tokens match ``stats.json`` (the dataset's and each unit's) and ``manifest.json``; and for
chunked token data (a ``chunk`` stage in the ``ettin_meta.json`` chain) the chunk invariants: BOS
first, EOS last (when the tokenizer adds them), ``len`` = number of tokens <= the chunk size. A final
dataset is checked by the rules of the loader it was finalized for (``profiles.py``: the column as that
loader decodes it, or the flat files of ``--for numpy``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import MANIFEST, SPLITS, STATS_FILE
from .errors import InputError
from .ids import id_bound
from .mds import INDEX, FileInfo, Index, Shard, find_units, load_shard, read_index
from .rules import Rules, check_samples, chunk_rules

__all__ = ["verify", "verify_paths", "verify_dataset", "verify_finalized", "UnitCheck"]


def _hash_problems(path: Path, info: FileInfo, hashes: bool = True) -> list[str]:
    """A shard file as its index names it: present, of the recorded size, and (``hashes``) with its hashes."""
    if not path.is_file():
        return [f"{path}: missing (named in the index)"]
    size = path.stat().st_size
    if size != info.bytes:
        return [f"{path}: {size} bytes, the index records {info.bytes} (truncated or replaced)"]
    if not hashes:
        return []
    data = path.read_bytes()
    for algo, want in info.hashes.items():
        if algo in hashlib.algorithms_available and hashlib.new(algo, data).hexdigest() != want:
            return [f"{path}: {algo} hash does not match the index (corrupt or replaced)"]
    return []


def _column_problems(root: Path, index: Index) -> list[str]:
    """Every shard of an index must have the first shard's columns."""
    first = index.shards[0].columns if index.shards else {}
    return [f"{root / s.raw.basename}: columns {s.columns} differ from the first shard's {first}"
            for s in index.shards if s.columns != first]


def verify_dataset(root: str | Path, rules: Rules | None = None
                   ) -> tuple[list[str], dict[str, int]]:
    """Verify one MDS folder (a unit or a dataset root); returns (problems, {samples, tokens}). ``rules``:
    the chunk rules (default: from the ettin_meta.json chain found at or above ``root``)."""
    root = Path(root)
    try:
        index = read_index(root)
    except InputError as e:
        return [str(e)], {"samples": 0, "tokens": 0}
    problems = _column_problems(root, index)
    rules = chunk_rules(root) if rules is None else rules
    per_dir: dict[str, list[int]] = {}
    for entry in index.shards:
        files = entry.present(root) or [entry.stored]  # none present: the file the index says must be there
        found = [p for f in files for p in _hash_problems(root / f.basename, f)]
        problems += found
        if found:
            continue
        try:
            shard = load_shard(root, entry)
        except InputError as e:
            problems.append(str(e))
            continue
        tokens, lines = check_samples(shard.path, shard, rules)
        problems += lines
        acc = per_dir.setdefault(entry.unit, [0, 0])
        acc[0] += entry.samples
        acc[1] += tokens
    counted = {"samples": sum(v[0] for v in per_dir.values()), "tokens": sum(v[1] for v in per_dir.values())}
    problems += _count_problems(root, index, per_dir, counted)
    return problems, counted


def _stats_problems(path: Path, samples: int, tokens: int) -> list[str]:
    f = path / STATS_FILE
    if not f.is_file():
        return []
    try:
        d = json.loads(f.read_text())
    except json.JSONDecodeError:
        return [f"{f}: not valid JSON"]
    out = []
    if "samples" in d and int(d["samples"]) != samples:
        out.append(f"{f}: records {d['samples']} samples, the shards hold {samples}")
    if "total_tokens_written" in d and int(d["total_tokens_written"]) != tokens:
        out.append(f"{f}: records {d['total_tokens_written']} tokens, the shards hold {tokens}")
    return out


def _count_problems(root: Path, index: Index, per_dir: dict[str, list[int]], counted: dict[str, int]) -> list[str]:
    problems = []
    total = index.samples
    if index.is_root:
        try:
            units = find_units(root)
            unit_total = sum(read_index(root / u).samples for u in units)
        except InputError as e:
            return [str(e)]
        if unit_total != total:
            problems.append(f"{root / INDEX}: {total} samples, its units' indexes hold {unit_total}")
        for u in units:
            if u in per_dir:
                problems += _stats_problems(root / u, *per_dir[u])
    if counted["samples"] == total:  # only when every shard could be read
        problems += _stats_problems(root, counted["samples"], counted["tokens"])
    return problems


def verify_flat(root: Path) -> tuple[list[str], dict[str, int]]:
    """Invariants of a flat split: file length == offsets[-1] tokens, offsets increasing from 0, counts as
    the header and stats.json say, ids below the vocabulary, and the chunk rules (BOS/EOS/size)."""
    from .profiles import HEADER, OFFSETS, TOKENS, read_flat

    root = Path(root)
    counted = {"samples": 0, "tokens": 0}
    for f in (HEADER, TOKENS, OFFSETS):
        if not (root / f).is_file():
            return [f"{root / f}: missing (a `finalize --for numpy` split has {HEADER}, {TOKENS}, {OFFSETS})"], counted
    try:
        header, tokens, offsets = read_flat(root)
    except (ValueError, TypeError, KeyError, json.JSONDecodeError) as e:
        return [f"{root}: cannot open the flat files ({e})"], counted
    itemsize = np.dtype(header["dtype"]).itemsize
    size = (root / TOKENS).stat().st_size
    problems = []
    if size % itemsize:
        problems.append(f"{root / TOKENS}: {size} bytes is not a whole number of {header['dtype']} ids (truncated?)")
    offsets = np.asarray(offsets, np.int64)
    n = len(offsets) - 1
    if n < 0 or offsets[0] != 0 or np.any(np.diff(offsets) <= 0):
        problems.append(f"{root / OFFSETS}: offsets must start at 0 and increase (every chunk non-empty)")
    elif offsets[-1] != size // itemsize:
        problems.append(f"{root / OFFSETS}: ends at {offsets[-1]} tokens, {root / TOKENS} holds {size // itemsize}")
    for key, have in (("chunks", n), ("tokens", int(offsets[-1]) if n >= 0 else 0)):
        if header.get(key) != have:
            problems.append(f"{root / HEADER}: records {header.get(key)} {key}, the files hold {have}")
    if problems:
        return problems, counted
    counted = {"samples": n, "tokens": int(offsets[-1])}
    vocab = id_bound(header.get("tokenizer")) or header.get("vocab_size")
    if vocab is not None and tokens.size and int(tokens.max()) >= int(vocab):
        problems.append(f"{root / TOKENS}: token id {int(tokens.max())} is beyond the tokenizer's largest id "
                        f"{int(vocab) - 1}")
    bos, eos, limit = chunk_rules(root)
    if n:
        lengths = np.diff(offsets)
        for what, bad in ((f"first token is not BOS {bos}", bos is not None and tokens[offsets[:-1]] != bos),
                          (f"last token is not EOS {eos}", eos is not None and tokens[offsets[1:] - 1] != eos),
                          (f"longer than the chunk size {limit}", limit is not None and lengths > limit)):
            bad = np.asarray(bad)
            if bad.any():
                problems.append(f"{root / TOKENS}: {int(bad.sum())} chunk(s) {what} (first: chunk "
                                f"{int(np.argmax(bad))})")
    problems += _stats_problems(root, counted["samples"], counted["tokens"])
    return problems, counted


def _verify_manifest(path: Path) -> list[str]:
    f = path / MANIFEST
    try:
        manifest = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        return [f"{f}: not valid JSON ({e})"]
    from .profiles import DEFAULT, verify_profile

    problems: list[str] = []
    profile = manifest.get("profile") or DEFAULT
    vocab = id_bound(manifest.get("tokenizer"))
    for split, entry in (manifest.get("splits") or {}).items():
        found, counted = verify_flat(path / split) if profile == "numpy" else verify_dataset(path / split)
        if not found:
            found = verify_profile(path / split, profile, vocab)
        problems += found
        if not found:
            for key in ("samples", "tokens"):
                if entry.get(key) != counted[key]:
                    problems.append(f"{f}: {split} records {entry.get(key)} {key}, the shards hold {counted[key]}")
        for sh in (manifest.get("shards") or {}).get(split, []):
            p = path / split / sh["file"]
            if p.is_file() and sh.get("sha1") and hashlib.sha1(p.read_bytes()).hexdigest() != sh["sha1"]:
                problems.append(f"{p}: sha1 does not match {f}")
            elif not p.is_file() and not any(str(p) in x for x in problems):
                problems.append(f"{p}: missing (named in {f})")
    return problems


class UnitCheck:
    """finalize's verification of one unit, in its worker, of the shards it writes (:meth:`add`, from memory:
    nothing is read back): the shards agree on columns, the chunk rules and ``len`` hold, the profile's loader
    reads them right. Counts the problems; :func:`verify_finalized` names them."""

    def __init__(self, rules: Rules, profile: str, vocab: int | None):
        self.rules, self.profile, self.vocab = rules, profile, vocab
        self.columns: dict[str, str] | None = None
        self.problems = self.samples = self.tokens = 0
        self._profile_rule: bool | None = None

    def add(self, shard: Shard) -> None:
        from .profiles import column_problem, sample_problems

        cols = shard.entry.columns
        if self.columns is None:
            self.columns = cols
            bad = column_problem(shard.path.parent, cols, self.profile)
            self.problems += bool(bad)
            self._profile_rule = bad is None
        elif cols != self.columns:
            self.problems += 1
        tokens, lines = check_samples(shard.path, shard, self.rules)
        self.problems += len(lines)
        self.samples += shard.entry.samples
        self.tokens += tokens
        if self._profile_rule and cols == self.columns:
            n_len, n_vocab, _ = sample_problems(shard, self.profile, self.vocab)
            self.problems += bool(n_len) + bool(n_vocab)

    def add_files(self, root: Path) -> None:
        """Check the shards of the unit folder ``root`` (linked, not written here): each file is read once,
        its size and hash checked, then as :meth:`add`; the unit's ``stats.json`` must hold the counts."""
        try:
            for entry in read_index(root).shards:
                self.add(load_shard(root, entry, check_hash=True))
        except InputError:
            self.problems += 1
        self.check_stats(root)

    def check_stats(self, root: Path) -> None:
        self.problems += len(_stats_problems(root, self.samples, self.tokens))


def verify_finalized(path: Path, units: dict[str, dict[str, Any]], rules: dict[str, Any], profile: str,
                     vocab: int | None) -> list[str]:
    """finalize's verification once its workers checked every unit they wrote (:class:`UnitCheck`): what is
    left reads no shard bytes. Per split: the shards agree on columns, every shard file is there with its
    recorded size, the root index holds its units' samples, the units' and the dataset's ``stats.json``
    and the manifest hold the workers' counts. A unit whose worker counted problems (``units[split][unit]``
    is its ``.done`` stats) is verified again in full, for the lines that name them."""
    f = path / MANIFEST
    manifest = json.loads(f.read_text())
    problems: list[str] = []
    for split, entry in (manifest.get("splits") or {}).items():
        root = path / split
        try:
            index = read_index(root)
        except InputError as e:
            problems.append(str(e))
            continue
        problems += _column_problems(root, index)
        for shard in index.shards:
            problems += _hash_problems(root / shard.stored.basename, shard.stored, hashes=False)
        done = units.get(split, {})
        per_dir = {u: [int(st["samples"]), int(st["tokens"])] for u, st in done.items()}
        counted = {"samples": sum(v[0] for v in per_dir.values()), "tokens": sum(v[1] for v in per_dir.values())}
        problems += _count_problems(root, index, per_dir, counted)
        for key in ("samples", "tokens"):
            if entry.get(key) != counted[key]:
                problems.append(f"{f}: {split} records {entry.get(key)} {key}, the units hold {counted[key]}")
        for u, st in done.items():
            if st["problems"]:
                from .profiles import verify_profile

                lines = verify_dataset(root / u, rules.get(split))[0] or verify_profile(root / u, profile, vocab)
                problems += lines or [f"{root / u}: {st['problems']} problem(s) found while it was written"]
    return problems


def verify(path: str | Path) -> list[str]:
    """Every problem found under ``path`` (a final dataset with manifest.json, a split output, a dataset
    root, or a folder of units), one line each naming the file; [] when all is well."""
    path = Path(path)
    if not path.exists():
        return [f"{path} does not exist"]
    if (path / MANIFEST).is_file():
        return _verify_manifest(path)
    if (path / INDEX).is_file():
        return verify_dataset(path)[0]
    from .profiles import is_flat

    if is_flat(path):
        return verify_flat(path)[0]
    splits = [path / s for s in SPLITS if (path / s / INDEX).is_file()]
    if splits:
        return [p for s in splits for p in verify_dataset(s)[0]]
    try:
        units = find_units(path)
    except InputError as e:
        return [str(e)]
    if not units:
        return [f"{path}: no index.json here or below (not an MDS dataset)"]
    return [p for u in units for p in verify_dataset(path / u)[0]]


def verify_paths(paths: list[str]) -> list[str]:
    return [p for path in paths for p in verify(path)]
