"""The ``ettin-data`` command: flags -> validated options model -> ``driver.run``; errors -> one line each.

The commands are those of the registry (``stages/__init__.py``). Every option is declared once, on the
command's pydantic model (``config.py``); this module turns the model's fields into Typer options (name,
short flag, help, default, choices). Heavy libraries (streaming, torch, datasets, tokenizers, numpy) are
imported only when a command runs.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import inspect
import json
import os
import sys
import threading
import types
import typing
from typing import Annotated, Any, Optional  # noqa: UP035

import typer
from pydantic import BaseModel, ValidationError

from . import __version__
from . import config as C
from .configfile import load_config_file
from .errors import ConfigError, EttinError, UnitFailure, os_error_message
from .interrupt import describe, exit_code, handle_signals
from .stages import COMMANDS, Entry

__all__ = ["app", "main"]

app = typer.Typer(
    name="ettin-data",
    help="Prepare encoder/decoder pretraining data (Ettin / ModernBERT style) as MosaicML-Streaming MDS.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
sample_app = typer.Typer(
    help="Sample train/validation splits, token budgets, context-extension sets and mixtures.",
    no_args_is_help=True,
)
app.add_typer(sample_app, name="sample")

# Options of the command itself (how to run and report), not of the stage: declared here once.
RUN_OPTIONS: dict[str, tuple[Any, Any]] = {
    "config": (Optional[str], typer.Option(None, "--config", help="TOML/YAML file with a table per stage "
                                           "([tokenize], [chunk], [sample.split], ...); flags override it.")),
    "dry_run": (bool, typer.Option(False, "--dry-run", help="Print the resolved options and the planned work; "
                                   "write nothing.")),
    "json_out": (bool, typer.Option(False, "--json", help="Print a machine-readable summary on stdout.")),
    "quiet": (bool, typer.Option(False, "--quiet", "-q", help="No progress display.")),
    "debug": (bool, typer.Option(False, "--debug", help="Show tracebacks of errors.")),
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ettin-data {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Prepare encoder/decoder pretraining data as MosaicML-Streaming MDS shards."""


def _extra(field: Any) -> dict[str, Any]:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def _cli_type(annotation: Any, name: str) -> tuple[Any, bool]:
    """Map a model annotation to a Typer-friendly one; returns (type, is_bool)."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _cli_type(inner[0], name)
    if origin is typing.Literal:
        return enum.Enum(f"{name}_choices", {str(a): str(a) for a in args}, type=str), False
    if origin is list:
        return list[args[0]], False
    return annotation, annotation is bool


def _default_text(field: Any) -> str | None:
    if field.default_factory is not None:
        return "all cores" if field.default_factory is C.default_workers else None
    if field.is_required() or field.default is None:
        return None
    if isinstance(field.default, bool):
        return None
    return str(field.default)


def _params(model: type[BaseModel], input_help: str) -> list[inspect.Parameter]:
    params = []
    common = set(C.StageConfig.model_fields)
    fields = sorted(model.model_fields.items(), key=lambda kv: (kv[0] != "inputs", kv[0] in common))
    for name, field in fields:
        if name == "inputs":
            params.append(inspect.Parameter(
                "inputs", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Optional[list[str]],
                default=typer.Argument(None, help=input_help, show_default=False)))
            continue
        typ, is_bool = _cli_type(field.annotation, name)
        long = "--" + name.replace("_", "-")
        decls = [f"{long}/--no-{long[2:]}"] if is_bool else [long]
        if _extra(field).get("flag"):
            decls.append(_extra(field)["flag"])
        help_text = field.description or ""
        if field.is_required() and name != "inputs":
            help_text += " [required]"
        if is_bool:
            help_text += f" [default: {'on' if field.default else 'off'}]"
        opt = typer.Option(None, *decls, help=help_text, show_default=_default_text(field) or False)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[typ],
                                        default=opt))
    for name, (typ, opt) in RUN_OPTIONS.items():
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=typ, default=opt))
    return params


def _plain(v: Any) -> Any:
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def resolve(model: type[BaseModel], table: str, cli: dict[str, Any],
            config_file: str | None) -> tuple[BaseModel, dict[str, str]]:
    """Merge defaults < config file < flags; returns the validated model and where each value came from."""
    from_file: dict[str, Any] = {}
    if config_file:
        for t in C.CONFIG_TABLES.get(table, (table,)):
            section = load_config_file(config_file, t)
            if t != table:  # another stage's table (prepare reads [convert], [tokenize], [chunk]): its own
                section = {k: v for k, v in section.items() if k not in ("inputs", "output", "to")}  # folders
            unknown = sorted(set(section) - set(model.model_fields))
            if unknown:
                raise ConfigError(
                    f"{config_file}: unknown option(s) {', '.join(unknown)} in [{t}]; "
                    f"valid: {', '.join(model.model_fields)}"
                )
            from_file.update(section)
    given = {k: _plain(v) for k, v in cli.items() if v is not None and not (k == "inputs" and not v)}
    merged = {**from_file, **given}
    origin = {k: ("flag" if k in given else "config file") for k in merged}
    cfg = model(**merged)
    for k in model.model_fields:
        origin.setdefault(k, "default")
    return cfg, origin


def _validation_lines(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            lines.append(f"missing {'INPUT' if loc == 'inputs' else '--' + loc.replace('_', '-')}")
        elif loc:
            field = "INPUT" if loc.startswith("inputs") else "--" + loc.split(".")[0].replace("_", "-")
            lines.append(f"{field}: {msg} (got {e.get('input')!r})")
        else:
            lines.append(msg)
    return lines


def _fail(message: str, code: int, debug: bool, hint: bool = False) -> typing.NoReturn:
    if debug:
        import traceback

        traceback.print_exc()
    typer.echo(f"error: {message}", err=True)
    if hint and not debug:
        typer.echo("(run with --debug for the traceback)", err=True)
    raise typer.Exit(code)


def _dry_run(cmd: Any, cfg: BaseModel, origin: dict[str, str], as_json: bool) -> None:
    """Print the resolved options (and where each came from) and the planned work; write nothing."""
    from .driver import dry_run

    resolved = {k: {"value": getattr(cfg, k), "from": origin[k]} for k in type(cfg).model_fields}
    planned = dry_run(cfg, cmd)
    if as_json:
        typer.echo(json.dumps({"config": resolved, "plan": planned}, default=str, sort_keys=True))
        return
    from .report import print_dry_run

    print_dry_run(resolved, planned)


def _write_log(log: Any, code: int, **kw: Any) -> str | None:
    """Write the run log; a log that cannot be written is a warning, never a failed run."""
    if log is None:
        return None
    try:
        path = log.write(code, **kw)
    except (OSError, EttinError) as e:
        typer.echo(f"warning: could not write the run log: {e}", err=True)
        return None
    return str(path) if path else None


def _make_command(entry: Entry):
    name, model = entry.name.split()[-1], entry.Config

    @handle_signals()  # SIGTERM/SIGHUP take the Ctrl-C path below (exit 143/129)
    def command(**kwargs: Any) -> None:
        run_opts = {k: kwargs.pop(k) for k in RUN_OPTIONS}
        debug = run_opts["debug"] or os.environ.get("ETTIN_DEBUG") == "1"
        log = None
        cfg: Any = None
        try:
            cfg, origin = resolve(model, entry.table, kwargs, run_opts["config"])
            cmd = entry.load()
            if run_opts["dry_run"]:
                _dry_run(cmd, cfg, origin, run_opts["json_out"])
                return
            from .driver import run
            from .logs import RunLog

            log = RunLog(entry.name.replace(" ", "-"), cfg, origin)
            summary = run(cfg, quiet=run_opts["quiet"] or run_opts["json_out"], log=log, command=cmd)
        except ValidationError as e:
            for line in _validation_lines(e):
                typer.echo(f"error: {name}: {line}", err=True)
            raise typer.Exit(2) from None
        except UnitFailure as e:
            _write_log(log, 1, error=str(e), failures=e.failures)
            if debug:
                for unit, tb in getattr(e, "tracebacks", {}).items():
                    typer.echo(f"--- {unit}\n{tb}", err=True)
            for unit, msg in e.failures:
                typer.echo(f"error: unit {unit}: {msg}", err=True)
            _fail(f"{len(e.failures)} of {e.total} units failed; finished units are kept, rerun to retry "
                  "(--debug shows tracebacks)", 1, False)
        except EttinError as e:
            _write_log(log, e.exit_code, error=str(e))
            _fail(str(e), e.exit_code, debug)
        except KeyboardInterrupt as e:  # Ctrl-C, or interrupt.Terminated (SIGTERM, SIGHUP)
            _write_log(log, exit_code(e), error=describe(e))
            _fail(f"{describe(e)}; finished units are kept, rerun to resume", exit_code(e), False)
        except OSError as e:  # disk full, read-only output, permissions: one line naming the path
            msg = os_error_message(e, getattr(cfg, "output", None))
            _write_log(log, 1, error=msg)
            _fail(msg, 1, debug)
        except Exception as e:  # an unexpected error: still one line unless --debug
            _write_log(log, 1, error=f"{type(e).__name__}: {e}")
            _fail(f"{type(e).__name__}: {e}", 1, debug, hint=True)
        code = 1 if summary.get("problems") else 0
        log_path = _write_log(log, code, summary=summary)
        if log_path:
            summary["log"] = log_path
        if run_opts["json_out"]:
            typer.echo(json.dumps(summary, sort_keys=True, default=str))
        else:
            cmd.render(summary)
        if code:
            raise typer.Exit(code)

    command.__signature__ = inspect.Signature(_params(model, entry.input_help))  # type: ignore[attr-defined]
    command.__name__ = name.replace("-", "_")
    return command


for _entry in COMMANDS:
    _group = sample_app if _entry.name.startswith("sample ") else app
    _group.command(_entry.name.split()[-1], help=_entry.help, no_args_is_help=True)(_make_command(_entry))


def main() -> None:
    # the driver does no linear algebra: one OpenBLAS thread (none of its own) keeps this process single-threaded
    # until its workers start, so they are forked, not spawned (executors/local.py: ~0.3 s and ~0.3 CPU-s saved
    # per worker). Read by numpy's OpenBLAS when numpy is first imported, which is after this line.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        app(prog_name="ettin-data")
    except SystemExit as done:  # how every command ends (click's standalone mode)
        _exit(done.code)


def _exit(code: Any) -> None:
    """Leave as ``sys.exit(code)`` does (the same code, every atexit handler run, output flushed) without the
    interpreter's teardown: freeing the parsed tokenizers and every module takes ~0.06 s of every command.
    Only when no other thread runs (a normal exit would wait for it)."""
    if threading.active_count() > 1:
        raise SystemExit(code)
    if code is not None and not isinstance(code, int):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()  # noqa: SLF001 - what the interpreter runs before its teardown
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more can be said
            stream.flush()
    os._exit(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
