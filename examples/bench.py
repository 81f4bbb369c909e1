"""``make bench``: tokenize and chunk throughput against the raw tokenizer, measured in one run.

Corpus (offline, reproducible, cached under ``bench-out/corpus``): the built-in Python documentation corpus
repeated, each copy with the paragraphs of every document shuffled by a seeded RNG (copy k, document i), so
copies differ (single-paragraph documents repeat); converted to text MDS units of 250 documents (~0.36M tokens each).
Two sizes: LARGE (>= --tokens, default 10M tokens) and SMALL (half of it), for the memory check.

Measurements (each in a fresh process; the tokenizer is builtin:modernbert, saved once as a file):
  raw        ``Tokenizer.encode_batch`` (batches of 1,000) over the same texts, split evenly across W
             single-threaded processes (RAYON_NUM_THREADS=1), texts already in memory; wall = slowest process
  tokenize   ``ettin_data.stages.tokenize.run`` end to end (read MDS, tokenize, write MDS, finish), W workers
  chunk      ``ettin_data.stages.chunk.run`` -c 1024 -m 512 -a 128 --backfill --backfill-no-duplicates
  1 worker   tokenize with one single-threaded worker (the rayon pool is pinned to one thread before the
             stage runs; by default a lone worker would use all cores' threads), and raw encode_batch in
             one process, to show the per-token overhead without the process pool's start-up
  fixed cost tokenize (and chunk) on two one-document units with W workers: pool start-up, tokenizer
             load, finish; reported ratios "without the fixed cost" subtract it (the steady state)
Peak RSS per worker: the largest worker process (ru_maxrss of the pool's children; the in-process worker
itself for 1 worker). Results: a table on stdout and ``bench-out/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DOCS_PER_UNIT = 250
BATCH = 1000
TOKENS_PER_COPY = 359_345  # the built-in corpus with ModernBERT [CLS]/[SEP] (checked after conversion)


# ---------------------------------------------------------------- corpus


def _copies(tokens: int) -> int:
    return max(1, -(-tokens // TOKENS_PER_COPY))


def build_corpus(out: Path, copies: int) -> Path:
    """A text MDS dataset of ``copies`` varied copies of the built-in corpus (cached)."""
    from ettin_data.config import ConvertConfig
    from ettin_data.corpus import python_docs
    from ettin_data.stages import convert

    name = f"python-docs-x{copies}"
    root = out / "corpus" / name
    if (root / "ettin_meta.json").is_file():
        return root
    docs = list(python_docs())
    jsonl = out / "corpus" / f"{name}.jsonl"
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    with open(jsonl, "w") as f:
        for k in range(copies):
            for i, d in enumerate(docs):
                paras = d["text"].split("\n\n")
                if k:
                    random.Random(k * 1_000_003 + i).shuffle(paras)
                f.write(json.dumps({"id": f"{d['id']}#{k}", "text": "\n\n".join(paras)}) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    convert.run(ConvertConfig(inputs=[str(jsonl)], output=str(root), docs_per_shard=DOCS_PER_UNIT, workers=1))
    jsonl.unlink()
    return root


def tiny_corpus(out: Path) -> Path:
    """Two units of one short document: a run on it measures the fixed cost (pool start-up, finish)."""
    from ettin_data.mds import ShardWriter

    root = out / "corpus" / "tiny"
    if not root.is_dir():
        for unit in ("a", "b"):
            with ShardWriter(root / unit, {"id": "str", "text": "str"}) as w:
                w.write({"id": unit, "text": "A short document about tokenizers."})
    return root


# ---------------------------------------------------------------- child processes


def _usage() -> dict[str, float]:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"rss_self_mb": me.ru_maxrss / 1024, "rss_children_mb": kids.ru_maxrss / 1024,
            "cpu_self_s": me.ru_utime + me.ru_stime, "cpu_children_s": kids.ru_utime + kids.ru_stime}


def _texts(data: Path) -> list[str]:
    from ettin_data.mds import UnitReader, find_units

    return [s["text"] for u in find_units(data) for s in UnitReader(data / u).iter_samples(["text"])]


def child_raw(args: argparse.Namespace) -> dict[str, Any]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(args.tok)
    texts = _texts(Path(args.data))[args.index::args.of]
    encode = getattr(tok, args.method)
    encode(texts[:8])  # warm up
    print("ready", flush=True)
    sys.stdin.readline()
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    for i in range(0, len(texts), BATCH):
        n += sum(len(e.ids) for e in encode(texts[i:i + BATCH]))
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "tokens": n,
            "docs": len(texts), **_usage()}


def _pin_one_thread() -> None:
    """Build tokenizers' rayon pool with one thread before the executor raises the thread count."""
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    from tokenizers import Tokenizer, models

    Tokenizer(models.BPE()).encode_batch(["a", "b", "c"])


def child_stage(args: argparse.Namespace) -> dict[str, Any]:
    if args.pin:
        _pin_one_thread()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    if args.stage == "tokenize":
        from ettin_data.config import TokenizeConfig
        from ettin_data.stages import tokenize

        cfg = TokenizeConfig(inputs=[args.data], output=str(out), tokenizer=args.tok, workers=args.workers)
        t0 = time.perf_counter()
        summary = tokenize.run(cfg)
    else:
        from ettin_data.config import ChunkConfig
        from ettin_data.stages import chunk

        cfg = ChunkConfig(inputs=[args.data], output=str(out), chunk_size=1024, min_chunk_size=512,
                          always_skip_size=128, backfill=True, backfill_no_duplicates=True, workers=args.workers)
        t0 = time.perf_counter()
        summary = chunk.run(cfg)
    seconds = time.perf_counter() - t0
    counts = summary.get("counts", {})
    use = _usage()
    return {"seconds": seconds, "tokens": summary.get("tokens", counts.get("tokens_written")),
            "units": summary.get("units"), "cpu_seconds": use["cpu_self_s"] + use["cpu_children_s"], **use}


def _child(mode: str, **kw: Any) -> list[str]:
    cmd = [sys.executable, __file__, "--child", mode]
    for k, v in kw.items():
        if v is True:
            cmd.append(f"--{k}")
        elif v is not None and v is not False:
            cmd += [f"--{k}", str(v)]
    return cmd


def run_stage(stage: str, data: Path, out: Path, tok: str, workers: int, pin: bool = False) -> dict[str, Any]:
    res = subprocess.run(_child("stage", stage=stage, data=data, out=out, tok=tok, workers=workers, pin=pin),
                         capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{stage} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_raw(data: Path, tok: str, workers: int, method: str) -> dict[str, Any]:
    """W single-threaded processes load their share of the texts, then start together on a signal."""
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    procs = [subprocess.Popen(_child("raw", data=data, tok=tok, index=i, of=workers, method=method),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
             for i in range(workers)]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("raw encoder did not start")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode:
            raise RuntimeError("raw encoder failed")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return {"seconds": max(r["seconds"] for r in results), "tokens": sum(r["tokens"] for r in results),
            "cpu_seconds": sum(r["cpu_seconds"] for r in results), "per_process": results}


# ---------------------------------------------------------------- main


def _has_chunk() -> bool:
    try:
        from ettin_data.stages import chunk
    except ImportError:
        return False
    return hasattr(chunk, "run")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=10_000_000, help="tokens of the large corpus")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="runs of the main ratio (best of each side)")
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--child")
    for k in ("stage", "data", "tok", "method"):
        ap.add_argument(f"--{k}")
    ap.add_argument("--index", type=int)
    ap.add_argument("--of", type=int)
    ap.add_argument("--pin", action="store_true")
    args = ap.parse_args()
    if args.child:
        result = child_raw(args) if args.child == "raw" else child_stage(args)
        print(json.dumps(result), flush=True)
        return
    bench(args)


def bench(args: argparse.Namespace) -> None:
    from ettin_data.tokenizer import BUILTIN_MODERNBERT, load_tokenizer_bytes, save_tokenizer_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    w = args.workers
    t0 = time.perf_counter()
    tok = str(save_tokenizer_json(load_tokenizer_bytes(BUILTIN_MODERNBERT), out / "modernbert"))
    large = build_corpus(out, _copies(args.tokens))
    small = build_corpus(out, _copies(args.tokens // 2))
    print(f"corpus ready in {time.perf_counter() - t0:.1f}s: {large} and {small}", file=sys.stderr)
    runs: dict[str, Any] = {}

    def note(key: str, r: dict[str, Any]) -> None:
        runs.setdefault(key, []).append(r)
        print(f"  {key}: {r['seconds']:.2f}s", file=sys.stderr)

    for _ in range(args.repeat):  # interleaved: load changes on a shared machine hit both sides
        note("raw_encode_batch", run_raw(large, tok, w, "encode_batch"))
        note("tokenize", run_stage("tokenize", large, out / "tokens", tok, w))
    note("raw_encode_batch_1_process", run_raw(large, tok, 1, "encode_batch"))
    note("tokenize_1_worker", run_stage("tokenize", large, out / "tokens-1", tok, 1, pin=True))
    note("tokenize_small", run_stage("tokenize", small, out / "tokens-small", tok, w))
    tiny = tiny_corpus(out)
    note("tokenize_fixed_cost", run_stage("tokenize", tiny, out / "tokens-tiny", tok, w))
    if _has_chunk():
        note("chunk", run_stage("chunk", out / "tokens", out / "chunks", tok, w))
        note("chunk_fixed_cost", run_stage("chunk", out / "tokens-tiny", out / "chunks-tiny", tok, w))

    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
    tokens = best["tokenize"]["tokens"]
    raw, e2e = best["raw_encode_batch"], best["tokenize"]
    one = best["tokenize_1_worker"]
    def worker_rss(r: dict[str, Any]) -> float:  # pool workers are children; a lone worker runs in-process
        return r["rss_children_mb"] or r["rss_self_mb"]

    rss_large, rss_small = worker_rss(e2e), worker_rss(best["tokenize_small"])
    results: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_avg_at_end": os.getloadavg(), "shared": True},
        "corpus": {"large_tokens": tokens, "small_tokens": best["tokenize_small"]["tokens"],
                   "docs_per_unit": DOCS_PER_UNIT},
        "workers": w,
        "seconds": {k: round(v["seconds"], 3) for k, v in best.items()},
        "tokenize_vs_raw_encode_batch": raw["seconds"] / e2e["seconds"],
        "tokenize_1_worker_vs_raw_1_process": best["raw_encode_batch_1_process"]["seconds"] / one["seconds"],
        "tokenize_vs_raw_encode_batch_cpu": min(r["cpu_seconds"] for r in runs["raw_encode_batch"])
        / min(r["cpu_seconds"] for r in runs["tokenize"]),
        "tokenize_mtok_per_s": tokens / e2e["seconds"] / 1e6,
        "raw_mtok_per_s": raw["tokens"] / raw["seconds"] / 1e6,
        "speedup_1_to_2_workers": one["seconds"] / e2e["seconds"],
        "one_worker_cpu_per_wall": one["cpu_self_s"] / one["seconds"],
        "peak_rss_per_worker_mb": {"small": rss_small, "large": rss_large},
        "rss_growth": rss_large / rss_small,
        "runs": runs,
    }
    fixed = best["tokenize_fixed_cost"]["seconds"]
    results["tokenize_fixed_cost_s"] = fixed
    results["tokenize_vs_raw_without_fixed_cost"] = raw["seconds"] / max(e2e["seconds"] - fixed, 1e-9)
    if "chunk" in best:
        results["chunk_fraction_of_tokenize"] = best["chunk"]["seconds"] / e2e["seconds"]
        results["chunk_fixed_cost_s"] = best["chunk_fixed_cost"]["seconds"]
        chunk_steady = max(best["chunk"]["seconds"] - best["chunk_fixed_cost"]["seconds"], 0.0)
        results["chunk_fraction_without_fixed_costs"] = chunk_steady / max(e2e["seconds"] - fixed, 1e-9)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    _table(results, w)


def _table(r: dict[str, Any], w: int) -> None:
    rows = [
        ("corpus", f"{r['corpus']['large_tokens'] / 1e6:.1f}M tokens (small: {r['corpus']['small_tokens'] / 1e6:.1f}M)",
         ""),
        (f"raw encode_batch, {w} x 1-thread processes", f"{r['raw_mtok_per_s']:.2f} M tok/s", ""),
        (f"tokenize end-to-end, {w} workers", f"{r['tokenize_mtok_per_s']:.2f} M tok/s", ""),
        ("tokenize / raw encode_batch", f"{r['tokenize_vs_raw_encode_batch']:.3f}x", ">= 0.95x"),
        ("same, 1 worker vs 1 process (no pool start)", f"{r['tokenize_1_worker_vs_raw_1_process']:.3f}x",
         "(info)"),
        (f"same, without the fixed cost ({r['tokenize_fixed_cost_s']:.2f}s: pool start, finish)",
         f"{r['tokenize_vs_raw_without_fixed_cost']:.3f}x", "(info: steady state)"),
        ("same, CPU seconds instead of wall", f"{r['tokenize_vs_raw_encode_batch_cpu']:.3f}x",
         "(info: less sensitive to other load)"),
    ]
    if "chunk_fraction_of_tokenize" in r:
        rows.append(("chunk time / tokenize time", f"{100 * r['chunk_fraction_of_tokenize']:.1f}%", "<= 5%"))
        rows.append((f"same, without fixed costs (chunk {r['chunk_fixed_cost_s']:.2f}s)",
                     f"{100 * r['chunk_fraction_without_fixed_costs']:.1f}%", "(info: steady state)"))
    else:
        rows.append(("chunk", "not available", "<= 5%"))
    rows += [
        (f"speed-up 1 -> {w} workers", f"{r['speedup_1_to_2_workers']:.2f}x", ">= 1.8x"),
        ("peak RSS per worker (small / large)",
         f"{r['peak_rss_per_worker_mb']['small']:.0f} / {r['peak_rss_per_worker_mb']['large']:.0f} MB "
         f"(x{r['rss_growth']:.2f})", "<= 1.5 GB, flat"),
        ("load average at end", " ".join(f"{x:.1f}" for x in r["machine"]["load_avg_at_end"]),
         f"{r['machine']['cores']} cores, shared"),
    ]
    width = max(len(a) for a, _, _ in rows)
    print(f"\nettin-data bench ({r['machine']['cores']} cores; seconds: {r['seconds']})")
    for a, b, c in rows:
        print(f"  {a:<{width}}  {b:<32} {c}")


if __name__ == "__main__":
    main()
