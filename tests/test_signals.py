"""Signals to the main process only (what `timeout`, systemd, Kubernetes or a scheduler does): SIGTERM
and SIGHUP take the Ctrl-C path (exit 143 / 129, one line, finished units kept, no root index), and
after a SIGKILL, which no handler sees, the workers stop on their own. In every case no process of the
run survives for more than a few seconds, and a rerun is byte-identical to an uninterrupted run.

The runs go through ``tests/sleepy_stage.py``: each unit sleeps ``SLEEPY_SECONDS`` before the real
stage runs, so the signal lands mid-run at a seeded moment (after a number of finished units, plus a
delay shorter than one unit).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_faults import check_partial_state, cli, count_done, tree, tree_diff
from sleepy_stage import SLEEP, interrupted_run, kill_session, proc_stat, wait_gone

from ettin_data import interrupt, run

pytestmark = pytest.mark.timeout(120)

TESTS = Path(__file__).parent
ONE_LINE = "error: terminated by {}; finished units are kept, rerun to resume"


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted one-process runs: the built-in corpus as 10 text units, tokenized, chunked."""
    from ettin_data.config import ChunkConfig, ConvertConfig, TokenizeConfig

    root = tmp_path_factory.mktemp("signals")
    run(ConvertConfig(inputs=["builtin:python-docs"], output=str(root / "text"), docs_per_shard=25, workers=1))
    run(TokenizeConfig(inputs=[str(root / "text")], output=str(root / "tokens"),
                                tokenizer="builtin:modernbert", workers=1))
    run(ChunkConfig(inputs=[str(root / "tokens")], output=str(root / "chunks"), chunk_size=256, min_chunk_size=64,
                          workers=1))
    return {"text": root / "text", "tokenize": root / "tokens", "chunk": root / "chunks"}


# stage -> (input, arguments, the signals sent to a chain of runs, each resuming the previous one); a
# negative number: to the whole process group (a closed terminal), where workers and the resource tracker
# must leave the signal to the main process
CHAINS = {
    "tokenize": ("text", ["-t", "builtin:modernbert"], [signal.SIGTERM, signal.SIGKILL, signal.SIGHUP]),
    "chunk": ("tokenize", ["-c", "256", "-m", "64"], [signal.SIGTERM, signal.SIGKILL, -signal.SIGHUP]),
}


@pytest.mark.slow  # end-to-end (~8 s per stage): `make test` runs it, `make test-fast` does not
@pytest.mark.parametrize("stage", list(CHAINS))
def test_signals_stop_every_process_and_the_rerun_is_byte_identical(stage, refs, tmp_path):
    src, extra, signals = CHAINS[stage]
    ref = tree(refs[stage])
    units = sum(k.endswith(".done") for k in ref)
    assert units == 10
    out = tmp_path / "out"
    args = [stage, str(refs[src]), *extra, "-o", str(out), "-w", "2", "-q"]
    rng = random.Random(f"signals-{stage}")
    for i, signed in enumerate(signals):
        sig = signal.Signals(abs(signed))
        # --rank/--world runs take the same path: the chunk chain starts with rank 0 of 2 (5 units)
        ranked = stage == "chunk" and i == 0
        left = 5 if ranked else units - count_done(out)
        after = count_done(out) + rng.randint(0, min(2, left - 3))  # >= 2 units still to start or finish
        p = interrupted_run([*args, "--rank", "0", "--world", "2"] if ranked else args, out, sig, after,
                             rng.uniform(0.05, 0.6 * SLEEP), group=signed < 0)
        if sig == signal.SIGKILL:
            assert p.returncode == -signal.SIGKILL
        else:
            assert p.returncode == 128 + sig, p.stderr_text
            assert p.stderr_text.strip() == ONE_LINE.format(sig.name)
            log = max((out / ".ettin_logs").glob(f"{stage}-*.jsonl"))  # named by UTC time: the last run's
            end = json.loads(log.read_text().splitlines()[-1])
            assert (end["exit_code"], end["error"]) == (128 + sig, f"terminated by {sig.name}")
        check_partial_state(out, ref)  # a .done only on complete units, no root index
        assert "index.json" not in tree(out)
    assert count_done(out) < units
    res = cli(*args)
    assert res.returncode == 0, res.stderr[-3000:]
    diff = tree_diff(ref, tree(out))
    assert not diff, diff[:20]


def test_cli_exit_codes_and_lines():
    assert interrupt.exit_code(KeyboardInterrupt()) == 130
    assert interrupt.exit_code(interrupt.Terminated(signal.SIGTERM)) == 143
    assert interrupt.exit_code(interrupt.Terminated(signal.SIGHUP)) == 129
    assert interrupt.describe(KeyboardInterrupt()) == "interrupted"
    assert interrupt.describe(interrupt.Terminated(signal.SIGHUP)) == "terminated by SIGHUP"


def test_handle_signals_raises_once_restores_and_respects_other_handlers():
    """SIGTERM raises Terminated in the block; a repeat during the stop is ignored; the old handlers come
    back; a handler that is not the default (nohup's SIG_IGN) is left alone."""
    old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with pytest.raises(interrupt.Terminated) as info, interrupt.handle_signals():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.5)
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM while stopping: no new exception
                time.sleep(0.05)
        assert info.value.signum == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, old_hup)


# --- workers die with their parent: a driver process starts a pool, prints the worker PIDs, is SIGKILLed ---

DRIVER = """
import concurrent.futures as cf, multiprocessing as mp, os, sys, time
from ettin_data import interrupt

def init(driver, pdeathsig):
    if pdeathsig == "off":  # only the watching thread is left
        interrupt._set_pdeathsig = lambda sig: False
    interrupt.die_with_parent(driver, interval=0.1)

if __name__ == "__main__":
    method, pdeathsig = sys.argv[1:]
    pool = cf.ProcessPoolExecutor(2, mp_context=mp.get_context(method), initializer=init,
                                  initargs=(os.getpid(), pdeathsig))
    futures = [pool.submit(time.sleep, 60) for _ in range(2)]
    time.sleep(0.3)
    while len(pool._processes) < 2:
        time.sleep(0.05)
    print(" ".join(str(p) for p in pool._processes), flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize(("method", "pdeathsig"), [("spawn", "on"), ("spawn", "off"), ("forkserver", "off")])
def test_workers_die_with_a_sigkilled_driver(method, pdeathsig, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    p = subprocess.Popen([sys.executable, str(script), method, pdeathsig], stdout=subprocess.PIPE, text=True,
                         stderr=subprocess.DEVNULL,
                         start_new_session=True, env={**os.environ, "PYTHONPATH": str(TESTS.parent)})
    try:
        workers = [int(x) for x in p.stdout.readline().split()]
        assert len(workers) == 2 and all(proc_stat(w) for w in workers)
        p.kill()
        p.wait()
        took, left = wait_gone(p.pid)
        assert not left, f"{method}, PR_SET_PDEATHSIG {pdeathsig}: still alive after {took:.1f} s: {left}"
    finally:
        kill_session(p.pid)
