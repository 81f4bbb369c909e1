"""``make scale``: raw text -> final training chunks at 10^9 tokens on this machine, every stage timed from outside.

Corpus (offline, reproducible, under ``scale-out/raw``): the built-in Python documentation corpus repeated
until --tokens, each copy with the paragraphs of every document shuffled by a seeded RNG (copy k, document
i), written as --files uncompressed JSONL files (so convert's in-source parts and several files both
play). Then each stage runs as its own ``ettin-data`` process, timed from outside (start-up included):

  fused   prepare (convert + tokenize + chunk in one pass) -> sample split -> finalize      (default)
  staged  convert -> tokenize -> chunk -> sample split -> finalize                          (--staged)

Per stage: wall seconds, average cores busy (CPU seconds of the process tree / wall), peak RSS of the
largest process of the stage (ru_maxrss of the waited-for process tree), bytes it wrote (files whose inode
is new, so hard links count once), and at the end the disk used by intermediates relative to the final
dataset. Results: a table on stdout and ``scale-out/results-<mode>-<tokens>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TOKENS_PER_COPY = 359_345  # the built-in corpus with ModernBERT [CLS]/[SEP]
ETTIN = str(Path(sys.executable).with_name("ettin-data"))


def build_raw(out: Path, tokens: int, files: int) -> Path:
    from ettin_data.corpus import python_docs

    copies = max(1, -(-tokens // TOKENS_PER_COPY))
    raw = out / f"raw-x{copies}-f{files}"
    if (raw / ".complete").is_file():
        return raw
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir(parents=True)
    docs = list(python_docs())
    handles = [open(raw / f"part-{i:03d}.jsonl", "w") for i in range(files)]  # noqa: SIM115
    try:
        for k in range(copies):
            f = handles[k % files]
            for i, d in enumerate(docs):
                paras = d["text"].split("\n\n")
                if k:
                    random.Random(k * 1_000_003 + i).shuffle(paras)
                f.write(json.dumps({"id": f"{d['id']}#{k}", "text": "\n\n".join(paras)}) + "\n")
    finally:
        for h in handles:
            h.close()
    (raw / ".complete").write_text(str(copies))
    return raw


def new_bytes(root: Path, seen: set[int]) -> int:
    """Bytes in files under ``root`` whose inode is not in ``seen`` (and add them to it)."""
    total = 0
    for dirpath, _, names in os.walk(root):
        for n in names:
            st = os.lstat(os.path.join(dirpath, n))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total


def timed(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd`` in a fresh measuring process, so ru_maxrss/CPU of the children belong to this stage only."""
    probe = ("import json, resource, subprocess, sys, time\n"
             "t = time.monotonic(); r = subprocess.run(sys.argv[1:]); wall = time.monotonic() - t\n"
             "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
             "print(json.dumps({'rc': r.returncode, 'wall': wall, 'cpu': u.ru_utime + u.ru_stime,"
             " 'rss_mb': u.ru_maxrss / 1024}))")
    p = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(p.stderr)
    res = json.loads(p.stdout.strip().splitlines()[-1])
    if res["rc"]:
        raise SystemExit(f"{' '.join(cmd)} failed with exit {res['rc']}:\n{p.stderr[-3000:]}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=float, default=1e9)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--staged", action="store_true", help="run convert, tokenize and chunk separately")
    ap.add_argument("--out", default="scale-out")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    t0 = time.monotonic()
    raw = build_raw(out, int(args.tokens), args.files)
    print(f"corpus: {raw} ({sum(f.stat().st_size for f in raw.glob('*.jsonl')) / 1e9:.2f} GB, "
          f"built/cached in {time.monotonic() - t0:.0f} s)", flush=True)
    run = out / ("staged" if args.staged else "fused")
    shutil.rmtree(run, ignore_errors=True)
    w = ["-w", str(args.workers), "-q"]
    chunk_opts = ["-c", "1024", "-m", "512", "-a", "128", "--backfill", "--backfill-no-duplicates"]
    if args.staged:
        stages = [("convert", [ETTIN, "convert", str(raw), "-o", str(run / "text"), *w], run / "text"),
                  ("tokenize", [ETTIN, "tokenize", str(run / "text"), "-o", str(run / "tokens"), "-t",
                                "builtin:modernbert", *w], run / "tokens"),
                  ("chunk", [ETTIN, "chunk", str(run / "tokens"), "-o", str(run / "chunks"), *chunk_opts, *w],
                   run / "chunks")]
    else:
        stages = [("prepare", [ETTIN, "prepare", str(raw), "-o", str(run / "chunks"), "-t", "builtin:modernbert",
                               *chunk_opts, *w], run / "chunks")]
    stages += [("sample split", [ETTIN, "sample", "split", str(run / "chunks"), "-o", str(run / "split"),
                                 "--validation-fraction", "0.005", *w], run / "split"),
               ("finalize", [ETTIN, "finalize", str(run / "split"), "-o", str(run / "final"), "--name", "docs",
                             *w], run / "final")]
    seen: set[int] = set()
    rows = []
    for name, cmd, dest in stages:
        print(f"running {name} ...", flush=True)
        res = timed(cmd)
        res.update(stage=name, bytes_written=new_bytes(dest, seen), cores=res["cpu"] / res["wall"])
        rows.append(res)
        print(f"  {res['wall']:.1f} s, {res['cores']:.2f} cores, peak RSS {res['rss_mb']:.0f} MB, "
              f"wrote {res['bytes_written'] / 1e6:.0f} MB", flush=True)
    final = json.loads((run / "final" / "manifest.json").read_text())
    tokens = sum(int(v.get("tokens", 0)) for v in _splits(final))
    final_bytes = next(r["bytes_written"] for r in rows if r["stage"] == "finalize")
    inter = sum(r["bytes_written"] for r in rows if r["stage"] != "finalize")
    total = sum(r["wall"] for r in rows)
    result = {"tokens_final": tokens, "raw_bytes": sum(f.stat().st_size for f in raw.glob("*.jsonl")),
              "workers": args.workers, "mode": "staged" if args.staged else "fused", "stages": rows,
              "raw_to_final_seconds": total, "intermediates_over_final": inter / max(1, final_bytes),
              "cpu": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M")}
    print(f"\n{'stage':<14}{'wall s':>9}{'cores':>7}{'peak RSS MB':>13}{'written MB':>12}")
    for r in rows:
        mb = r["bytes_written"] / 1e6
        print(f"{r['stage']:<14}{r['wall']:>9.1f}{r['cores']:>7.2f}{r['rss_mb']:>13.0f}{mb:>12.0f}")
    print(f"raw -> final: {total / 60:.1f} min for {tokens / 1e9:.3f} B tokens in the final dataset "
          f"({args.workers} workers); intermediates / final = {result['intermediates_over_final']:.2f}")
    path = out / f"results-{result['mode']}-{int(args.tokens)}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"saved {path}")


def _splits(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    splits = manifest.get("splits", {})
    return [{"tokens": v.get("tokens", 0)} for v in splits.values()] if isinstance(splits, dict) else []


if __name__ == "__main__":
    main()
