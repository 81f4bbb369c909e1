"""``sample mix MIXFILE``: a declarative data mixture (the seed's per-phase mixtures).

The TOML file names a total budget and sources (chunked datasets) with a proportion or a token
count each; relative paths are relative to the file::

    total_tokens = 2_000_000_000
    [sources.dclm]
    path = "chunks/dclm"
    proportion = 0.7
    [sources.code]
    path = "/data/chunks/code"
    tokens = 600_000_000

Each source is down- or upsampled to its share exactly like ``sample budget --upsample`` (whole units,
seeded per source, repeats hard-linked) into ``OUTPUT/<source name>/<unit>`` (each source folder and
the output root get a root ``index.json``); ``sampling_summary.json``
and the printed summary give planned vs achieved tokens per source.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from .. import units as U
from ..config import MixConfig
from ..dataset import read_meta
from ..errors import ConfigError
from ..jsonio import write_json_atomic
from ..sampling import (
    SUMMARY_FILE,
    SamplingStage,
    copy_tokenizer,
    dataset_units,
    finish_dataset,
    read_input,
    rng_for,
    same_tokenizer,
)
from ..stage import Finished
from ..state import require_complete
from ..stats import Stats
from .sample_budget import Budget, choose_units, pick_tasks, picks_summary

__all__ = ["Mix", "read_mix"]

MIX_RECORD = ".ettin_mix.json"
def read_mix(path: str | Path) -> tuple[int, dict[str, dict[str, Any]]]:
    """Parse and check a mix file: (total tokens, {name: {path, planned}}), in file order."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"mix file {p} does not exist")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p} is not valid TOML: {e}") from None
    unknown = sorted(set(data) - {"total_tokens", "sources"})
    if unknown:
        raise ConfigError(f"{p}: unknown key(s) {', '.join(unknown)}; expected total_tokens and [sources.NAME]")
    sources = data.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise ConfigError(f"{p}: no sources; add tables like [sources.web] with path and proportion or tokens")
    total = data.get("total_tokens")
    if total is not None and (not isinstance(total, int) or total <= 0):
        raise ConfigError(f"{p}: total_tokens must be a positive integer, got {total!r}")
    out: dict[str, dict[str, Any]] = {}
    proportion_sum = 0.0
    for name, src in sources.items():
        if not isinstance(src, dict) or "path" not in src:
            raise ConfigError(f"{p}: [sources.{name}] needs a path")
        extra = sorted(set(src) - {"path", "proportion", "tokens"})
        if extra or ("proportion" in src) == ("tokens" in src):
            raise ConfigError(f"{p}: [sources.{name}] needs path and exactly one of proportion or tokens"
                              + (f" (unknown: {', '.join(extra)})" if extra else ""))
        if "tokens" in src:
            planned = src["tokens"]
            if not isinstance(planned, int) or planned <= 0:
                raise ConfigError(f"{p}: [sources.{name}] tokens must be a positive integer")
        else:
            prop = src["proportion"]
            if not isinstance(prop, (int, float)) or not 0 < prop <= 1:
                raise ConfigError(f"{p}: [sources.{name}] proportion must be in (0, 1], got {prop!r}")
            if total is None:
                raise ConfigError(f"{p}: [sources.{name}] has a proportion, so total_tokens is required")
            proportion_sum += prop
            planned = round(prop * total)
        path = Path(src["path"]).expanduser()
        out[name] = {"path": str(path if path.is_absolute() else p.parent / path), "planned": planned}
    if proportion_sum > 1 + 1e-9:
        raise ConfigError(f"{p}: proportions add up to {proportion_sum:g} > 1")
    fixed = sum(v["planned"] for v in out.values())
    if total is not None and abs(fixed - total) > len(out):
        raise ConfigError(f"{p}: the sources plan {fixed:,} tokens but total_tokens is {total:,}; "
                          "make proportions and token counts add up to the total")
    return fixed if total is None else total, out


def _resolved(cfg: MixConfig) -> dict[str, Any]:
    total, sources = read_mix(_mixfile(cfg))
    return {"total_tokens": total, "sources": {n: {"path": s["path"], "planned": s["planned"]}
                                               for n, s in sources.items()}}


def _mixfile(cfg: MixConfig) -> str:
    if len(cfg.inputs) != 1:
        raise ConfigError(f"expected one MIXFILE (TOML), got {len(cfg.inputs)}")
    return cfg.inputs[0]


class Mix(SamplingStage):
    name = "sample mix"
    Config = MixConfig
    process_unit = Budget.process_unit  # a mix is budget draws from several sources

    def plan(self, cfg: MixConfig) -> list[U.Task]:
        _, sources = read_mix(_mixfile(cfg))
        for s in sources.values():
            require_complete(s["path"])
        inputs = {name: read_input(s["path"], cfg) for name, s in sources.items()}
        same_tokenizer(inputs.values())
        tasks = []
        for name, src in sources.items():
            picks = choose_units(dataset_units(src["path"], inputs[name].check_limit), src["planned"],
                                 rng_for(cfg.seed, "mix", name), upsample=True, exact=cfg.exact, where=src["path"])
            tasks += pick_tasks(picks, prefix=f"{name}/")
        return tasks

    def finish(self, cfg: MixConfig, stats: Stats, tasks: list[U.Task]) -> Finished:
        out = Path(cfg.output)
        total, sources = read_mix(_mixfile(cfg))
        for name in sources:  # each source is also a dataset of its own (its own root index and stats)
            finish_dataset(out / name, [t.name.split("/", 1)[1] for t in tasks if t.name.startswith(f"{name}/")])
        totals = finish_dataset(out, [t.name for t in tasks])
        inputs = [read_input(s["path"], cfg) for s in sources.values()]
        tok = same_tokenizer(inputs)
        copy_tokenizer([s["path"] for s in sources.values()], out, inputs)
        rows = picks_summary(tasks, out)
        per_source = {}
        for (name, src), inp in zip(sources.items(), inputs, strict=True):
            mine = [r for r in rows if r["output"].startswith(f"{name}/")]
            achieved = sum(r["tokens"] for r in mine)
            available = sum(u.tokens for u in dataset_units(src["path"], inp.check_limit))
            per_source[name] = {"path": src["path"], "planned": src["planned"], "achieved": achieved,
                                "available": available, "factor": round(achieved / available, 6),
                                "units": len(mine), "repeats": sum(1 for r in mine if r["repeat"])}
        summary = {
            "total_tokens": total,
            "achieved_tokens": totals["total_tokens_written"],
            "samples": totals["samples"],
            "sources": per_source,
            "bytes_linked": stats["bytes_linked"],
            "bytes_written": stats["bytes_written"],
        }
        write_json_atomic(out / SUMMARY_FILE, {**summary, "seed": cfg.seed, "exact": cfg.exact, "units": rows})
        upstream = [m for m in (read_meta(s["path"]) for s in sources.values()) if m]  # the sources, not the TOML
        return self.finished(summary, tok, inputs, upstream=upstream,
                             mix={n: {"path": s["path"], "planned": s["planned"]} for n, s in sources.items()})

    def check(self, cfg: MixConfig) -> list[str]:
        """Refuse to resume into an output planned from another mix (the TOML may change under the same name)."""
        f = Path(cfg.output) / MIX_RECORD
        try:
            old = json.loads(f.read_text()) if f.is_file() else None
        except (OSError, ValueError):
            old = None
        if old is None or old == _resolved(cfg):
            return []
        if not cfg.overwrite:
            raise ConfigError(f"{cfg.output} was written from another mix (see {f}); pass --overwrite to redo it, "
                              "or choose a new output folder")
        return [f"mix: {f} differs"]

    def prepare(self, cfg: MixConfig) -> None:
        write_json_atomic(Path(cfg.output) / MIX_RECORD, _resolved(cfg))

    def render(self, summary: dict[str, Any]) -> None:
        from ..report import print_summary, print_table

        sources = summary.get("sources")
        print_summary({k: v for k, v in summary.items() if k not in ("sources", "tokenizer", "counts")})
        if sources:
            print_table("planned vs achieved tokens per source",
                        [(n, f"planned {s['planned']:,}  achieved {s['achieved']:,}  ({s['factor']:.3f}x of "
                          f"{s['available']:,} available, {s['repeats']} repeated units)") for n, s in sources.items()])
