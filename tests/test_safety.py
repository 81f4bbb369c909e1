"""Output safety (issue 25 R1/R5/R6/R7) and who owns a unit's life (issue 24): the dataset state that readers
check, control files never written through links, one lock per output for plain and rank runs, the sweep of
stale temporaries, and the framework (not the stage) making unit folders atomic and marking them done."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_chunks import make_chunks
from helpers_cli import cli, one_line
from helpers_faults import tree

from ettin_data import dataset, driver, run, safefile, state
from ettin_data import units as U
from ettin_data.config import ConvertConfig, TokenizeConfig
from ettin_data.errors import ConfigError, InputError, UnitFailure
from ettin_data.stage import Finished, Stage, Unit
from ettin_data.stages import tokenize
from ettin_data.stats import Stats


@pytest.fixture
def chunks(tmp_path) -> Path:
    make_chunks(tmp_path / "chunks", n_units=3, docs_per_unit=8)
    return tmp_path / "chunks"


# ---------------------------------------------------------------- R1: the dataset state

def _tokenize(text: Path, out: Path, **kw) -> dict:
    return run(TokenizeConfig(inputs=[str(text)], output=str(out), tokenizer="builtin:modernbert", workers=1, **kw))


def _shards(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in tree(root).items() if ".mds" in k or k.endswith("index.json")}


def test_an_interrupted_rewrite_is_refused_by_every_reader_and_never_mixes_settings(text_dataset, tmp_path,
                                                                                     monkeypatch):
    """R1: a complete output rewritten with other settings stops after two units. The output is marked
    incomplete before any unit changes (root index and metadata withdrawn); every reader refuses it with one
    line saying how to finish it; a resume under the old settings is refused, one under the new settings redoes
    every unit the old settings wrote, and equals a clean run."""
    out = tmp_path / "tok"
    _tokenize(text_dataset, out)
    assert (out / "index.json").is_file() and not (out / dataset.INCOMPLETE).exists()
    real, calls = tokenize.Tokenize.process_unit, []

    def two_then_fail(self, task, cfg, dst):
        calls.append(task.name)
        if len(calls) > 2:
            raise InputError("disk gone")
        return real(self, task, cfg, dst)

    monkeypatch.setattr(tokenize.Tokenize, "process_unit", two_then_fail)
    with pytest.raises(UnitFailure):
        _tokenize(text_dataset, out, prefix_space=True, overwrite=True)
    monkeypatch.undo()
    assert (out / dataset.INCOMPLETE).is_file()
    assert not (out / "index.json").exists() and not (out / "ettin_meta.json").exists()
    assert sum(1 for _ in out.rglob(".done")) == 2  # the two new units: the old ones' markers were withdrawn

    for args in (("chunk", out, "-o", tmp_path / "c"), ("stats", out), ("stats", out, "--verify"),
                 ("export", out, "-o", tmp_path / "x.jsonl"), ("stats", out / "python-docs" / "split_00000")):
        line = one_line(cli(*args), 1, "is incomplete", "tokenize", "rerun")
        assert "--overwrite" not in line
    assert not (tmp_path / "c").exists() and not (tmp_path / "x.jsonl").exists()

    with pytest.raises(ConfigError, match="other settings.*prefix_space"):
        _tokenize(text_dataset, out)  # the old settings: never resumed into the new dataset
    s = _tokenize(text_dataset, out, prefix_space=True)
    assert s["complete"] and s["units_run"] == 3 and not (out / dataset.INCOMPLETE).exists()
    _tokenize(text_dataset, tmp_path / "clean", prefix_space=True)
    assert _shards(out) == _shards(tmp_path / "clean")


def test_readers_refuse_split_folders_units_and_mix_sources_of_an_incomplete_dataset(chunks, tmp_path):
    assert cli("sample", "split", chunks, "-o", tmp_path / "split", "--validation-fraction", "0.3").exit_code == 0
    state.mark_incomplete(tmp_path / "split", {"stage": "sample split", "argv": ["ettin-data", "sample", "split"]})
    assert not (tmp_path / "split" / "train" / "index.json").exists()  # withdrawn in the split folders too
    assert not (tmp_path / "split" / "train" / "ettin_meta.json").exists()
    one_line(cli("finalize", tmp_path / "split", "-o", tmp_path / "final"), 1, "is incomplete", "sample split")
    one_line(cli("stats", tmp_path / "split" / "validation"), 1, "lies in", "is incomplete")
    (chunks / dataset.INCOMPLETE).write_text('{"stage": "chunk"}')  # the marker alone (its files kept)
    mix = tmp_path / "mix.toml"
    mix.write_text(f'total_tokens = 1000\n[sources.a]\npath = "{chunks}"\nproportion = 1.0\n')
    one_line(cli("sample", "mix", mix, "-o", tmp_path / "mixed"), 1, "is incomplete", "ettin-data chunk")
    one_line(cli("sample", "budget", chunks, "-o", tmp_path / "b", "--target-tokens", 100), 1, "is incomplete")
    assert not (tmp_path / "mixed").exists() and not (tmp_path / "b").exists()
    state.mark_complete(chunks)
    assert cli("sample", "budget", chunks, "-o", tmp_path / "b", "--target-tokens", 100).exit_code == 0


def test_ranks_leave_the_output_incomplete_until_the_last_one(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for k in range(2):
        (src / f"p{k}.jsonl").write_text("".join(json.dumps({"id": f"{k}{i}", "text": f"doc {i}"}) + "\n"
                                                 for i in range(4)))
    out = tmp_path / "out"
    cfg = {"inputs": [str(src)], "output": str(out), "docs_per_shard": 2, "workers": 1, "world": 2}
    assert run(ConvertConfig(rank=1, **cfg))["complete"] is False
    assert (out / dataset.INCOMPLETE).is_file()
    assert run(ConvertConfig(rank=0, **cfg))["complete"] is True
    assert not (out / dataset.INCOMPLETE).exists() and (out / "index.json").is_file()


# ---------------------------------------------------------------- R5: control files never through links

@pytest.mark.parametrize("name", [".ettin_lock", ".ettin_settings.json", ".ettin_units.json", "ettin_meta.json",
                                  "index.json", "tokenizer.json", "stats.json", dataset.INCOMPLETE,
                                  ".ettin_logs", "train"])
def test_a_planted_link_in_the_output_is_refused(chunks, tmp_path, name):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "file").write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    target = victim if name in (".ettin_logs", "train") else victim / "file"
    (out / name).symlink_to(target)
    one_line(cli("sample", "split", chunks, "-o", out, "--validation-fraction", "0.3"), 2, "symbolic link", name)
    assert tree(victim) == {"file": b"precious"} and (out / name).is_symlink()


def test_a_hard_linked_lock_file_is_refused(chunks, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    os.link(victim, out / ".ettin_lock")
    one_line(cli("sample", "split", chunks, "-o", out, "--validation-fraction", "0.3"), 2, "hard link")
    assert victim.read_text() == "precious"


def test_the_file_helper_never_follows_a_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "meta.json").symlink_to(victim)
    with pytest.raises(safefile.LinkRefused, match="symbolic link"):
        safefile.write_bytes(tmp_path / "meta.json", b"x")
    with pytest.raises(safefile.LinkRefused):
        safefile.new_file(tmp_path / "meta.json")
    (tmp_path / "shard").symlink_to(victim)  # a link in place of a temporary or a shard: never opened
    with pytest.raises(safefile.LinkRefused):
        safefile.new_file(tmp_path / "shard")
    assert victim.read_text() == "precious"
    with pytest.raises(OSError), safefile.atomic_file(tmp_path / "out.json") as f:  # a failed write leaves nothing
        f.write(b"half")
        raise OSError(27, "File too large")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json", "shard", "victim"]


# ---------------------------------------------------------------- R6: one lock per output

def _hold(path: Path, op: int):
    f = open(path, "a+")  # noqa: SIM115 - held for the test's duration
    fcntl.flock(f, op)
    return f


def test_a_plain_run_and_a_rank_run_exclude_each_other(chunks, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    split = ("sample", "split", chunks, "-o", out, "--validation-fraction", "0.3")
    with _hold(out / ".ettin_lock", fcntl.LOCK_SH):  # ranks of a run are in
        one_line(cli(*split), 2, "in use by another run")
    with _hold(out / ".ettin_lock", fcntl.LOCK_EX):  # a plain run is in
        one_line(cli(*split, "--rank", "0", "--world", "2"), 2, "in use by another run")
    # rank 0 of a --world 2 run is in: rank 1 of it shares the output, rank 0 again or another world do not
    with _hold(out / ".ettin_lock", fcntl.LOCK_SH), _hold(out / ".ettin_lock.rank0", fcntl.LOCK_EX), \
            _hold(out / ".ettin_lock.world2", fcntl.LOCK_SH):
        one_line(cli(*split, "--rank", "0", "--world", "2"), 2, "in use by another run", "rank0")
        one_line(cli(*split, "--rank", "1", "--world", "3"), 2, "--world 2")
        res = cli(*split, "--rank", "1", "--world", "2")
        assert res.exit_code == 0, res.stderr
    res = cli(*split, "--rank", "0", "--world", "2")
    assert res.exit_code == 0, res.stderr
    assert not list(out.glob(".ettin_lock*"))  # the last holder removes the lock files


# ---------------------------------------------------------------- R7: stale temporaries swept

STALE = [".index.json.tmp", ".tokenizer.json.4242.tmp", ".ettin_meta.json.77-0badc0de.ettin-tmp",
         "src/split_00000/..done.tmp", "train/.stats.json.tmp", "train/.tokens.npy.tmp"]
KEPT = ["notes.txt", ".notes.tmp", "train/mine.tmp"]


def _plant(out: Path) -> None:
    for rel in STALE + KEPT:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("x")
    (out / "src" / ".split_00009.partial").mkdir(parents=True)
    (out / "src" / ".split_00009.partial" / "shard.00000.mds.zstd").write_text("half")


def test_a_process_forked_by_the_lock_holder_holds_no_lock_descriptor(tmp_path):
    """Pool workers are forked inside the driver's lock (executors/local.py): they close their copies of the lock
    descriptors at once (a lock lives until its last descriptor is closed), and the output is free once the
    driver releases it, whatever its workers still do."""
    from ettin_data import outputs

    out = tmp_path / "out"
    with outputs.output_lock(out, 0, 2):  # a rank's three locks
        held = sorted(outputs._HELD)
        assert len(held) == 3
        pid = os.fork()
        if pid == 0:  # the child: every lock descriptor closed, then it outlives the lock by a moment
            closed = []
            for fd in held:
                try:
                    os.fstat(fd)
                except OSError:
                    closed.append(fd)
            time.sleep(1.0)
            os._exit(0 if closed == held else 1)
    try:
        with outputs.output_lock(out):  # refused ("in use by another run") if the child still held it
            pass
    finally:
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_stale_temporaries_are_swept_by_a_run_alone_on_its_output(chunks, tmp_path):
    out = tmp_path / "out"
    split = ("sample", "split", chunks, "-o", out, "--validation-fraction", "0.3")
    assert cli(*split).exit_code == 0
    _plant(out)
    with _hold(out / ".ettin_lock", fcntl.LOCK_SH), _hold(out / ".ettin_lock.world2", fcntl.LOCK_SH):
        assert cli(*split, "--rank", "1", "--world", "2").exit_code == 0  # another rank runs: nothing swept
    assert all((out / rel).exists() for rel in STALE) and (out / "src" / ".split_00009.partial").exists()
    res = cli(*split, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["swept"] == len(STALE) + 1
    assert not any((out / rel).exists() for rel in STALE) and not (out / "src" / ".split_00009.partial").exists()
    assert all((out / rel).read_text() == "x" for rel in KEPT)


# ---------------------------------------------------------------- issue 24: the framework owns a unit's life

class Toy(Stage):
    """Writes one file per unit; unit "bad" fails after writing. With ``many``: two units per task."""

    name = "toy"
    Config = ConvertConfig

    def __init__(self, many: bool = False, log: Path | None = None):
        self.many_units = many
        self.log = log

    def plan(self, cfg):
        return [U.Task(n) for n in ("a", "bad", "c")] if cfg.inputs == ["bad"] else [U.Task(n) for n in ("a", "c")]

    def _write(self, name: str, dst: Path) -> Stats:
        if self.log:
            with open(self.log, "a") as f:
                f.write(name + "\n")
        (dst / "payload").write_text(name)
        if name == "bad":
            raise InputError("bad unit")
        st = Stats()
        st.add("n")
        return st

    def process_unit(self, task, cfg, dst):
        return self._write(task.name, dst)

    def units(self, task, cfg):
        total = Stats()
        for k in range(2):
            name = f"{task.name}/u{k}"
            got = yield Unit(name, lambda d, name=name: {"output": self._write(name, d["output"])})
            total = total + got["output"]
        return {"output": total}

    def finish(self, cfg, stats, tasks):
        return Finished({"n": stats["n"]}, {"stage": "toy-described", "extra": 1})


def test_the_driver_makes_units_atomic_and_marks_them_done(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UnitFailure, match="bad unit"):
        driver.run(ConvertConfig(inputs=["bad"], output=str(out), workers=1), command=Toy())
    assert U.is_done(out / "a") and U.is_done(out / "c") and (out / "a" / "payload").read_text() == "a"
    assert not (out / "bad").exists() and not list(out.glob(".*.partial"))  # a failed unit leaves nothing
    s = driver.run(ConvertConfig(inputs=["ok"], output=str(out), workers=1, overwrite=True), command=Toy())
    assert s["complete"] and s["n"] == 2 and U.read_done(out / "a")["n"] == 1
    meta = json.loads((out / "ettin_meta.json").read_text())  # the stage's record over the driver's
    assert meta["stage"] == "toy-described" and meta["extra"] == 1 and "settings" in meta


def test_units_yielded_by_a_task_are_skipped_when_done_and_the_task_marked(tmp_path):
    out, log = tmp_path / "out", tmp_path / "log"
    cfg = ConvertConfig(inputs=["ok"], output=str(out), workers=1)
    driver.run(cfg, command=Toy(many=True, log=log))
    assert log.read_text().split() == ["a/u0", "a/u1", "c/u0", "c/u1"]
    assert U.read_done(out / "a")["n"] == 2 and U.is_done(out / "a" / "u1")
    (out / "a" / ".done").unlink()  # the task is unfinished, its first unit is not
    (out / "a" / "u1" / ".done").unlink()
    log.unlink()
    driver.run(cfg, command=Toy(many=True, log=log))
    assert log.read_text().split() == ["a/u1"] and U.read_done(out / "a")["n"] == 2


# ---------------------------------------------------------------- two real runs on one output

def _start_slow(args: list[str], env: dict | None = None):
    """``ettin-data ARGS`` in a subprocess with every tokenize unit slowed down (tests/sleepy_stage.py)."""
    here = Path(__file__).parent
    env = {**os.environ, "SLEEPY_SECONDS": "1", "ETTIN_DATA_LOGS": "0", **(env or {}),
           "PYTHONPATH": os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "sleepy_stage", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(cond, proc, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the first run ended before {what}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_second_run_on_a_running_output_stops_at_once_and_changes_nothing(text_dataset, tmp_path,
                                                                           modernbert_json):
    """While a tokenize run works on an output, a second tokenize with another tokenizer, and a --rank run,
    stop at once with the lock line: its tokenizer.json is never rewritten (the lock is taken before the
    stage writes anything), and the first run finishes with its own tokenizer."""
    from ettin_data.tokenizer import _olmo_json_path

    out = tmp_path / "tok"
    first = _start_slow(["tokenize", text_dataset, "-o", out, "-t", "builtin:modernbert", "-w", "1", "-q"])
    try:
        _wait_for(lambda: (out / "tokenizer.json").is_file() and U.is_done(out / "python-docs" / "split_00000"),
                  first, "the first unit")
        before = (out / "tokenizer.json").read_bytes(), (out / "tokenizer.json").stat()
        other = str(_olmo_json_path())
        for extra in ((), ("--overwrite",), ("--rank", "0", "--world", "2")):
            one_line(cli("tokenize", text_dataset, "-o", out, "-t", other, *extra), 2, "in use by another run",
                     f"pid {first.pid}")
        after = (out / "tokenizer.json").read_bytes(), (out / "tokenizer.json").stat()
        assert after[0] == before[0] == modernbert_json.read_bytes()
        assert (after[1].st_ino, after[1].st_mtime_ns) == (before[1].st_ino, before[1].st_mtime_ns)
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        first.kill()
    meta = json.loads((out / "ettin_meta.json").read_text())
    assert meta["tokenizer"]["sha256"] == hashlib.sha256(modernbert_json.read_bytes()).hexdigest()
    assert not list(out.glob(".ettin_lock*")) and not (out / dataset.INCOMPLETE).exists()
