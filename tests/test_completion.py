"""Shell completion through Typer (bash and zsh), run through the installed console script, and the
promise that --help and completion stay light (no torch, streaming, transformers, datasets, tokenizers)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ettin_data.stages import COMMANDS

BIN = Path(sys.executable).parent
SCRIPT = BIN / "ettin-data"
HEAVY = ("torch", "streaming", "transformers", "datasets", "tokenizers", "matplotlib", "pyarrow", "ray")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_ETTIN_DATA", "_TYPER", "COMP_"))}
    env.update(HOME=str(tmp_path), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", **extra)
    return env


def _bash_complete(tmp_path: Path, words: list[str]) -> list[str]:
    """Complete the last word as bash would, through the script Typer generates for bash."""
    res = subprocess.run([str(SCRIPT)], env=_env(tmp_path, _ETTIN_DATA_COMPLETE="complete_bash",
                                                 COMP_WORDS=" ".join(words), COMP_CWORD=str(len(words) - 1)),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def _zsh_complete(tmp_path: Path, line: str) -> str:
    res = subprocess.run([str(SCRIPT)], env=_env(tmp_path, _ETTIN_DATA_COMPLETE="complete_zsh",
                                                 _TYPER_COMPLETE_ARGS=line),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_bash_completes_commands(tmp_path: Path) -> None:
    assert _bash_complete(tmp_path, ["ettin-data", "co"]) == ["convert"]
    assert _bash_complete(tmp_path, ["ettin-data", "ch"]) == ["chunk"]
    everything = set(_bash_complete(tmp_path, ["ettin-data", ""]))
    assert {e.name for e in COMMANDS if " " not in e.name} | {"sample"} <= everything


def test_to_completes_to_tokenize(tmp_path: Path) -> None:
    assert _bash_complete(tmp_path, ["ettin-data", "to"]) == ["tokenize"]
    assert "tokenize" in _zsh_complete(tmp_path, "ettin-data to")


def test_sample_subcommands_complete(tmp_path: Path) -> None:
    subs = sorted(e.name.split()[1] for e in COMMANDS if e.name.startswith("sample "))
    assert subs == ["budget", "context", "mix", "split"]
    assert sorted(_bash_complete(tmp_path, ["ettin-data", "sample", ""])) == subs


def test_bash_completes_options_and_choices(tmp_path: Path) -> None:
    assert _bash_complete(tmp_path, ["ettin-data", "chunk", "--back"]) == ["--backfill", "--backfill-no-duplicates"]
    assert _bash_complete(tmp_path, ["ettin-data", "convert", "--docs"]) == ["--docs-per-shard"]
    assert _bash_complete(tmp_path, ["ettin-data", "finalize", "--for", ""]) == [
        "modernbert", "modernbert-streaming", "llm-foundry", "numpy"]
    assert _bash_complete(tmp_path, ["ettin-data", "convert", "--executor", ""]) == ["local", "ray"]
    assert "--dry-run" in _bash_complete(tmp_path, ["ettin-data", "stats", "--"])


def test_zsh_completes_options_with_help(tmp_path: Path) -> None:
    out = _zsh_complete(tmp_path, "ettin-data chunk --back")
    assert '"--backfill":"Fill short last pieces' in out and '"--backfill-no-duplicates"' in out
    assert '"convert"' in _zsh_complete(tmp_path, "ettin-data co")


def test_show_completion_scripts(tmp_path: Path) -> None:
    env = _env(tmp_path, _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    bash = subprocess.run([str(SCRIPT), "--show-completion", "bash"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert bash.returncode == 0
    assert "complete -o default -F _ettin_data_completion ettin-data" in bash.stdout
    assert "_ETTIN_DATA_COMPLETE=complete_bash" in bash.stdout
    zsh = subprocess.run([str(SCRIPT), "--show-completion", "zsh"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert zsh.returncode == 0
    assert zsh.stdout.startswith("#compdef ettin-data") and "_ETTIN_DATA_COMPLETE=complete_zsh" in zsh.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_bash_script_works_in_a_real_bash(tmp_path: Path) -> None:
    """The generated script, sourced into bash, fills COMPREPLY (auto-detects bash as the shell)."""
    script = ("source <(ettin-data --show-completion); "
              "COMP_WORDS=(ettin-data chunk --back); COMP_CWORD=2; _ettin_data_completion ettin-data; "
              'echo "${COMPREPLY[@]}"')
    res = subprocess.run(["bash", "-c", script], env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["--backfill", "--backfill-no-duplicates"]


@pytest.mark.parametrize("shell, script, rc_file, rc_line", [
    ("bash", ".bash_completions/ettin-data.sh", ".bashrc", "source"),
    ("zsh", ".zfunc/_ettin-data", ".zshrc", "compinit"),
])
def test_install_completion(tmp_path: Path, shell: str, script: str, rc_file: str, rc_line: str) -> None:
    env = _env(tmp_path, _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    res = subprocess.run([str(SCRIPT), "--install-completion", shell], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert f"{shell} completion installed" in res.stdout
    assert f"_ETTIN_DATA_COMPLETE=complete_{shell}" in (tmp_path / script).read_text()
    assert rc_line in (tmp_path / rc_file).read_text()


def _imported(tmp_path: Path, args: list[str], **env: str) -> set[str]:
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "ettin_data", *args],
                         env=_env(tmp_path, **env), capture_output=True, text=True, timeout=60)
    mods = set()
    for line in res.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            mods.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert mods, res.stderr[-500:]
    return mods


def test_help_imports_nothing_heavy(tmp_path: Path) -> None:
    for args in (["--help"], ["convert", "--help"], ["chunk", "--help"]):
        assert not set(HEAVY) & _imported(tmp_path, args), args


def test_completion_imports_nothing_heavy(tmp_path: Path) -> None:
    mods = _imported(tmp_path, [], _ETTIN_DATA_COMPLETE="complete_bash", COMP_WORDS="ettin-data chunk --b",
                     COMP_CWORD="2")
    assert "typer" in mods
    assert not set(HEAVY) & mods
