"""Kill and resume: SIGKILL every stage (the whole process group, workers included) at seeded random
moments, rerun it, and require the output to be byte-identical to an uninterrupted run. At every kill
point nothing may look finished that is not: a folder with ``.done`` equals the finished folder, and a
root ``index.json`` exists only as the finished one."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from helpers_faults import check_partial_state, cli, run_killed, stage_exists, tokenizer_exists, tree, tree_diff

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

KILLS = 2  # kill points per stage (a chain: each rerun resumes the previous interrupted one)

# stage -> (depends on, command without output, needs)
STAGES = {
    "convert": (None, lambda src: ["convert", "builtin:python-docs", "--docs-per-shard", "10"]),
    "tokenize": ("convert", lambda src: ["tokenize", src, "-t", "builtin:modernbert"]),
    "chunk": ("tokenize", lambda src: ["chunk", src, "-c", "256", "-m", "64", "-a", "16", "--backfill"]),
    "sample": ("chunk", lambda src: ["sample", "split", src, "--validation-fraction", "0.1"]),
    "finalize": ("sample", lambda src: ["finalize", src]),
}


def _usable(stage: str) -> bool:
    if stage == "sample":
        return stage_exists("sample.split")
    if stage == "tokenize" and not tokenizer_exists():
        return False
    return stage_exists(stage)


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
            if not _usable(stage):
                pytest.skip(f"stage {stage} is not available yet")
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
    for _ in range(KILLS):
        # the CLI takes ~0.5 s to start; kill anywhere from start-up to the end of the reference run
        if run_killed(args, rng.uniform(0.25, 0.95) * took):
            landed += 1
        check_partial_state(out, ref)
    assert landed >= 1, f"no kill landed mid-run (the reference run took {took:.2f}s)"
    res = cli(*args)
    assert res.returncode == 0, res.stderr[-3000:]
    diff = tree_diff(ref, tree(out))
    assert not diff, diff[:20]
