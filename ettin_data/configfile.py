"""Config files (``--config FILE``): the ``[table]`` of a TOML or YAML file as option values, by long name. The
CLI (``cli.resolve``) merges them under the flags and validates them with the options models (``config.py``)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["load_config_file"]


def _parse_error(e: Exception) -> str:
    """A TOML/YAML parser's error as one line (PyYAML's span several, with the offending text quoted)."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is not None and problem:
        context = getattr(e, "context", None)
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" + (f" ({context})" if context else "")
    return " ".join(str(e).split()) or type(e).__name__


def load_config_file(path: str | Path, table: str) -> dict[str, Any]:
    """Read the ``[table]`` of a TOML (or YAML) file; keys are long option names with underscores."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {p} is a folder; pass the TOML/YAML file inside it")
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    yaml_file = p.suffix.lower() in (".yaml", ".yml")
    try:
        if yaml_file:
            try:
                import yaml
            except ImportError as e:  # pragma: no cover
                raise ConfigError(f"{p}: YAML needs PyYAML (pip install pyyaml), or use TOML") from e
            data = yaml.safe_load(p.read_text()) or {}
        else:
            data = tomllib.loads(p.read_text())
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"{p} is not valid {'YAML' if yaml_file else 'TOML'}: {_parse_error(e)}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected tables like [{table}]")
    section: Any = data
    for key in table.split("."):
        section = section.get(key, {}) if isinstance(section, dict) else None
    if not isinstance(section, dict):
        raise ConfigError(f"{p}: [{table}] must be a table of options")
    return {k.replace("-", "_"): v for k, v in section.items()}
