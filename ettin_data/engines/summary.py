"""What a run's ``engine`` entry says (summary and ``ettin_meta.json``): the :class:`Choice` and the checks'
counts its units recorded, and the one line a person sees."""

from __future__ import annotations

from typing import Any

from ..stats import Stats
from . import Choice

__all__ = ["count_unit", "engine_summary", "render_engine"]


def count_unit(st: Stats, choice: Choice) -> None:
    """Count the engines that encoded a unit (the driver's summary is checked against these counts)."""
    st.add(f"engine.units.{choice.used}")
    if choice.checker:
        st.add(f"engine.units_checked_by.{choice.checker}")


def engine_summary(choice: Choice, stats: Stats) -> dict[str, Any]:
    """The ``engine`` entry of the summary and ``ettin_meta.json``: what encoded, and the checks' counts."""
    return {**choice.record(), "documents_fast": stats["engine.fast"], "documents_routed": stats["engine.routed"],
            "documents_verified": stats["engine.verified"], "units_spot_checked": stats["engine.spot_checked"],
            "documents_checked": stats["engine.checked"], "disagreements": stats["engine.disagreements"],
            "mismatches": stats["engine.mismatches"], "units_redone": stats["engine.units_redone"]}


def render_engine(eng: dict[str, Any]) -> str:
    """One line: the engine used (and why not a fast one), and the checks' counts."""
    used = eng.get("used")
    skipped = f"; skipped: {'; '.join(eng['skipped'])}" if eng.get("skipped") and used != "tokenizers" else ""
    if used != "tokenizers":
        how = f"{used} {eng.get('version')}, " + (f"proven for {eng['guard']}" if eng.get("guard") else "unchecked")
        checks = ""
        if eng.get("verify") == "full":
            checks = (f", {eng.get('documents_checked', 0):,} checked by {eng.get('checker')} "
                      f"({eng.get('disagreements', 0):,} disagreements)")
        return (f"{how} (requested {eng.get('requested')}): {eng.get('documents_fast', 0):,} documents by {used}, "
                f"{eng.get('documents_routed', 0):,} routed to tokenizers{checks}, "
                f"{eng.get('documents_verified', 0):,} verified (+{eng.get('units_spot_checked', 0):,} unit starts), "
                f"{eng.get('mismatches', 0)} mismatches, {eng.get('units_redone', 0)} units redone{skipped}")
    why = f"; fallback: {eng['fallback']}" if eng.get("fallback") else ""
    return f"tokenizers (requested {eng.get('requested')}{why})"
