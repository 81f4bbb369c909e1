"""Human-readable output: run summaries, dry-run plans and dataset tables (rich, to stdout)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["print_summary", "print_dry_run", "print_table", "human_bytes"]


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
    if planned:
        todo, done = planned["to_do"], planned["already_done"]
        console.print(f"planned: {planned['units']} units; this run: {len(todo)} to do, {len(done)} already done")
        for name in todo[:20]:
            console.print(f"  to do: {name}")
        if len(todo) > 20:
            console.print(f"  ... and {len(todo) - 20} more")
