"""Digest of a full chain of every stage, to prove that a change leaves the output bytes as they were.

    python examples/chain_digest.py run WORK digest.json    # every stage on the built-in corpus, under WORK
    python examples/chain_digest.py diff before.json after.json

``run`` calls the ``ettin-data`` of this checkout (``python -m ettin_data`` with this tree first on
PYTHONPATH): convert, tokenize, chunk, prepare with --keep-text/--keep-tokens, sample split/budget/context/mix,
finalize with every loader profile (and --keep-compressed), export of text and of tokens; then writes the
sha256 of every file under WORK (run logs left out) to a JSON file. ``diff`` lists the files that differ, are
missing or are new, and exits 1 when a shard, index or stats file differs (other metadata is reported only).
Runs in about a minute on two cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOK = "builtin:modernbert"


def _ettin(cwd: Path, *args: object, workers: bool = True) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "ETTIN_DATA_LOGS": "0"}
    cmd = [sys.executable, "-m", "ettin_data", *map(str, args), "-q", *(("-w", "2") if workers else ())]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=cwd)
    if res.returncode:
        raise SystemExit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr}")


def chain(work: Path) -> None:
    """Every stage, run inside ``work`` with relative paths (so that the metadata does not depend on where)."""
    work.mkdir(parents=True, exist_ok=True)
    w = Path(".")

    def ettin(*args: object, workers: bool = True) -> None:
        _ettin(work, *args, workers=workers)

    ettin("convert", "builtin:python-docs", "-o", w / "text", "--docs-per-shard", 40)
    ettin("tokenize", w / "text", "-o", w / "tokens", "-t", TOK)
    ettin("chunk", w / "tokens", "-o", w / "chunks", "-c", 512, "-m", 64, "-a", 16, "--backfill",
          "--backfill-no-duplicates")
    ettin("prepare", "builtin:python-docs", "-o", w / "prep", "-t", TOK, "--docs-per-shard", 40, "-c", 512,
          "-m", 64, "-a", 16, "--backfill", "--backfill-no-duplicates", "--keep-text", w / "prep_text",
          "--keep-tokens", w / "prep_tokens")
    ettin("sample", "split", w / "chunks", "-o", w / "split", "--validation-fraction", 0.1)
    ettin("sample", "budget", w / "chunks", "-o", w / "budget", "--target-tokens", 300_000, "--upsample")
    ettin("sample", "context", w / "chunks", "-o", w / "context", "--num-tokens", 20_000, "--min-length", 400)
    (work / "mix.toml").write_text('total_tokens = 200000\n[sources.a]\npath = "chunks"\nproportion = 0.7\n'
                               '[sources.b]\npath = "prep"\nproportion = 0.3\n')
    ettin("sample", "mix", w / "mix.toml", "-o", w / "mix")
    for name, extra in (("final", ()), ("final_kc", ("--keep-compressed",)),
                        ("final_streaming", ("--for", "modernbert-streaming")),
                        ("final_foundry", ("--for", "llm-foundry")), ("final_numpy", ("--for", "numpy")),
                        ("final_u16", ("--dtype", "uint16", "--columns", "input_ids", "--columns", "len"))):
        ettin("finalize", w / "split", "-o", w / name, *extra)
    ettin("export", w / "text", "-o", w / "export_text.jsonl", workers=False)
    ettin("export", w / "tokens", "-o", w / "export_tokens.jsonl.zst", workers=False)


def digest(w: Path) -> dict[str, str]:
    out = {}
    for p in sorted(w.rglob("*")):
        rel = p.relative_to(w).as_posix()
        if p.is_file() and ".ettin_logs" not in rel.split("/"):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _kind(rel: str) -> str:
    name = rel.rsplit("/", 1)[-1]
    if ".mds" in name or name.endswith((".npy", ".jsonl", ".jsonl.zst", ".csv.gz")):
        return "data"
    if name in ("index.json", "stats.json", "token_decile.json", "num_tokens.json", "convert_stats.json", ".done",
                "header.json", "tokenizer.json"):
        return "data"
    return "metadata"


def diff(a: dict[str, str], b: dict[str, str]) -> int:
    bad = 0
    for rel in sorted(set(a) | set(b)):
        if a.get(rel) == b.get(rel):
            continue
        what = "missing" if rel not in b else "new" if rel not in a else "differs"
        kind = _kind(rel)
        bad += kind == "data"
        print(f"{kind:8s} {what:7s} {rel}")
    same = sum(1 for k in a if a[k] == b.get(k))
    print(f"{same} of {len(a)} files identical; {bad} data file(s) (shards, indexes, stats, .done) differ")
    return 1 if bad else 0


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "run":
        w = Path(sys.argv[2])
        chain(w)
        Path(sys.argv[3]).write_text(json.dumps(digest(w), indent=1, sort_keys=True))
        print(f"{len(digest(w))} files digested into {sys.argv[3]}")
    elif len(sys.argv) == 4 and sys.argv[1] == "diff":
        raise SystemExit(diff(json.loads(Path(sys.argv[2]).read_text()), json.loads(Path(sys.argv[3]).read_text())))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
