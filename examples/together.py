"""Start W benchmark processes together: each loads its share of the work, prints ``ready`` and waits; once all
are ready each is sent ``go``, and what each prints last (one JSON object) is returned. Used by ``bench.py``'s raw
rows and floors and ``scale.py``'s floors, so that no process's start-up is timed and all run at once."""

from __future__ import annotations

import json
import subprocess
from typing import Any

__all__ = ["run_together"]


def run_together(cmds: list[list[str]], env: dict[str, str], what: str) -> list[dict[str, Any]]:
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env) for cmd in cmds]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise SystemExit(f"{what} did not start")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"{what} failed")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results
