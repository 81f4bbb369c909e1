"""Config files under flags: a table per stage sets options by long name, flags override the file,
unknown keys and wrong types are one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ettin_data import config as C
from ettin_data.cli import app, resolve
from ettin_data.configfile import load_config_file
from ettin_data.errors import ConfigError
from ettin_data.mds import UnitReader, find_units

runner = CliRunner()


def _jsonl(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"d{i}", "body": f"document number {i} " * 3}) + "\n"
                            for i in range(n)))
    return path


def _dry(args: list[str]) -> dict:
    res = runner.invoke(app, [*args, "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_file_sets_options_and_flags_override_it(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "a.jsonl", 25)
    cfg = tmp_path / "run.toml"
    cfg.write_text('[convert]\ntext_field = "body"\ndocs_per_shard = 4\nskip-bad-lines = true\nworkers = 1\n'
                   '[tokenize]\ntokenizer = "unused-here"\n')
    out = tmp_path / "out"
    plan = _dry(["convert", str(src), "-o", str(out), "--config", str(cfg), "--docs-per-shard", "10"])
    conf = plan["config"]
    assert conf["text_field"] == {"value": "body", "from": "config file"}
    assert conf["skip_bad_lines"] == {"value": True, "from": "config file"}  # kebab-case key accepted
    assert conf["docs_per_shard"] == {"value": 10, "from": "flag"}  # flag beats file
    assert conf["output"] == {"value": str(out), "from": "flag"}
    assert conf["id_field"] == {"value": "id", "from": "default"}
    # the real run uses the same resolution: 25 docs at 10 per unit -> 3 units of 10, 10, 5
    res = runner.invoke(app, ["convert", str(src), "-o", str(out), "--config", str(cfg), "--docs-per-shard", "10",
                              "-q"])
    assert res.exit_code == 0, res.output
    units = find_units(out)
    assert [len(UnitReader(out / u)) for u in units] == [10, 10, 5]
    texts = [s["text"] for u in units for s in UnitReader(out / u).iter_samples(["text"])]
    assert texts[0] == "document number 0 " * 3  # text_field from the file was used


def test_boolean_flag_overrides_file_both_ways(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "a.jsonl", 3)
    cfg = tmp_path / "c.toml"
    cfg.write_text("[convert]\nskip_bad_lines = true\n")
    off = _dry(["convert", str(src), "-o", str(tmp_path / "o"), "--config", str(cfg), "--no-skip-bad-lines"])
    assert off["config"]["skip_bad_lines"] == {"value": False, "from": "flag"}
    cfg.write_text("[convert]\nskip_bad_lines = false\n")
    on = _dry(["convert", str(src), "-o", str(tmp_path / "o"), "--config", str(cfg), "--skip-bad-lines"])
    assert on["config"]["skip_bad_lines"] == {"value": True, "from": "flag"}


def test_file_can_hold_inputs_and_output(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "a.jsonl", 3)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[convert]\ninputs = ["{src}"]\noutput = "{tmp_path / "o"}"\ntext_field = "body"\n')
    plan = _dry(["convert", "--config", str(cfg)])
    assert plan["config"]["inputs"] == {"value": [str(src)], "from": "config file"}
    assert plan["plan"]["to_do"] == ["a"]


def test_unknown_key_names_it_and_the_valid_ones(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[convert]\ndocs_per_shrad = 5\n")
    res = runner.invoke(app, ["convert", "x.jsonl", "-o", str(tmp_path / "o"), "--config", str(cfg)])
    assert res.exit_code == 2
    assert "docs_per_shrad" in res.stderr and "docs_per_shard" in res.stderr and "[convert]" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_bad_toml_is_one_line_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[convert\ndocs_per_shard = \n")
    res = runner.invoke(app, ["convert", "x.jsonl", "-o", str(tmp_path / "o"), "--config", str(cfg)])
    assert res.exit_code == 2
    assert "not valid TOML" in res.stderr and str(cfg) in res.stderr
    assert "Traceback" not in res.output


def test_missing_file_and_non_table_section(tmp_path: Path) -> None:
    res = runner.invoke(app, ["convert", "x.jsonl", "-o", "o", "--config", str(tmp_path / "nope.toml")])
    assert res.exit_code == 2 and "does not exist" in res.stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text("convert = 3\n")
    res = runner.invoke(app, ["convert", "x.jsonl", "-o", "o", "--config", str(cfg)])
    assert res.exit_code == 2 and "[convert] must be a table" in res.stderr


def test_wrong_types_give_one_line_per_field(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[convert]\ndocs_per_shard = "many"\nworkers = 0\n')
    res = runner.invoke(app, ["convert", "x.jsonl", "-o", str(tmp_path / "o"), "--config", str(cfg)])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert any(line.startswith("error: convert: --docs-per-shard:") and "'many'" in line for line in lines)
    assert any(line.startswith("error: convert: --workers:") and "greater than or equal to 1" in line
               for line in lines)
    assert not (tmp_path / "o").exists()


def test_other_tables_are_ignored(tmp_path: Path) -> None:
    """One file can hold every stage's table; a stage reads only its own."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[chunk]\nchunk_size = 8192\nno_such_option = 1\n[convert]\ndocs_per_shard = 7\n')
    plan = _dry(["convert", "builtin:python-docs", "-o", str(tmp_path / "o"), "--config", str(cfg)])
    assert plan["config"]["docs_per_shard"]["value"] == 7


def test_nested_table_for_sample_commands(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[sample.split]\nvalidation_fraction = 0.2\nseed = 7\n[sample.budget]\ntarget_tokens = 5\n')
    model, origin = resolve(C.SplitConfig, "sample.split", {"inputs": ["a"], "output": "o", "seed": 3}, str(cfg))
    assert model.validation_fraction == 0.2 and model.seed == 3
    assert origin["validation_fraction"] == "config file" and origin["seed"] == "flag"
    assert origin["workers"] == "default"
    with pytest.raises(ConfigError, match="target_tokens"):
        resolve(C.SplitConfig, "sample.budget", {"inputs": ["a"], "output": "o"}, str(cfg))


def test_yaml_config(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("convert:\n  docs_per_shard: 12\n  text_field: body\n")
    plan = _dry(["convert", "builtin:python-docs", "-o", str(tmp_path / "o"), "--config", str(cfg)])
    assert plan["config"]["docs_per_shard"] == {"value": 12, "from": "config file"}
    assert plan["config"]["text_field"]["value"] == "body"
    cfg.write_text("convert: [1, 2\n")
    res = runner.invoke(app, ["convert", "x", "-o", "o", "--config", str(cfg)])
    assert res.exit_code == 2 and "not valid YAML" in res.stderr


def test_stats_reads_its_table(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[stats]\nplot = "hist.jpg"\n')
    res = runner.invoke(app, ["stats", str(tmp_path), "--config", str(cfg)])
    assert res.exit_code == 2 and "--plot" in res.stderr and ".png" in res.stderr


def test_recorded_settings_leave_runtime_options_out() -> None:
    cfg = C.ConvertConfig(inputs=["a"], output="o", workers=3, docs_per_shard=9)
    rec = C.recorded_settings(cfg)
    assert rec["docs_per_shard"] == 9
    assert not {"workers", "executor", "rank", "world", "inputs", "output", "overwrite"} & set(rec)


def test_example_config_file_is_valid_for_every_stage() -> None:
    """examples/phase1.toml stays in sync with the option models."""
    from ettin_data.stages import COMMANDS

    example = Path(__file__).resolve().parent.parent / "examples" / "phase1.toml"
    tables = {e.table: e.Config for e in COMMANDS}
    seen = 0
    for table in ("convert", "tokenize", "chunk", "sample.split", "finalize"):
        values = load_config_file(example, table)
        assert values, table
        cfg, origin = resolve(tables[table], table, {"inputs": ["in"], "output": "out"}, str(example))
        assert all(origin[k] == "config file" for k in values)
        seen += len(values)
    chunk, _ = resolve(C.ChunkConfig, "chunk", {"inputs": ["in"], "output": "out", "chunk_size": 2048},
                       str(example))
    assert (chunk.chunk_size, chunk.min_chunk_size, chunk.always_skip_size) == (2048, 512, 128)
    assert chunk.backfill and chunk.backfill_no_duplicates
    assert seen >= 12
