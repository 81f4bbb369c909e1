"""Kill and resume: SIGKILL every stage (the whole process group, workers included) at seeded random
moments, rerun it, and require the output to be byte-identical to an uninterrupted run. At every kill
point nothing may look finished that is not: a folder with ``.done`` equals the finished folder, and a
root ``index.json`` exists only as the finished one."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from helpers_faults import (
    check_partial_state,
    cli,
    count_done,
    run_killed_after,
    tree,
    tree_diff,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

KILLS = 3  # kill points per stage (a chain: each rerun resumes the previous interrupted one)

# stage -> (depends on, command without output, needs)
STAGES = {
    "convert": (None, lambda src: ["convert", "builtin:python-docs", "--docs-per-shard", "10"]),
    "tokenize": ("convert", lambda src: ["tokenize", src, "-t", "builtin:modernbert"]),
    "chunk": ("tokenize", lambda src: ["chunk", src, "-c", "256", "-m", "64", "-a", "16", "--backfill"]),
    "sample": ("chunk", lambda src: ["sample", "split", src, "--validation-fraction", "0.1"]),
    "finalize": ("sample", lambda src: ["finalize", src]),
}


class References:
    """Uninterrupted runs of each stage on the previous stage's output, built on first use."""

    def __init__(self, root: Path):
        self.root = root
        self.done: dict[str, tuple[Path, float]] = {}

    def args(self, stage: str, out: Path) -> list[str]:
        dep, make = STAGES[stage]
        src = str(self.get(dep)[0]) if dep else ""
        return [*make(src), "-o", str(out), "-w", "2", "-q"]

    def get(self, stage: str) -> tuple[Path, float]:
        if stage not in self.done:
            out = self.root / stage
            args = self.args(stage, out)
            t0 = time.monotonic()
            res = cli(*args)
            took = time.monotonic() - t0
            assert res.returncode == 0, res.stderr[-3000:]
            self.done[stage] = (out, took)
        return self.done[stage]


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    return References(tmp_path_factory.mktemp("ref"))


@pytest.mark.parametrize("stage", list(STAGES))
def test_kill_and_resume_is_byte_identical(stage, refs, tmp_path):
    ref_dir, took = refs.get(stage)
    ref = tree(ref_dir)
    assert "index.json" in ref or any(k.endswith("/index.json") for k in ref)
    out = tmp_path / "out"
    args = refs.args(stage, out)
    rng = random.Random(f"kill-{stage}")
    landed = 0
    units = sum(1 for k in ref if k.endswith(".done"))
    for i in range(KILLS):
        # kill point: after a random number of finished units (all of them: during finish()) plus a random
        # delay; the first kill of each chain may also land during start-up, planning or the first unit
        now = count_done(out)
        target, extra = (rng.randint(0, units) if i == 0 else min(units, now + rng.randint(1, 8))), rng.uniform(0, 0.08)
        hit = run_killed_after(args, out, target, extra)
        landed += hit
        print(f"kill {i}: after {target}/{units} units + {extra:.3f}s: landed={hit}, done={count_done(out)}")
        check_partial_state(out, ref)
    assert landed >= 1, f"no kill landed mid-run (the reference run took {took:.2f}s)"
    res = cli(*args)
    assert res.returncode == 0, res.stderr[-3000:]
    diff = tree_diff(ref, tree(out))
    assert not diff, diff[:20]


def _workers(pid: int) -> list[int]:
    """Pool worker processes among the descendants of ``pid`` (not the resource tracker)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and "spawn_main" in cmd and "resource_tracker" not in cmd:
            out.append(int(d.name))
    return out


def test_a_worker_killed_by_the_oom_killer_fails_its_unit_only(refs, tmp_path):
    """SIGKILL one pool worker (what the OOM killer does): its unit fails with a clear line, the run
    exits 1 without a root index, and a rerun completes byte-identical to an uninterrupted run."""
    import os
    import signal
    import subprocess

    from helpers_faults import ETTIN

    ref_dir, _ = refs.get("tokenize")
    out = tmp_path / "out"
    args = refs.args("tokenize", out)
    p = subprocess.Popen([ETTIN, *args], start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    victim = None
    while p.poll() is None and victim is None:
        if count_done(out) >= 3:
            victim = next(iter(_workers(p.pid)), None)
        time.sleep(0.005)
    if victim is None:
        p.communicate()
        pytest.skip("the run finished before a worker could be killed")
    os.kill(victim, signal.SIGKILL)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1 and "Traceback" not in err, err
    assert "worker process died (killed, or out of memory)" in err
    ref = tree(ref_dir)
    check_partial_state(out, ref)
    assert "index.json" not in tree(out)
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    assert not tree_diff(ref, tree(out))
