"""convert: raw text (JSONL, Dolma, Parquet, Hugging Face datasets, the built-in corpus) -> text MDS.

One task per part of a source (``parts.py``: byte ranges of a JSONL file, row groups of a Parquet file, Arrow
files of a ``save_to_disk`` folder, shards of a hub dataset; boundaries depend only on the input and
``--part-size-mb``). A part's documents fill units of ``docs_per_shard`` documents written to
``OUTPUT/<source key>[/part_NNNNN]/split_NNNNN``, each atomically. Resuming skips finished units (their
documents are re-read but not re-written), so unit boundaries never depend on the worker count or on restarts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import progress
from .. import units as U
from ..config import ConvertConfig
from ..dataset import CONVERT_STATS
from ..errors import InputError
from ..jsonio import write_json_atomic
from ..mds import TEXT_COLUMNS, ShardWriter, write_root_index
from ..parts import Part, part_name
from ..sources import BadLine, LineTooLong, Source, discover, read_records, source_parts
from ..stage import Finished, Stage, Unit
from ..stats import Stats

_SURROGATES = re.compile("[\ud800-\udfff]")

__all__ = ["Convert"]


def _label(value: Any, field: str, where: str) -> str:
    """A record's ``id`` or ``domain`` value as stored: strings as they are, numbers (not booleans) as their
    decimal text; anything else, and a string holding a lone surrogate (UTF-8 cannot store it, and replacing
    it could merge two ids), is that line's error."""
    if isinstance(value, str):
        if _SURROGATES.search(value):
            raise BadLine(f"{where}: field {field!r} holds a lone surrogate ({_SURROGATES.search(value)[0]!r}), "
                          "which UTF-8 cannot store")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    kind = "a non-finite number" if isinstance(value, float) else f"a {type(value).__name__}"
    raise BadLine(f"{where}: field {field!r} is {kind}; it must be a string or a number")


def _doc(rec: Any, where: str, cfg: ConvertConfig, stats: Stats) -> tuple[str, str, str | None] | None:
    """Validate one record: (id, text, domain), or None when it is skipped for a reason that is not an error
    (null or empty text; counted). Raises :class:`BadLine` for what makes the record unusable."""
    if isinstance(rec, BadLine):
        raise rec
    if not isinstance(rec, dict):
        raise BadLine(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if cfg.text_field not in rec:
        raise NoTextField(f"{where}: no field {cfg.text_field!r} (fields: {', '.join(map(str, rec)) or 'none'}); "
                          "pass --text-field NAME")
    text = rec[cfg.text_field]
    if text is None:
        stats.add("skipped.null_text")
        return None
    if not isinstance(text, str):
        raise BadLine(f"{where}: field {cfg.text_field!r} is a {type(text).__name__}, not a string")
    if len(text) > cfg.max_line_mb << 20:  # Parquet/HF documents (a JSONL line is bounded while it is read)
        raise LineTooLong(f"{where}: a text of {len(text):,} characters, longer than --max-line-mb "
                          f"{cfg.max_line_mb} (raise it for documents this long)")
    if not text.strip():
        stats.add("skipped.empty")
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATES.sub("\ufffd", text)
        stats.add("fixed.lone_surrogates")
    doc_id = rec.get(cfg.id_field)
    doc_id = where if doc_id is None or doc_id == "" else _label(doc_id, cfg.id_field, where)
    domain = None
    if cfg.domain_field:
        d = rec.get(cfg.domain_field)
        domain = "" if d is None else _label(d, cfg.domain_field, where)
    return doc_id, text, domain


class NoTextField(BadLine):
    """A record without the text field (skippable; when no record of a source has it, --text-field is wrong)."""

    reason = "no_text_field"


def _bad_line(e: BadLine, cfg: ConvertConfig, stats: Stats) -> None:
    """A line that cannot be used: counted and skipped under --skip-bad-lines, else the unit's error."""
    if not cfg.skip_bad_lines:
        raise InputError(f"{e}; pass --skip-bad-lines to count and skip such lines") from None
    stats.add(f"skipped.{e.reason}")


Doc = tuple[str, str, str | None]  # (id, text, domain)


@dataclass(frozen=True)
class SourcePart:
    """What a convert task reads: a part of a source (``parts.py``) of this kind, named ``label`` in messages."""

    kind: str
    label: str
    part: Part


def task_source(task: U.Task) -> tuple[Source, Part]:
    p: SourcePart = task.params
    return Source(task.name, p.kind, task.source, p.label), p.part


def read_units(task: U.Task, cfg: ConvertConfig, reading: Stats) -> Iterator[list[Doc]]:
    """The validated documents of one task (a part of a source), in groups of ``docs_per_shard``: its units,
    in order. Skips, fixes and duplicate ids are counted into ``reading``."""
    src, piece = task_source(task)
    seen_ids: set[int] = set()
    part: list[Doc] = []
    first_missing: NoTextField | None = None
    with_text = 0  # records that have the text field
    for where, rec in read_records(src, cfg.hf_config, cfg.hf_split, piece, cfg.max_line_mb << 20):
        reading.add("documents_in")
        with_text += isinstance(rec, dict) and cfg.text_field in rec
        try:
            doc = _doc(rec, where, cfg, reading)
        except BadLine as e:
            if isinstance(e, NoTextField) and first_missing is None:
                first_missing = e
            _bad_line(e, cfg, reading)
            continue
        except (ValueError, TypeError, RecursionError, OverflowError) as e:  # anything else the content raises
            _bad_line(BadLine(f"{where}: {type(e).__name__}: {str(e)[:200]}"), cfg, reading)
            continue
        if doc is None:
            continue
        h = hash(doc[0])
        if h in seen_ids:
            reading.add("duplicate_ids")
        seen_ids.add(h)
        part.append(doc)
        if len(part) == cfg.docs_per_shard:
            yield part
            part = []
    if first_missing is not None and not with_text:
        raise InputError(f"{first_missing} (no record read from it has this field, so --skip-bad-lines would keep "
                         "nothing)")
    if part:
        yield part


def write_text_unit(dst: Path, docs: list[Doc], columns: dict[str, str]) -> Stats:
    """Write one unit of documents as text MDS into ``dst``."""
    st = Stats()
    with ShardWriter(dst, columns) as w:
        for doc_id, text, domain in docs:
            sample = {"id": doc_id, "text": text}
            if "domain" in columns:
                sample["domain"] = domain
            w.write(sample)
            st.add("characters", len(text))
    st.add("documents_written", len(docs))
    st.add_lengths([len(t) for _, t, _ in docs])
    return st


def text_columns(cfg: ConvertConfig) -> dict[str, str]:
    return dict(TEXT_COLUMNS, **({"domain": "str"} if cfg.domain_field else {}))


def unit_name(k: int) -> str:
    return f"split_{k:05d}"


def clear_stale(root: Path, units: int) -> None:
    """Remove units of an earlier run of this task that made more of them (--overwrite)."""
    for stale in root.glob("split_*"):
        if stale.name[6:].isdigit() and int(stale.name[6:]) >= units:
            U.clear(stale)


def close_accounting(total: Stats, label: str, written: str = "documents_written", verb: str = "written") -> None:
    """Documents in = documents ``written`` (the count of that name) + skipped by reason, or the task fails."""
    skipped = sum(v for key, v in total.counts.items() if key.startswith("skipped."))
    if total["documents_in"] != total[written] + skipped:
        raise InputError(f"{label}: document accounting does not close ({total['documents_in']} in, "
                         f"{total[written]} {verb}, {skipped} skipped)")


def source_units(task: U.Task, cfg: ConvertConfig, unit: Callable[[str, int, list[Doc]], Unit], roots: list[Path],
                 advance: bool = False) -> Generator[Unit, dict[str, Stats], tuple[dict[str, Stats], Stats, int]]:
    """The units of one task (a part of a source), for a ``many_units`` stage to ``yield from``: each group of
    ``docs_per_shard`` validated documents becomes ``unit(name, k, docs)`` (the k-th unit), yielded to the
    framework, which sends back its stats per output (``advance``: its documents go to the progress bar). Units
    an earlier, larger run of the task left are removed from each of ``roots``. Returns the units' stats summed
    per output, the reading's counts (documents in, skips, fixes, duplicate ids) and the number of units."""
    totals: dict[str, Stats] = {}
    reading = Stats()
    k = 0
    for k, docs in enumerate(read_units(task, cfg, reading), 1):
        done = yield unit(f"{task.name}/{unit_name(k - 1)}", k - 1, docs)
        for out, st in done.items():
            totals[out] = totals.get(out, Stats()) + st
        if advance:
            progress.advance(docs=len(docs))
    for root in roots:
        clear_stale(root / task.name, k)
    return totals, reading, k


class Convert(Stage):
    name = "convert"
    Config = ConvertConfig
    many_units = True

    def plan(self, cfg: ConvertConfig) -> list[U.Task]:
        part_bytes = cfg.part_size_mb << 20
        return [U.Task(part_name(s.key, part), s.path, SourcePart(s.kind, s.label, part)) for s in discover(cfg.inputs)
                for part in source_parts(s, part_bytes, cfg.hf_config, cfg.hf_split)]

    def units(self, task: U.Task, cfg: ConvertConfig) -> Generator[Unit, dict[str, Stats], dict[str, Stats]]:
        columns = text_columns(cfg)

        def unit(name: str, k: int, docs: list[Doc]) -> Unit:
            return Unit(name, lambda dirs: {"output": write_text_unit(dirs["output"], docs, columns)})

        totals, reading, k = yield from source_units(task, cfg, unit, [Path(cfg.output)], advance=True)
        total = totals.get("output", Stats()) + reading
        total.add("units", k)
        if k == 0:  # an empty input file: reported, never silently a 0-document dataset
            total.add("empty_sources")
        close_accounting(total, task.params.label)
        return {"output": total}

    def finish(self, cfg: ConvertConfig, stats: Stats, tasks: list[U.Task]) -> Finished:
        out = Path(cfg.output)
        units = []  # this run's own units only (never another dataset's units in the same folder)
        empty = []
        for t in tasks:
            done = U.read_done(out / t.name)
            n = done["units"]
            units += [f"{t.name}/{unit_name(k)}" for k in range(n)]
            if not n:
                read = done["documents_in"]
                empty.append(f"{t.source}: no documents ({read:,} records read, all skipped)" if read else
                             f"{t.source}: no documents (empty input file?)")
        write_root_index(out, units)
        skipped = {k.split(".", 1)[1]: v for k, v in sorted(stats.counts.items()) if k.startswith("skipped.")}
        summary = {
            "documents": stats["documents_written"],
            "documents_in": stats["documents_in"],
            "skipped": skipped,
            "characters": stats["characters"],
            "duplicate_ids": stats["duplicate_ids"],
            "lone_surrogates_fixed": stats["fixed.lone_surrogates"],
            "units": len(units),
            "sources": len(tasks),
            "empty_sources": len(empty),
        }
        if empty:
            summary["warnings"] = empty[:20]
        write_json_atomic(out / CONVERT_STATS, summary)
        return Finished(summary)
