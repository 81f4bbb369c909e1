"""Human-readable output: run summaries, dry-run plans and dataset tables (rich, to stdout)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["print_summary", "print_dry_run", "print_table", "print_samples", "human_bytes"]


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:,.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return str(n)  # pragma: no cover


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.3f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items()) or "-"
    if isinstance(v, list):
        return ", ".join(map(_fmt, v)) or "-"
    return str(v)


def print_table(title: str, rows: list[tuple[str, Any]], console: Console | None = None) -> None:
    console = console or Console()
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for k, v in rows:
        t.add_row(k, _fmt(v))
    console.print(t)


def print_summary(summary: dict[str, Any]) -> None:
    title = f"ettin-data {summary.get('stage', '')}".strip()
    print_table(title, [(k, v) for k, v in summary.items() if k != "stage"])


def print_dry_run(resolved: dict[str, dict[str, Any]], planned: dict[str, Any]) -> None:
    console = Console()
    t = Table(title="resolved options (dry run: nothing written)", title_justify="left")
    t.add_column("option", style="bold")
    t.add_column("value", overflow="fold")
    t.add_column("from")
    for k, v in resolved.items():
        t.add_row(k, _fmt(v["value"]), v["from"])
    console.print(t)
    if "export" in planned:
        e = planned["export"]
        console.print(f"planned: export {', '.join(e['inputs'])} to {e['output']}"
                      + (" (exists: needs --overwrite)" if e["output_exists"] else ""), highlight=False)
    elif "index" in planned:
        for f in planned["index"]:
            nested = f["nested_root_indexes"]
            console.print(f"planned: index {f['folder']}: one root index over {f['units']} units ({f['shards']} "
                          f"shards, {f['samples']:,} samples)" + (f"; rebuilt first: {', '.join(nested)}" if nested
                                                                   else ""), highlight=False)
    elif planned:
        todo, done = planned["to_do"], planned["already_done"]
        other = planned["units"] - planned["mine"]
        console.print(f"planned: {planned['units']} units; this run: {len(todo)} to do, {len(done)} already done"
                      + (f", {other} for other ranks" if other else ""), highlight=False)
        for label, names in (("to do", todo), ("done", done)):
            for name in names[:20]:
                console.print(f"  {label}: {name}", highlight=False)
            if len(names) > 20:
                console.print(f"  ... and {len(names) - 20} more {label}")
        for line in planned.get("settings_conflict", []):
            console.print(f"  refused: output written with other settings: {line} (use --overwrite or a new -o)",
                          highlight=False)


def print_samples(shown: dict[str, list[dict[str, Any]]], width: int = 2000) -> None:
    """Print samples shown by ``stats --show``: one block per sample, long texts cut at ``width`` chars."""
    console = Console()
    for path, records in shown.items():
        console.rule(f"{path}: first {len(records)} sample(s)")
        for i, rec in enumerate(records):
            text = rec["text"]
            more = f" … (+{len(text) - width:,} characters)" if len(text) > width else ""
            extra = f"  domain={rec['domain']}" if "domain" in rec else ""
            console.print(Text(f"#{i}  id={rec['id']}{extra}  ({len(text):,} characters)", style="bold"))
            console.print(text[:width] + more, markup=False, highlight=False)
