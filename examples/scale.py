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

Floors (``--floor-tokens``, default 10^8; 0 skips them): what any program pays for a stage's bytes, measured
like ``make bench``'s raw rows: W single-threaded processes pinned one per CPU, each with its share of the
work loaded, started together on a signal; the slowest one's time counts.
  raw tokenizers / fastokens   ``encode_batch`` / fastokens ``encode_batch_flat`` (the engine ``auto`` uses for
                           this tokenizer) over documents of the corpus already in memory (their rate at
                           --floor-tokens gives the limit at the run's size)
  prepare                  parse the JSONL lines, fastokens, write the token rows as zstd MDS shards (sha1)
                           (convert + tokenize's floor: chunk would write the same ids again as chunks)
  sample split             hard-link every shard of the chunks (what placing units costs; no unit rewritten)
  finalize                 every .mds.zstd of the split read, decompressed, sha1-hashed and written
                           (nothing else: no index, stats, verification, driver or pool)
The prepare floor and the tokenizer limits run at --floor-tokens and are scaled to the run's tokens by
their rate; the split and finalize floors run on the run's own files. Each stage is printed as its time
over its floor's (1.00x = at the floor), and the whole run (raw -> final) against the raw ``tokenizers``
limit: how many times faster than encoding the corpus with ``encode_batch`` alone.
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

from together import run_together

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


# ---------------------------------------------------------------- floors (pinned processes, started on a signal)


def _docs(raw: Path, index: int, of: int, limit: int) -> list[str]:
    """Every ``of``-th line (from the ``index``-th) of the first ``limit`` lines of the corpus, unparsed."""
    out: list[str] = []
    seen = 0
    for f in sorted(raw.glob("*.jsonl")):
        with open(f) as fh:
            for line in fh:
                if seen >= limit:
                    return out
                if seen % of == index:
                    out.append(line)
                seen += 1
    return out


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One floor process: load its share, print ready, wait for the start signal, do the work, print JSON."""
    import hashlib

    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[args.index % len(cpus)]})  # one thread (the engines size themselves from it)
    scratch = Path(args.scratch) / f"floor-{args.child}-{args.index}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    if args.child == "finalize":
        files = sorted(Path(args.data).rglob("*.mds.zstd"))[args.index::args.of]
    elif args.child == "split":
        files = sorted(p for p in Path(args.data).rglob("shard.*") if p.is_file())[args.index::args.of]
    else:
        lines = _docs(Path(args.data), args.index, args.of, args.docs)
        if args.child == "tokenizers":
            from tokenizers import Tokenizer

            encode = Tokenizer.from_file(args.tok).encode_batch
            texts = [json.loads(line)["text"] for line in lines]
        else:
            from ettin_data.engines.library import LIBRARIES

            flat = LIBRARIES["fastokens"].load(args.tok).encode  # the engine auto uses, alone
            flat(["warm up"])
            if args.child == "fastokens":
                texts = [json.loads(line)["text"] for line in lines]
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    n = 0
    if args.child == "finalize":
        import zstandard

        dctx = zstandard.ZstdDecompressor()
        for k, f in enumerate(files):
            data = dctx.decompress(f.read_bytes(), max_output_size=1 << 32)
            hashlib.sha1(data).hexdigest()
            (scratch / f"{k}.mds").write_bytes(data)
            n += len(data)
    elif args.child == "split":
        for k, f in enumerate(files):
            os.link(f, scratch / str(k))
            n += 1
    elif args.child == "tokenizers":
        for i in range(0, len(texts), 1000):
            n += sum(len(e.ids) for e in encode(texts[i:i + 1000]))
    elif args.child == "fastokens":
        for i in range(0, len(texts), 1000):
            n += len(flat(texts[i:i + 1000])[0])
    else:  # prepare: JSONL -> fastokens -> zstd token shards, units of 30,000 documents as convert makes them
        from ettin_data.mds import ShardWriter
        from ettin_data.stages.tokenize import token_columns
        from ettin_data.token_rows import token_samples

        for u, start in enumerate(range(0, len(lines), 30_000)):
            rows = [json.loads(line) for line in lines[start:start + 30_000]]
            with ShardWriter(scratch / str(u), token_columns("uint32", False)) as w:
                for b in range(0, len(rows), 1000):
                    batch = rows[b:b + 1000]
                    ids, lengths = flat([r["text"] for r in batch])
                    for sample, _ in token_samples([r["id"] for r in batch], ids, lengths, lengths > 0):
                        w.write_raw(sample)
                    n += len(ids)
    seconds = time.perf_counter() - t0
    shutil.rmtree(scratch, ignore_errors=True)
    return {"seconds": seconds, "n": n}


def run_floor(kind: str, data: Path, workers: int, scratch: Path, tok: str = "", docs: int = 0) -> dict[str, Any]:
    """W floor processes of ``kind`` started together; the slowest one's seconds and the summed count."""
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, __file__, "--child", kind, "--data", str(data), "--of", str(workers), "--scratch",
           str(scratch), "--tok", tok, "--docs", str(docs)]
    res = run_together([[*cmd, "--index", str(i)] for i in range(workers)], env, f"floor {kind}")
    return {"seconds": max(r["seconds"] for r in res), "n": sum(r["n"] for r in res)}


def floors(raw: Path, run: Path, workers: int, tokens: int, floor_tokens: int) -> dict[str, Any]:
    """Each stage's floor at the run's size (see the module docstring) and the raw tokenizer limits."""
    from ettin_data.tokenizer import BUILTIN_MODERNBERT, load_tokenizer_bytes, save_tokenizer_json

    tok = str(save_tokenizer_json(load_tokenizer_bytes(BUILTIN_MODERNBERT), run.parent / "modernbert"))
    docs = max(workers, int(floor_tokens / TOKENS_PER_COPY * 247))
    sample_docs = max(workers, docs // 20)  # the reference engine is ~30x slower: a 20th of the sample
    out: dict[str, Any] = {}
    for kind, n in (("tokenizers", sample_docs), ("fastokens", docs), ("prepare", docs)):
        print(f"floor: {kind} ...", flush=True)
        r = run_floor(kind, raw, workers, run.parent, tok, n)
        out[kind] = {"seconds_measured": r["seconds"], "tokens_measured": r["n"],
                     "seconds": tokens * r["seconds"] / max(1, r["n"])}
    chunks = run / "chunks"
    for kind, data in (("sample split", chunks), ("finalize", run / "split")):
        print(f"floor: {kind} ...", flush=True)
        r = run_floor(kind.split()[-1], data, workers, run.parent)
        out[kind] = {"seconds": r["seconds"], "files" if kind != "finalize" else "bytes": r["n"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=float, default=1e9)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--staged", action="store_true", help="run convert, tokenize and chunk separately")
    ap.add_argument("--out", default="scale-out")
    ap.add_argument("--floor-tokens", type=float, default=1e8,
                    help="tokens of the corpus the prepare floor and tokenizer limits run on (0: no floors)")
    ap.add_argument("--compression", choices=("zstd", "none"), default="zstd",
                    help="chunk shards' compression (none: finalize hard-links them)")
    ap.add_argument("--child")
    for k in ("data", "scratch", "tok"):
        ap.add_argument(f"--{k}")
    for k in ("index", "of", "docs"):
        ap.add_argument(f"--{k}", type=int)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    out = Path(args.out).resolve()
    t0 = time.monotonic()
    raw = build_raw(out, int(args.tokens), args.files)
    print(f"corpus: {raw} ({sum(f.stat().st_size for f in raw.glob('*.jsonl')) / 1e9:.2f} GB, "
          f"built/cached in {time.monotonic() - t0:.0f} s)", flush=True)
    run = out / ("staged" if args.staged else "fused")
    shutil.rmtree(run, ignore_errors=True)
    w = ["-w", str(args.workers), "-q"]
    chunk_opts = ["-c", "1024", "-m", "512", "-a", "128", "--backfill", "--backfill-no-duplicates",
                  "--compression", args.compression]
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
    floor = floors(raw, run, args.workers, tokens, int(args.floor_tokens)) if args.floor_tokens and not args.staged \
        else {}
    for r in rows:
        if r["stage"] in floor:
            r["floor_seconds"] = floor[r["stage"]]["seconds"]
    result = {"tokens_final": tokens, "raw_bytes": sum(f.stat().st_size for f in raw.glob("*.jsonl")),
              "workers": args.workers, "mode": "staged" if args.staged else "fused", "stages": rows,
              "compression": args.compression, "floors": floor,
              "raw_to_final_seconds": total, "intermediates_over_final": inter / max(1, final_bytes),
              "cpu": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"), "load_avg_at_end": os.getloadavg()}
    print(f"\n{'stage':<14}{'wall s':>9}{'cores':>7}{'peak RSS MB':>13}{'written MB':>12}{'floor s':>9}"
          f"{'time/floor':>12}")
    for r in rows:
        mb = r["bytes_written"] / 1e6
        fl = ""
        if "floor_seconds" in r:  # a floor under 0.05 s (hard links): the stage is its fixed cost, no ratio
            fs = r["floor_seconds"]
            fl = f"{fs:>9.1f}{r['wall'] / fs:>11.2f}x" if fs >= 0.05 else f"{'<0.05':>9}{'-':>12}"
        print(f"{r['stage']:<14}{r['wall']:>9.1f}{r['cores']:>7.2f}{r['rss_mb']:>13.0f}{mb:>12.0f}{fl}")
    print(f"raw -> final: {total / 60:.1f} min for {tokens / 1e9:.3f} B tokens in the final dataset "
          f"({args.workers} workers); intermediates / final = {result['intermediates_over_final']:.2f}")
    if floor:
        floors_total = sum(r.get("floor_seconds", 0) for r in rows)
        limit, fast = floor["tokenizers"]["seconds"], floor["fastokens"]["seconds"]
        result.update(raw_tokenizers_limit_seconds=limit, raw_fastokens_limit_seconds=fast,
                      run_vs_raw_tokenizers=limit / total, run_over_floors=total / floors_total)
        print(f"raw tokenizers limit ({args.workers} x encode_batch): {limit / 60:.1f} min; raw -> final runs at "
              f"{limit / total:.1f}x its speed. raw fastokens limit: {fast:.1f} s; the floors sum to "
              f"{floors_total:.1f} s (raw -> final = {total / floors_total:.2f}x that)")
    path = out / f"results-{result['mode']}-{int(args.tokens)}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"saved {path}")


def _splits(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    splits = manifest.get("splits", {})
    return [{"tokens": v.get("tokens", 0)} for v in splits.values()] if isinstance(splits, dict) else []


if __name__ == "__main__":
    main()
