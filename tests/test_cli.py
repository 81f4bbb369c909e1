"""The command line contract: --dry-run writes nothing and reports done/to-do units, exit codes
(0 ok, 1 failed units or bad data, 2 bad usage), --json summaries, and the per-run log file."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ettin_data.cli import app
from ettin_data.config import StageConfig
from ettin_data.logs import LOG_DIR
from ettin_data.mds import find_units
from ettin_data.stages import COMMANDS

runner = CliRunner()


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root with its size and mtime: any write shows up."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size if p.is_file() else -1, st.st_mtime_ns)
    return out


def _sources(tmp_path: Path, names=("a", "b"), n: int = 7) -> list[str]:
    paths = []
    for name in names:
        p = tmp_path / "raw" / f"{name}.jsonl"
        p.parent.mkdir(exist_ok=True)
        if not p.exists():  # idempotent: later calls must not touch the inputs
            p.write_text("".join(json.dumps({"id": f"{name}{i}", "text": f"text {name} {i} " * 4}) + "\n"
                                 for i in range(n)))
        paths.append(str(p))
    return paths


def _invoke(args: list[str], **kw):
    return runner.invoke(app, args, **kw)


def _convert(tmp_path: Path, out: Path, *extra: str):
    return _invoke(["convert", *_sources(tmp_path), "-o", str(out), "--docs-per-shard", "3", "-w", "1", "-q",
                    *extra])


def test_dry_run_on_a_fresh_output_writes_nothing(tmp_path: Path) -> None:
    srcs = _sources(tmp_path)
    before = _tree(tmp_path)
    out = tmp_path / "deep" / "out"
    res = _invoke(["convert", *srcs, "-o", str(out), "--docs-per-shard", "3", "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)["plan"]
    assert plan == {"units": 2, "mine": 2, "to_do": ["a", "b"], "already_done": []}
    res = _invoke(["convert", *srcs, "-o", str(out), "--dry-run"])  # the table form too
    assert res.exit_code == 0 and "dry run" in res.stdout and "to do: a" in res.stdout
    assert _tree(tmp_path) == before
    assert not (tmp_path / "deep").exists()


def test_dry_run_after_a_partial_run_reports_done_and_to_do(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _convert(tmp_path, out).exit_code == 0
    (out / "b" / ".done").unlink()  # as if the run was killed while writing source b
    before = _tree(tmp_path)
    res = _invoke(["convert", *_sources(tmp_path), "-o", str(out), "--docs-per-shard", "3", "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout)
    assert body["plan"]["to_do"] == ["b"] and body["plan"]["already_done"] == ["a"]
    assert "settings_conflict" not in body["plan"]
    assert body["config"]["docs_per_shard"] == {"value": 3, "from": "flag"}
    # rank/world: the plan shows only this rank's share
    res = _invoke(["convert", *_sources(tmp_path), "-o", str(out), "--docs-per-shard", "3", "--rank", "1",
                   "--world", "2", "--dry-run", "--json"])
    assert json.loads(res.stdout)["plan"] == {"units": 2, "mine": 1, "to_do": ["b"], "already_done": []}
    # --overwrite plans everything again
    res = _invoke(["convert", *_sources(tmp_path), "-o", str(out), "--docs-per-shard", "3", "--overwrite",
                   "--dry-run", "--json"])
    assert json.loads(res.stdout)["plan"]["to_do"] == ["a", "b"]
    assert _tree(tmp_path) == before


def test_dry_run_shows_the_settings_a_real_run_would_refuse(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _convert(tmp_path, out).exit_code == 0
    before = _tree(tmp_path)
    args = ["convert", *_sources(tmp_path), "-o", str(out), "--docs-per-shard", "4"]
    res = _invoke([*args, "--dry-run", "--json"])
    assert json.loads(res.stdout)["plan"]["settings_conflict"] == ["docs_per_shard: 3 -> 4"]
    assert _tree(tmp_path) == before
    res = _invoke([*args, "-q"])  # and the real run does refuse: bad usage
    assert res.exit_code == 2 and "other settings" in res.stderr


def test_dry_run_of_an_export(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _convert(tmp_path, out).exit_code == 0
    before = _tree(tmp_path)
    res = _invoke(["export", str(out), "-o", str(tmp_path / "x.jsonl"), "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["plan"] == {"export": {"inputs": [str(out)], "output": str(tmp_path / "x.jsonl"),
                                                         "output_exists": False}}
    assert _tree(tmp_path) == before


# ---- exit codes and --json ----------------------------------------------------------------------

def test_convert_ok_json_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _invoke(["convert", *_sources(tmp_path), "-o", str(out), "--docs-per-shard", "3", "-w", "1", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)  # stdout is exactly one JSON document
    assert summary["stage"] == "convert" and summary["documents"] == 14 and summary["complete"] is True
    assert summary["units"] == 6 and summary["units_run"] == 2 and summary["units_skipped"] == 0
    again = json.loads(_invoke(["convert", *_sources(tmp_path), "-o", str(out), "--docs-per-shard", "3",
                                "--json"]).stdout)
    assert again["units_run"] == 0 and again["units_skipped"] == 2 and again["documents"] == 14


def test_failed_unit_exit_1_others_kept(tmp_path: Path) -> None:
    srcs = _sources(tmp_path)
    Path(srcs[1]).write_text('{"id": "x", "text": "fine"}\n{not json\n')
    out = tmp_path / "out"
    res = _invoke(["convert", *srcs, "-o", str(out), "-w", "1", "--json"])
    assert res.exit_code == 1
    assert res.stdout == ""  # no summary when units failed: the errors are on stderr
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith("error: unit b: ") and "b.jsonl:2" in lines[0]
    assert lines[-1].startswith("error: 1 of 2 units failed")
    assert "Traceback" not in res.output
    assert (out / "a" / ".done").is_file() and not (out / "b" / ".done").exists()


@pytest.mark.parametrize("args, message", [
    (["convert", "x.jsonl", "-o", "o", "--no-such-option"], "No such option"),
    (["convert", "x.jsonl", "-o", "o", "-w", "0"], "--workers"),
    (["finalize", "x", "-o", "o", "--for", "csv"], "--for"),
    (["export", "x", "-o", "s3://b/x.jsonl"], "export writes a local file"),
    (["convert", "x.jsonl"], "missing --output"),
    (["convert", "x.jsonl", "-o", "o", "--rank", "2", "--world", "2"], "rank 2 must be smaller than world 2"),
    (["stats", "x", "--plot", "a.jpg"], ".png"),
    (["stats", "x", "--show", "-1"], "--show"),
    (["no-such-command"], "No such command"),
])
def test_bad_usage_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    res = _invoke(args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output


def test_no_arguments_prints_help_exit_2() -> None:
    res = _invoke([])
    assert res.exit_code == 2 and "Commands" in res.output


def test_missing_input_exit_1_writes_nothing(tmp_path: Path) -> None:
    res = _invoke(["convert", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "out")])
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.jsonl'} does not exist (expected a "
                                               "file, folder, glob or hub dataset name)"]
    assert not (tmp_path / "out").exists()


def test_stats_exit_codes_and_json(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _convert(tmp_path, out).exit_code == 0
    res = _invoke(["stats", str(out), "--json"])
    assert res.exit_code == 0
    s = json.loads(res.stdout)
    assert s["samples"] == 14 and s["units"] == 6 and s["length_unit"] == "characters"
    res = _invoke(["stats", str(tmp_path / "nope")])
    assert res.exit_code == 1 and res.stderr.strip() == f"error: {tmp_path / 'nope'} does not exist"
    (tmp_path / "notmds").mkdir()
    res = _invoke(["stats", str(tmp_path / "notmds")])
    assert res.exit_code == 1 and "not an MDS dataset" in res.stderr


STAGE_COMMANDS = [tuple(e.name.split()) if " " in e.name else (None, e.name) for e in COMMANDS
                  if issubclass(e.Config, StageConfig)]


def _argv(group: str | None, name: str) -> list[str]:
    return [group, name] if group else [name]


@pytest.mark.parametrize("group, name", STAGE_COMMANDS)
def test_every_stage_bad_usage_is_exit_2(tmp_path: Path, group: str | None, name: str) -> None:
    res = _invoke([*_argv(group, name), str(tmp_path), "-o", str(tmp_path / "o"), "--bogus-flag"])
    assert res.exit_code == 2 and "No such option" in res.output
    res = _invoke([*_argv(group, name), str(tmp_path), "-o", str(tmp_path / "o"), "--workers", "0"])
    assert res.exit_code == 2
    assert any(line.startswith(f"error: {name}: --workers:") for line in res.stderr.splitlines()), res.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("group, name", STAGE_COMMANDS)
def test_every_stage_missing_input_is_one_line_exit_1(tmp_path: Path, group: str | None, name: str) -> None:
    from ettin_data import config as C

    model = next(e.Config for e in COMMANDS if e.name == " ".join(_argv(group, name)))
    required = {
        k: {int: "5", float: "0.1", str: "x"}.get(f.annotation, "x")
        for k, f in model.model_fields.items() if f.is_required() and k not in C.StageConfig.model_fields
    }
    extra = [x for k, v in required.items() for x in ("--" + k.replace("_", "-"), v)]
    res = _invoke([*_argv(group, name), str(tmp_path / "missing"), "-o", str(tmp_path / "o"), "-w", "1", *extra])
    # a mix file is configuration: missing, it is a usage error; missing data is exit 1
    assert res.exit_code == (2 if (group, name) == ("sample", "mix") else 1), res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(tmp_path / "missing") in lines[0], lines
    assert not (tmp_path / "o").exists()


# ---- run logs -------------------------------------------------------------------------------------

def _logs(out: Path) -> list[list[dict]]:
    files = sorted((out / LOG_DIR).glob("*.jsonl"))
    return [[json.loads(line) for line in f.read_text().splitlines()] for f in files]


def test_run_log_records_config_and_units(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _convert(tmp_path, out, "--json")
    summary = json.loads(res.stdout)
    (log,) = _logs(out)
    assert summary["log"] == str(next((out / LOG_DIR).glob("*.jsonl")))
    start, units, end = log[0], log[1:-1], log[-1]
    assert start["event"] == "start" and start["stage"] == "convert"
    assert start["config"]["docs_per_shard"] == {"from": "flag", "value": 3}
    assert start["config"]["text_field"] == {"from": "default", "value": "text"}
    assert [(u["unit"], u["status"]) for u in units] == [("a", "done"), ("b", "done")]
    assert units[0]["counts"]["documents_written"] == 7
    assert end["event"] == "end" and end["exit_code"] == 0 and end["summary"]["documents"] == 14
    # the log is invisible to MDS: no unit, and the root index is the same as without logs
    assert find_units(out) == [f"{s}/split_0000{i}" for s in "ab" for i in range(3)]
    index = (out / "index.json").read_bytes()
    quiet_out = tmp_path / "nolog"
    res = runner.invoke(app, ["convert", *_sources(tmp_path), "-o", str(quiet_out), "--docs-per-shard", "3",
                              "-w", "1", "-q"], env={"ETTIN_DATA_LOGS": "0"})
    assert res.exit_code == 0 and not (quiet_out / LOG_DIR).exists()
    assert (quiet_out / "index.json").read_bytes() == index
    # a second run logs the units as skipped, in a new file
    _convert(tmp_path, out)
    second = _logs(out)
    assert len(second) == 2
    statuses = {tuple((u["unit"], u["status"]) for u in lg[1:-1]) for lg in second}
    assert (("a", "skipped"), ("b", "skipped")) in statuses


def test_run_log_records_failures(tmp_path: Path) -> None:
    srcs = _sources(tmp_path)
    Path(srcs[0]).write_text("{oops\n")
    out = tmp_path / "out"
    res = _invoke(["convert", *srcs, "-o", str(out), "-w", "1", "-q"])
    assert res.exit_code == 1
    (log,) = _logs(out)
    units = {u["unit"]: u for u in log[1:-1]}
    assert units["a"]["status"] == "failed" and "a.jsonl:1" in units["a"]["error"]
    assert units["b"]["status"] == "done"
    assert log[-1]["exit_code"] == 1 and "1 of 2 units failed" in log[-1]["error"]


def test_no_log_when_the_run_is_refused_up_front(tmp_path: Path) -> None:
    res = _invoke(["convert", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "out")])
    assert res.exit_code == 1 and not (tmp_path / "out").exists()


def test_every_stage_json_summary_and_log(tmp_path: Path) -> None:
    """The whole chain through the CLI with --json: exit 0, stdout is one JSON object naming the stage,
    and every output folder gets a run log that ends with exit code 0."""
    text, tokens, chunks = tmp_path / "text", tmp_path / "tokens", tmp_path / "chunks"
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"id": f"d{i}", "text": "word " * (50 + 40 * i)}) + "\n" for i in range(30)))
    mix = tmp_path / "mix.toml"
    mix.write_text(f'total_tokens = 3000\n[sources.a]\npath = "{chunks}"\nproportion = 1.0\n')
    runs = [
        (["convert", str(src), "-o", str(text), "--docs-per-shard", "10"], "convert"),
        (["tokenize", str(text), "-o", str(tokens), "-t", "builtin:modernbert"], "tokenize"),
        (["chunk", str(tokens), "-o", str(chunks), "-c", "256", "-m", "64", "-a", "16", "--backfill"], "chunk"),
        (["sample", "split", str(chunks), "-o", str(tmp_path / "split"), "--validation-fraction", "0.2"],
         "sample split"),
        (["sample", "budget", str(chunks), "-o", str(tmp_path / "budget"), "--target-tokens", "2000"],
         "sample budget"),
        (["sample", "context", str(chunks), "-o", str(tmp_path / "context"), "--num-tokens", "1000"],
         "sample context"),
        (["sample", "mix", str(mix), "-o", str(tmp_path / "mix")], "sample mix"),
        (["finalize", str(tmp_path / "split"), "-o", str(tmp_path / "final")], "finalize"),
    ]
    for args, stage in runs:
        out = Path(args[args.index("-o") + 1])
        before = _tree(tmp_path)
        dry = _invoke([*args, "--dry-run", "--json"])
        assert dry.exit_code == 0, (args, dry.output)
        planned = json.loads(dry.stdout)["plan"]
        assert planned["to_do"] and planned["already_done"] == [] and not out.exists()
        assert _tree(tmp_path) == before, f"{stage} --dry-run wrote something"
        res = _invoke([*args, "-w", "1", "--json"])
        assert res.exit_code == 0, (args, res.output)
        summary = json.loads(res.stdout)
        assert summary["stage"] == stage and summary["complete"] is True
        (log,) = _logs(out)
        assert summary["log"] == str(next((out / LOG_DIR).glob("*.jsonl")))
        assert log[0]["stage"] == stage.replace(" ", "-") and log[-1]["exit_code"] == 0
        assert {u["status"] for u in log[1:-1]} == {"done"}
        again = json.loads(_invoke([*args, "--dry-run", "--json"]).stdout)["plan"]
        assert again["to_do"] == [] and again["already_done"] == planned["to_do"]
    res = _invoke(["stats", str(tmp_path / "final" / "train"), "--verify", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["samples"] > 0


# ---- progress -------------------------------------------------------------------------------------

def _stderr_on_a_tty(args: list[str], cwd: Path) -> str:
    """Run the console script with stderr on a pseudo-terminal; returns what it showed there."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ettin-data"), *args], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(master)
    assert proc.returncode == 0
    return b"".join(chunks).decode("utf-8", "replace")


def test_progress_on_a_tty_and_quiet(tmp_path: Path) -> None:
    srcs = _sources(tmp_path, names=("a", "b", "c"), n=50)
    shown = _stderr_on_a_tty(["convert", *srcs, "-o", "out", "-w", "1", "--docs-per-shard", "10"], tmp_path)
    assert "convert" in shown and "3/3" in shown and "units" in shown and "docs/s" in shown
    quiet = _stderr_on_a_tty(["convert", *srcs, "-o", "out2", "-w", "1", "--docs-per-shard", "10", "-q"], tmp_path)
    assert quiet.strip() == ""


def test_ctrl_c_exits_130_keeps_finished_units_and_logs_it(tmp_path: Path) -> None:
    src = tmp_path / "big.jsonl"
    line = " ".join(["word"] * 100)
    src.write_text("".join(f'{{"id": "{i}", "text": "{line}"}}\n' for i in range(100_000)))
    out = tmp_path / "out"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ettin-data"), "convert", str(src), "-o", str(out),
                             "-w", "1", "--docs-per-shard", "500"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # (a shell's background job, e.g. `make test &`, starts with SIGINT ignored: give the run a terminal's default)
    deadline = time.monotonic() + 60
    while not (out / "big" / "split_00000" / ".done").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert stderr.strip() == "error: interrupted; finished units are kept, rerun to resume" and stdout == ""
    assert (out / "big" / "split_00000" / ".done").is_file() and not (out / "ettin_meta.json").exists()
    (log,) = _logs(out)
    assert log[-1]["exit_code"] == 130 and log[-1]["error"] == "interrupted"
    assert [(u["unit"], u["status"]) for u in log[1:-1]] == [("big", "unfinished")]


@pytest.mark.parametrize(("args", "code"), [(["--help"], 0), (["tokenize", "/nonexistent-input"], 2),
                                            (["stats", "/nonexistent-input"], 1)])
def test_the_command_exits_with_its_code_after_every_atexit_handler(args: list[str], code: int) -> None:
    """main() leaves without the interpreter's teardown (cli._exit): the same exit code, every atexit handler
    run, everything printed (stdout to a pipe) delivered."""
    prog = ("import atexit, sys\nfrom ettin_data.cli import main\n"
            "atexit.register(lambda: print('atexit ran', flush=True))\n"
            f"sys.argv = ['ettin-data', *{args!r}]\nmain()")
    res = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True)
    assert res.returncode == code, res.stderr
    assert res.stdout.rstrip().endswith("atexit ran")
    if code == 0:
        assert "Usage: ettin-data" in res.stdout
    else:
        assert res.stderr.startswith("error: ")
