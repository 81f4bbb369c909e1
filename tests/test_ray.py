"""The Ray executor against a real Ray head node on loopback (started and stopped by PID here).

Outputs must be byte-identical to the local executor's; a unit that raises and a unit whose worker
process dies are each reported by name while the other units finish.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ettin_data import driver, run
from ettin_data import units as U
from ettin_data.config import ConvertConfig
from ettin_data.corpus import python_docs
from ettin_data.errors import InputError, UnitFailure
from ettin_data.executors import WORKER_DIED
from ettin_data.executors.ray import RAY_ENV
from ettin_data.stage import Stage
from ettin_data.stats import Stats

os.environ.update(RAY_ENV)  # read by Ray when it is imported: keep everything on 127.0.0.1
import ray  # noqa: E402  (installed by make install: a missing Ray fails, never skips)

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(180)]

NAME = "crashy"  # this test module doubles as a test-only stage module (see plan/process_unit/finish)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_members(sid: int) -> list[int]:
    """PIDs of the processes in session ``sid`` (the head node started by the fixture and its children)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            pids.append(int(stat.parent.name))
    return pids


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head node (2 CPUs) on 127.0.0.1; yields its address; stopped by PID."""
    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="ettray", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, **RAY_ENV}
    env.pop("RAY_ADDRESS", None)
    ray_cli = str(Path(sys.executable).parent / "ray")
    proc = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={tmp}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # the GCS port accepts connections once the head is up
            if proc.poll() is not None:
                pytest.fail(f"ray start exited with {proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("Ray head did not start within 60 s")
                time.sleep(0.2)
        for k, v in RAY_ENV.items():
            os.environ.setdefault(k, v)
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the head and the processes it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        for pid in [proc.pid, *_session_members(proc.pid)]:  # Ray workers sit in their own process groups
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _jsonl_corpus(folder: Path, parts: int = 3) -> int:
    """Split the built-in corpus into ``parts`` JSONL files (one convert task each); returns the doc count."""
    docs = list(python_docs())
    folder.mkdir()
    for k in range(parts):
        with open(folder / f"part{k}.jsonl", "w") as f:
            for doc in docs[k::parts]:
                f.write(json.dumps(doc) + "\n")
    return len(docs)


def test_ray_convert_matches_local_byte_for_byte(ray_head, tmp_path):
    n = _jsonl_corpus(tmp_path / "src")
    inputs = [str(tmp_path / "src")]

    def cfg(name: str, **kw) -> ConvertConfig:
        return ConvertConfig(inputs=inputs, output=str(tmp_path / name), docs_per_shard=40, **kw)

    local = run(cfg("local", workers=1))
    on_ray = run(cfg("ray", workers=2, executor="ray", ray_address=ray_head))
    assert on_ray["complete"] and on_ray["units_run"] == 3 == local["units_run"]
    assert on_ray["documents"] == local["documents"] == n
    a, b = tree(tmp_path / "local"), tree(tmp_path / "ray")
    assert sorted(a) == sorted(b) and len(a) > 20
    assert [k for k in a if a[k] != b[k]] == []
    # Rerun on Ray: every unit is skipped, nothing changes.
    again = run(cfg("ray", workers=2, executor="ray", ray_address=ray_head))
    assert again["units_run"] == 0 and again["units_skipped"] == 3
    assert tree(tmp_path / "ray") == b


def test_ray_tokenize_matches_local_byte_for_byte(ray_head, tmp_path, text_dataset, token_dataset):
    from ettin_data.config import TokenizeConfig

    out = tmp_path / "tokens"
    summary = run(TokenizeConfig(inputs=[str(text_dataset)], output=str(out), tokenizer="builtin:modernbert",
                                          workers=2, executor="ray", ray_address=ray_head))
    assert summary["complete"] and summary["units_run"] == 5
    a, b = tree(token_dataset), tree(out)
    assert sorted(a) == sorted(b) and [k for k in a if a[k] != b[k]] == []


# --- a test-only stage: one unit raises, one unit kills its worker process, the others succeed ---

class Flaky(Stage):
    """A stage whose unit "boom" raises and whose unit "die" kills its worker."""

    name = "flaky"
    Config = ConvertConfig

    def plan(self, cfg):
        return [U.Task(n) for n in ("u0", "boom", "u2", "die", "u4")]

    def process_unit(self, task, cfg, dst):
        return write_unit(task, cfg, dst)

    def finish(self, cfg, stats, tasks):  # pragma: no cover - never reached: two units fail
        return {}


def write_unit(task, cfg, dst):
    out = Path(cfg.output)
    if task.name == "boom":
        raise InputError("u-boom.jsonl: line 3 is broken")
    if task.name == "die":
        with open(out / "die.attempts", "a") as f:
            f.write("x\n")
        os._exit(1)
    st = Stats()
    st.add("documents", int(task.name[1]))
    (dst / "payload").write_text(task.name)
    return st


def process_unit(task, cfg):
    """A plain task function for the executor alone (no driver)."""
    return Stats()


def test_raise_and_dead_worker_reported_per_unit(ray_head, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test file
    cfg = ConvertConfig(inputs=["x"], output=str(tmp_path / "out"), workers=2, executor="ray",
                        ray_address=ray_head, max_retries=1)
    with pytest.raises(UnitFailure) as info:
        driver.run(cfg, command=Flaky())
    err = info.value
    assert err.failures == [("boom", "u-boom.jsonl: line 3 is broken"), ("die", WORKER_DIED)]
    assert str(err).startswith("2 of 5 units failed: boom: u-boom.jsonl: line 3 is broken; die: worker")
    assert "InputError" in err.tracebacks["boom"]
    # max_retries=1: the dying unit ran twice; the raising unit is not retried; the others finished.
    assert (tmp_path / "out" / "die.attempts").read_text() == "x\nx\n"
    for name in ("u0", "u2", "u4"):
        assert U.is_done(tmp_path / "out" / name)
        assert (tmp_path / "out" / name / "payload").read_text() == name
        assert U.read_done(tmp_path / "out" / name).counts["documents"] == int(name[1])
    assert not (tmp_path / "out" / "index.json").exists()


def test_unreachable_cluster_is_one_config_error(tmp_path):
    from ettin_data.errors import ConfigError
    from ettin_data.executors import run_tasks

    port = _free_port()  # nothing listens there
    with pytest.raises(ConfigError, match=rf"^no Ray cluster at 127.0.0.1:{port} \(.*\); start one with `ray start"):
        run_tasks(process_unit, [U.Task("u0")], None, workers=1, executor="ray", ray_address=f"127.0.0.1:{port}")


def test_a_signalled_driver_leaves_no_ray_task_running(ray_head, tmp_path, text_dataset, token_dataset):
    """SIGKILL, then SIGTERM to the main process of a Ray run (each resuming the last). SIGTERM: exit 143
    with one line, its tasks cancelled; SIGKILL: Ray itself stops the dead driver's tasks. Either way no
    process of the run is left, no task finishes a unit afterwards, and a rerun is byte-identical to an
    uninterrupted run."""
    from helpers_faults import EXCLUDE_DIRS, cli, count_done
    from sleepy_stage import SLEEP, interrupted_run

    out = tmp_path / "tokens"
    args = ["tokenize", str(text_dataset), "-t", "builtin:modernbert", "-o", str(out), "-w", "2", "-q"]
    for sig in (signal.SIGKILL, signal.SIGTERM):
        p = interrupted_run([*args, "--executor", "ray", "--ray-address", ray_head], out, sig, count_done(out) + 1,
                            0.2, ready=lambda pid: True)
        if sig == signal.SIGTERM:
            assert p.returncode == 143, p.stderr_text
            assert p.stderr_text.strip() == "error: terminated by SIGTERM; finished units are kept, rerun to resume"
        else:
            assert p.returncode == -signal.SIGKILL
        done = count_done(out)
        time.sleep(SLEEP + 1.0)  # a task still running would have finished its unit by now
        assert count_done(out) == done < 5 and not (out / "index.json").exists()
    res = cli(*args)
    assert res.returncode == 0, res.stderr[-3000:]
    got = {k: v for k, v in tree(out).items() if k.split("/")[0] not in EXCLUDE_DIRS}
    assert got == tree(token_dataset)
