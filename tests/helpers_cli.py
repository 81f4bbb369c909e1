"""The CLI as the error-message tests drive it: ``cli(...)`` invokes ``ettin-data`` in-process and
``one_line(result, code, *words)`` asserts the exit code and that stderr is one line holding every word."""

from __future__ import annotations

from typer.testing import CliRunner

from ettin_data.cli import app

runner = CliRunner()


def cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def one_line(res, code: int, *words: str) -> str:
    lines = [x for x in res.stderr.strip().splitlines() if not x.startswith("(run with --debug")]
    assert res.exit_code == code, (res.exit_code, res.stderr, res.stdout)
    assert len(lines) == 1, res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]
