"""``make bench``: tokenize (both engines) and chunk throughput against the raw tokenizers, in one run.

Corpus (offline, reproducible, cached under ``bench-out/corpus``): the built-in Python documentation corpus
repeated, each copy with the paragraphs of every document shuffled by a seeded RNG (copy k, document i), so
copies differ (single-paragraph documents repeat); converted to text MDS units of 250 documents (~0.36M tokens each).
Three sizes: MAIN (>= --tokens, default 30M tokens), SMALL (half of it, for the memory check) and LARGE
(>= --large-tokens, default 240M; 0 skips it). A run's fixed cost (~1 s: start-up, imports, tokenizer
load, pool, finish; measured on its own below) is what a user sees, not what dominates: users prepare
10^11+ tokens. At 30M tokens it is still ~30% of auto's time, so the ratios of the fast rows (auto, tokie,
chunk, 1 -> W workers) are also measured on LARGE, where it is a few percent.

Every figure is a whole process timed from outside (Python start-up, imports, pool start and finish
included); the tokenizer is builtin:modernbert, saved once as a file. W = --workers (default 2).
  raw tokenizers  ``Tokenizer.encode_batch`` (batches of 1,000), texts already in memory, split evenly across W
                  single-threaded processes (RAYON_NUM_THREADS=1); wall = slowest process, after a start signal;
                  also ``encode_batch_fast`` (no offsets; what the reference engine calls), for information
  raw tokie       the same with tokie ``encode_batch_flat``, each process pinned to one CPU (tokie sizes its
  raw fastokens   threads from the CPU mask, not RAYON_NUM_THREADS); and with fastokens (FASTOKENS_BPE_THREADS=1),
                  the engine auto uses for this tokenizer: the fast limit
  tokenize        ``ettin-data tokenize`` end to end (read MDS, tokenize, write MDS, finish), W workers, with
                  ``--engine tokenizers`` and ``--engine auto``; auto also on SMALL, and with 1 worker on one CPU
                  (for the 1 -> W speed-up; a lone worker would otherwise use every core's threads)
  chunk           ``chunk -c 1024 -m 512 -a 128 --backfill --backfill-no-duplicates`` of the auto output
  fixed cost      tokenize auto and chunk on two one-document units: start-up, tokenizer load, finish (best of 3)
  floor           what any writer of these shards pays per token, in W pinned 1-thread processes started on a
                  signal like the raw rows: tokenize = read the text units + fastokens + write token units (the
                  same reading and writing code auto uses, nothing else: no guard, verification, statistics,
                  driver, pool); chunk = read the token units and write their samples again (decompression,
                  zstd level 3, sha1). auto / floor and chunk / floor say how much the stages add on top.
  LARGE           raw tokie and fastokens, tokenize auto (W workers and 1 worker), chunk, both floors (raw
                  tokenizers: its rate is the MAIN one, which has no fixed cost in it)
  MULTILINGUAL    real text in ~190 languages (``bench_multilingual.py``; --multilingual 0 skips it)
The stage processes run as after installation, with compiled bytecode (this sandbox sets
PYTHONDONTWRITEBYTECODE, which would recompile every module in every process: the children use
``bench-out/pycache`` instead) and tokie's tokenizer cache (``bench-out/cache``; the first run of a
tokenizer parses it, ~0.25 s more): an untimed warm-up run fills both.
Peak RSS per worker: the largest worker process (ru_maxrss of the pool's children; the process itself for
1 worker). The guard's counts (documents routed to tokenizers, verified, units redone) come from the auto
run's summary. Results: a table on stdout and ``bench-out/results.json``.
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

from together import run_together

DOCS_PER_UNIT = 250
BATCH = 1000
TOKENS_PER_COPY = 359_345  # the built-in corpus with ModernBERT [CLS]/[SEP] (checked after conversion)
CHUNK_ARGS = ["-c", "1024", "-m", "512", "-a", "128", "--backfill", "--backfill-no-duplicates"]


# ---------------------------------------------------------------- corpus


def _copies(tokens: int) -> int:
    return max(1, -(-tokens // TOKENS_PER_COPY))


def build_corpus(out: Path, copies: int) -> Path:
    """A text MDS dataset of ``copies`` varied copies of the built-in corpus (cached)."""
    from ettin_data import run
    from ettin_data.config import ConvertConfig
    from ettin_data.corpus import python_docs

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
    run(ConvertConfig(inputs=[str(jsonl)], output=str(root), docs_per_shard=DOCS_PER_UNIT,
                      workers=len(os.sched_getaffinity(0))))  # same units for any number of workers
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


def _texts(data: Path, index: int = 0, of: int = 1) -> list[str]:
    """Every ``of``-th text of the dataset, from the ``index``-th (only those are kept in memory)."""
    from ettin_data.mds import UnitReader, find_units

    docs = (s["text"] for u in find_units(data) for s in UnitReader(data / u).iter_samples(["text"]))
    return [t for i, t in enumerate(docs) if i % of == index]


def child_floor(args: argparse.Namespace) -> dict[str, Any]:
    """The format's floor, in one pinned single-threaded process over every ``of``-th unit: ``tokenize``
    reads each text unit (decompression, sha1 check, UTF-8 decoding), encodes it with fastokens (the engine
    auto uses for this tokenizer) in one call and
    writes a token unit (sample bytes, zstd level 3, sha1 of both, files, index.json); ``chunk`` reads each
    token unit and writes its shard bytes again (decompression + sha1 check, zstd level 3 + sha1, files).
    No guard, verification, statistics, driver, pool, progress or start-up: what any writer of these MDS
    shards pays per token, against which auto and chunk are measured."""

    from ettin_data.mds import ShardWriter, UnitReader, find_units, load_shard
    from ettin_data.stages.tokenize import token_columns
    from ettin_data.token_rows import token_samples

    data, scratch = Path(args.data), Path(args.out) / f"floor-{args.index}"
    units = [u for i, u in enumerate(find_units(data)) if i % args.of == args.index]
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[args.index % len(cpus)]})
    if args.method == "tokenize":
        from ettin_data.engines.library import LIBRARIES

        flat = LIBRARIES["fastokens"].load(args.tok).encode
        flat(["warm up"])
    shutil.rmtree(scratch, ignore_errors=True)
    print("ready", flush=True)
    sys.stdin.readline()
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    for k, unit in enumerate(units):
        reader = UnitReader(data / unit)
        if args.method == "tokenize":
            rows = [r for shard in reader.shards() for r in shard.columns(("id", "text"))]
            ids, lengths = flat([t for _, t in rows])
            with ShardWriter(scratch / str(k), token_columns("uint32", False)) as w:
                for sample, _ in token_samples([d for d, _ in rows], ids, lengths, lengths > 0):
                    w.write_raw(sample)
            n += len(ids)
        else:
            for entry in reader.index.shards:
                shard = load_shard(reader.dirname, entry)
                n += sum(int(x) for (x,) in shard.columns(("len",)))
                with ShardWriter(scratch / str(k), entry.columns) as w:
                    off = shard.offsets.tolist()
                    for a, b in zip(off[:-1], off[1:], strict=True):
                        w.write_raw(shard.data[a:b])
    seconds = time.perf_counter() - t0
    shutil.rmtree(scratch, ignore_errors=True)
    return {"seconds": seconds, "cpu_seconds": time.process_time() - c0, "tokens": n, "units": len(units),
            **_usage()}


def child_raw(args: argparse.Namespace) -> dict[str, Any]:
    if args.method in ("tokenize", "chunk"):
        return child_floor(args)
    texts = _texts(Path(args.data), args.index, args.of)
    if args.method in ("tokie", "fastokens"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[args.index % len(cpus)]})  # one thread (tokie ignores RAYON_NUM_THREADS)
        from ettin_data.engines.library import LIBRARIES

        flat = LIBRARIES[args.method].load(args.tok).encode  # the engine's own batch call, nothing around it

        def count(batch: list[str]) -> int:
            return len(flat(batch)[0])
    else:
        from tokenizers import Tokenizer

        encode = getattr(Tokenizer.from_file(args.tok), args.method)

        def count(batch: list[str]) -> int:
            return sum(len(e.ids) for e in encode(batch))
    count(texts[:8])  # warm up
    print("ready", flush=True)
    sys.stdin.readline()
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    for i in range(0, len(texts), BATCH):
        n += count(texts[i:i + BATCH])
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "tokens": n,
            "docs": len(texts), **_usage()}


def run_stage(stage: str, data: Path, out: Path, tok: str, workers: int, engine: str = "auto",
              one_cpu: bool = False, extra: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """``ettin-data STAGE`` as a whole process, timed from outside; its summary and its children's peak RSS.
    ``one_cpu``: the process may use one CPU only (a lone worker otherwise gets every core's threads);
    ``extra``: more options."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "ettin_data", stage, str(data), "-o", str(out), "-w", str(workers), "-q", "--json"]
    cmd += ["-t", tok, "--engine", engine] if stage == "tokenize" else CHUNK_ARGS
    cmd += list(extra)
    probe = [sys.executable, "-c", "import resource, subprocess, sys, json; r = subprocess.run(sys.argv[1:]); "
             "u = resource.getrusage(resource.RUSAGE_CHILDREN); print(json.dumps({'rc': r.returncode, "
             "'rss_max_mb': u.ru_maxrss / 1024, 'cpu_s': u.ru_utime + u.ru_stime}), file=sys.stderr)", *cmd]
    t0 = time.perf_counter()
    cpu = min(os.sched_getaffinity(0))
    res = subprocess.run(probe, capture_output=True, text=True, env=_ENV,
                         preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if one_cpu else None)
    seconds = time.perf_counter() - t0
    usage = json.loads(res.stderr.strip().splitlines()[-1]) if res.stderr.strip() else {"rc": res.returncode}
    if res.returncode or usage.get("rc"):
        raise RuntimeError(f"{stage} failed:\n{res.stderr[-3000:]}")
    summary = json.loads(res.stdout)
    counts = summary.get("counts", {})
    return {"seconds": seconds, "tokens": summary.get("tokens", counts.get("tokens_written")),
            "units": summary.get("units"), "engine": summary.get("engine"), "cpu_seconds": usage["cpu_s"],
            "rss_max_mb": usage["rss_max_mb"]}  # the largest process of the run (driver or a worker)


_ENV: dict[str, str] = dict(os.environ)  # the children's environment (see child_env)


def child_env(out: Path) -> dict[str, str]:
    """The stage processes' environment: compiled bytecode and tokie's tokenizer cache, both under ``out``."""
    env = dict(os.environ)
    if env.pop("PYTHONDONTWRITEBYTECODE", None) is not None or sys.flags.dont_write_bytecode:
        env["PYTHONPYCACHEPREFIX"] = str((out / "pycache").resolve())
    env.setdefault("ETTIN_DATA_CACHE", str((out / "cache").resolve()))
    return env


def _child(mode: str, **kw: Any) -> list[str]:
    cmd = [sys.executable, __file__, "--child", mode]
    for k, v in kw.items():
        if v is not None:
            cmd += [f"--{k}", str(v)]
    return cmd


def run_raw(data: Path, tok: str, workers: int, method: str, out: Path | None = None) -> dict[str, Any]:
    """W single-threaded processes load their share of the texts, then start together on a signal
    (``method`` "tokenize"/"chunk": the format's floor, see :func:`child_floor`, writing under ``out``)."""
    env = {**_ENV, "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    results = run_together([_child("raw", data=data, tok=tok, index=i, of=workers, method=method, out=out)
                            for i in range(workers)], env, f"raw {method}")
    return {"seconds": max(r["seconds"] for r in results), "tokens": sum(r["tokens"] for r in results),
            "cpu_seconds": sum(r["cpu_seconds"] for r in results), "per_process": results}


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=30_000_000, help="tokens of the main corpus")
    ap.add_argument("--large-tokens", type=int, default=240_000_000,
                    help="tokens of the large corpus (fast rows only; 0: skip it)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="runs of the main rows (best of each)")
    ap.add_argument("--multilingual", type=int, default=1, help="1: also the multilingual rows (bench_multilingual.py)")
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--child")
    for k in ("data", "tok", "method"):
        ap.add_argument(f"--{k}")
    ap.add_argument("--index", type=int)
    ap.add_argument("--of", type=int)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child_raw(args)), flush=True)
        return
    bench(args)


def bench(args: argparse.Namespace) -> None:
    from ettin_data.tokenizer import BUILTIN_MODERNBERT, load_tokenizer_bytes, save_tokenizer_json

    global _ENV
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _ENV = child_env(out)
    w = args.workers
    t0 = time.perf_counter()
    tok = str(save_tokenizer_json(load_tokenizer_bytes(BUILTIN_MODERNBERT), out / "modernbert"))
    main = build_corpus(out, _copies(args.tokens))
    small = build_corpus(out, _copies(args.tokens // 2))
    large = build_corpus(out, _copies(args.large_tokens)) if args.large_tokens else None
    tiny = tiny_corpus(out)
    print(f"corpus ready in {time.perf_counter() - t0:.1f}s: {main}, {small}, {large}", file=sys.stderr)
    run_stage("tokenize", tiny, out / "tokens-tiny", tok, w, "auto")  # warm-up: bytecode, tokie's cache
    runs: dict[str, Any] = {}

    def note(key: str, r: dict[str, Any]) -> dict[str, Any]:
        runs.setdefault(key, []).append(r)
        print(f"  {key}: {r['seconds']:.2f}s", file=sys.stderr)
        return r

    for _ in range(args.repeat):  # interleaved: load changes on a shared machine hit every row alike
        note("raw_tokenizers", run_raw(main, tok, w, "encode_batch"))
        note("raw_tokenizers_fast", run_raw(main, tok, w, "encode_batch_fast"))
        note("raw_tokie", run_raw(main, tok, w, "tokie"))
        note("raw_fastokens", run_raw(main, tok, w, "fastokens"))
        note("tokenize_auto", run_stage("tokenize", main, out / "tokens", tok, w, "auto"))
        note("tokenize_tokenizers", run_stage("tokenize", main, out / "tokens-ref", tok, w, "tokenizers"))
    note("tokenize_auto_1_worker", run_stage("tokenize", main, out / "tokens-1", tok, 1, "auto", one_cpu=True))
    note("tokenize_auto_small", run_stage("tokenize", small, out / "tokens-small", tok, w, "auto"))
    note("chunk", run_stage("chunk", out / "tokens", out / "chunks", tok, w))
    note("floor_tokenize", run_raw(main, tok, w, "tokenize", out))
    note("floor_chunk", run_raw(out / "tokens", tok, w, "chunk", out))
    for _ in range(3):
        note("tokenize_auto_fixed_cost", run_stage("tokenize", tiny, out / "tokens-tiny", tok, w, "auto"))
        note("chunk_fixed_cost", run_stage("chunk", out / "tokens-tiny", out / "chunks-tiny", tok, w))
    identical = _same_shards(out / "tokens", out / "tokens-ref")
    shutil.rmtree(out / "tokens-ref", ignore_errors=True)
    if large is not None:
        for _ in range(args.repeat):
            note("large_raw_tokie", run_raw(large, tok, w, "tokie"))
            note("large_raw_fastokens", run_raw(large, tok, w, "fastokens"))
            note("large_tokenize_auto", run_stage("tokenize", large, out / "tokens-large", tok, w, "auto"))
            note("large_chunk", run_stage("chunk", out / "tokens-large", out / "chunks-large", tok, w))
            note("large_floor_tokenize", run_raw(large, tok, w, "tokenize", out))
            note("large_floor_chunk", run_raw(out / "tokens-large", tok, w, "chunk", out))
        note("large_tokenize_auto_1_worker", run_stage("tokenize", large, out / "tokens-large-1", tok, 1, "auto",
                                                       one_cpu=True))
        for name in ("tokens-large", "tokens-large-1", "chunks-large"):
            shutil.rmtree(out / name, ignore_errors=True)
    ml = None
    if args.multilingual:
        import bench_multilingual

        ml = bench_multilingual.measure(out, tok, w, run_raw, run_stage, note, _same_shards, args.repeat)
    results = _results(runs, w, identical)
    results["multilingual"] = ml
    (out / "results.json").write_text(json.dumps(results, indent=1))
    _table(results, w)


def _same_shards(a: Path, b: Path) -> bool:
    """Are the unit files of two token outputs byte-identical (auto vs tokenizers)?"""
    def files(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("shard.*"))}
    return files(a) == files(b)


def _results(runs: dict[str, Any], w: int, identical: bool) -> dict[str, Any]:
    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
    tokens = best["tokenize_auto"]["tokens"]

    def rate(key: str) -> float:
        return best[key]["tokens"] / best[key]["seconds"] / 1e6

    raw, tokie, fast = rate("raw_tokenizers"), rate("raw_tokie"), rate("raw_fastokens")
    auto, ref = rate("tokenize_auto"), rate("tokenize_tokenizers")
    eng = best["tokenize_auto"].get("engine") or {}
    large = None
    if "large_tokenize_auto" in best:
        l_auto, l_tokie, l_fast = rate("large_tokenize_auto"), rate("large_raw_tokie"), rate("large_raw_fastokens")
        large = {
            "tokens": best["large_tokenize_auto"]["tokens"],
            "mtok_per_s": {"raw_tokie": l_tokie, "raw_fastokens": l_fast, "tokenize_auto": l_auto,
                           "tokenize_auto_1_worker": rate("large_tokenize_auto_1_worker"),
                           "chunk": best["large_tokenize_auto"]["tokens"] / best["large_chunk"]["seconds"] / 1e6,
                           "floor_tokenize": rate("large_floor_tokenize"), "floor_chunk": rate("large_floor_chunk")},
            "auto_vs_raw_tokenizers": l_auto / raw,
            "auto_vs_raw_fast": l_auto / l_fast,
            "floor_tokenize_vs_raw_fast": rate("large_floor_tokenize") / l_fast,
            "auto_vs_floor": l_auto / rate("large_floor_tokenize"),
            "chunk_vs_floor": best["large_tokenize_auto"]["tokens"] / best["large_chunk"]["seconds"] / 1e6
            / rate("large_floor_chunk"),
            "floor_chunk_vs_auto": rate("large_floor_chunk") / l_auto,
            "chunk_speed_vs_auto": best["large_tokenize_auto"]["seconds"] / best["large_chunk"]["seconds"],
            "speedup_1_to_w_workers": best["large_tokenize_auto_1_worker"]["seconds"]
            / best["large_tokenize_auto"]["seconds"],
            "peak_rss_mb": best["large_tokenize_auto"]["rss_max_mb"],
        }
    return {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_avg_at_end": os.getloadavg()},
        "corpus": {"main_tokens": tokens, "small_tokens": best["tokenize_auto_small"]["tokens"],
                   "large_tokens": large and large["tokens"], "docs_per_unit": DOCS_PER_UNIT},
        "workers": w,
        "seconds": {k: round(v["seconds"], 3) for k, v in best.items()},
        "mtok_per_s": {"raw_tokenizers": raw, "raw_tokenizers_fast": rate("raw_tokenizers_fast"), "raw_tokie": tokie,
                       "raw_fastokens": fast,
                       "tokenize_auto": auto, "tokenize_tokenizers": ref,
                       "chunk": tokens / best["chunk"]["seconds"] / 1e6,
                       "floor_tokenize": rate("floor_tokenize"), "floor_chunk": rate("floor_chunk")},
        "auto_vs_raw_tokenizers": auto / raw,
        "auto_vs_raw_fast": auto / fast,
        "floor_tokenize_vs_raw_fast": rate("floor_tokenize") / fast,
        "auto_vs_floor": auto / rate("floor_tokenize"),
        "chunk_vs_floor": tokens / best["chunk"]["seconds"] / 1e6 / rate("floor_chunk"),
        "floor_chunk_vs_auto": rate("floor_chunk") / auto,
        "tokenizers_engine_vs_raw_tokenizers": ref / raw,
        "tokenizers_engine_vs_raw_tokenizers_fast": ref / rate("raw_tokenizers_fast"),
        "chunk_speed_vs_auto": best["tokenize_auto"]["seconds"] / best["chunk"]["seconds"],
        "speedup_1_to_w_workers": best["tokenize_auto_1_worker"]["seconds"] / best["tokenize_auto"]["seconds"],
        "peak_rss_mb": {"small": best["tokenize_auto_small"]["rss_max_mb"],
                        "main": best["tokenize_auto"]["rss_max_mb"]},
        "fixed_cost_s": {"tokenize_auto": best["tokenize_auto_fixed_cost"]["seconds"],
                         "chunk": best["chunk_fixed_cost"]["seconds"]},
        "guard": {k: eng.get(k) for k in ("used", "guard", "documents_fast", "documents_routed", "documents_verified",
                                          "units_spot_checked", "mismatches", "units_redone")},
        "auto_identical_to_tokenizers": identical,
        "large": large,
        "runs": runs,
    }


def _table(r: dict[str, Any], w: int) -> None:
    m, g = r["mtok_per_s"], r["guard"]
    rss = r["peak_rss_mb"]
    big = r.get("large")
    rows = [
        ("corpus", f"{r['corpus']['main_tokens'] / 1e6:.1f}M tokens (small: {r['corpus']['small_tokens'] / 1e6:.1f}M)",
         ""),
        (f"raw tokenizers encode_batch, {w} x 1-thread processes", f"{m['raw_tokenizers']:.2f} M tok/s", "(limit)"),
        ("  encode_batch_fast (no offsets)", f"{m['raw_tokenizers_fast']:.2f} M tok/s", "(info)"),
        (f"raw tokie encode_batch_flat, {w} x 1-thread processes", f"{m['raw_tokie']:.2f} M tok/s", "(info)"),
        (f"raw fastokens encode_batch_flat, {w} x 1-thread processes", f"{m['raw_fastokens']:.2f} M tok/s",
         "(limit)"),
        (f"tokenize --engine tokenizers, {w} workers", f"{m['tokenize_tokenizers']:.2f} M tok/s "
         f"({r['tokenizers_engine_vs_raw_tokenizers']:.2f}x raw tokenizers)", ">= 0.95x"),
        (f"tokenize --engine auto, {w} workers", f"{m['tokenize_auto']:.2f} M tok/s "
         f"({r['auto_vs_raw_tokenizers']:.1f}x raw tokenizers)", ">= 10x"),
        ("  same / raw fastokens", f"{r['auto_vs_raw_fast']:.2f}x", "(info)"),
        (f"floor: read text MDS + fastokens + write token MDS, {w} x 1-thread",
         f"{m['floor_tokenize']:.2f} M tok/s ({r['floor_tokenize_vs_raw_fast']:.2f}x raw fastokens)", "(bound)"),
        ("  auto / floor", f"{r['auto_vs_floor']:.2f}x", "(info)"),
        ("  auto shards == tokenizers shards", "yes" if r["auto_identical_to_tokenizers"] else "NO", "identical"),
        ("  guard", f"{g.get('documents_routed')} routed, {g.get('documents_verified')} verified "
         f"(+{g.get('units_spot_checked')} unit starts), {g.get('units_redone')} units redone", "(info)"),
        (f"chunk, {w} workers", f"{m['chunk']:.2f} M tok/s ({r['chunk_speed_vs_auto']:.2f}x faster than auto)",
         ">= 3x"),
        (f"floor: read + rewrite the token shards, {w} x 1-thread",
         f"{m['floor_chunk']:.2f} M tok/s ({r['floor_chunk_vs_auto']:.2f}x auto: chunk's best)", "(bound)"),
        ("  chunk / floor", f"{r['chunk_vs_floor']:.2f}x", "(info)"),
        (f"speed-up 1 -> {w} workers (auto)", f"{r['speedup_1_to_w_workers']:.2f}x", ">= 1.8x"),
        ("peak RSS, largest process (small / main)",
         f"{rss['small']:.0f} / {rss['main']:.0f} MB (x{rss['main'] / rss['small']:.2f})", "flat"),
        ("fixed cost (tiny input: start-up, load, finish)",
         f"tokenize {r['fixed_cost_s']['tokenize_auto']:.2f}s, chunk {r['fixed_cost_s']['chunk']:.2f}s", "(info)"),
    ]
    if big:
        bm = big["mtok_per_s"]
        rows += [
            (f"LARGE corpus, {big['tokens'] / 1e6:.0f}M tokens", "", ""),
            ("  raw tokie encode_batch_flat", f"{bm['raw_tokie']:.2f} M tok/s", "(info)"),
            ("  raw fastokens encode_batch_flat", f"{bm['raw_fastokens']:.2f} M tok/s", "(limit)"),
            (f"  tokenize --engine auto, {w} workers", f"{bm['tokenize_auto']:.2f} M tok/s "
             f"({big['auto_vs_raw_tokenizers']:.1f}x raw tokenizers)", ">= 12x"),
            ("    same / raw fastokens", f"{big['auto_vs_raw_fast']:.2f}x", "(info)"),
            ("  floor: read text MDS + fastokens + write token MDS",
             f"{bm['floor_tokenize']:.2f} M tok/s ({big['floor_tokenize_vs_raw_fast']:.2f}x raw fastokens)",
             "(bound)"),
            ("    auto / floor", f"{big['auto_vs_floor']:.2f}x", "(info)"),
            (f"  chunk, {w} workers", f"{bm['chunk']:.2f} M tok/s ({big['chunk_speed_vs_auto']:.2f}x faster than auto)",
             ">= 3x"),
            ("  floor: read + rewrite the token shards",
             f"{bm['floor_chunk']:.2f} M tok/s ({big['floor_chunk_vs_auto']:.2f}x auto: chunk's best)",
             "(bound)"),
            ("    chunk / floor", f"{big['chunk_vs_floor']:.2f}x", "(info)"),
            (f"  speed-up 1 -> {w} workers (auto)", f"{big['speedup_1_to_w_workers']:.2f}x", ">= 1.8x"),
            ("  peak RSS, largest process",
             f"{big['peak_rss_mb']:.0f} MB (x{big['peak_rss_mb'] / rss['small']:.2f} small)", "flat"),
        ]
    if r.get("multilingual"):
        import bench_multilingual

        rows += bench_multilingual.rows(r["multilingual"], w)
    rows.append(("load average at end", " ".join(f"{x:.1f}" for x in r["machine"]["load_avg_at_end"]),
                 f"{r['machine']['cores']} cores"))
    width = max(len(a) for a, _, _ in rows)
    print(f"\nettin-data bench ({r['machine']['cores']} cores; seconds, whole processes: {r['seconds']})")
    for a, b, c in rows:
        print(f"  {a:<{width}}  {b:<46} {c}")


if __name__ == "__main__":
    main()
