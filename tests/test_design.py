"""The shape of the code, as properties: every registered command is what it says, a run plans once, a local
run never touches the storage layer, the framework (not the stages) owns a unit's life, and the package's
imports have no cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from ettin_data.stage import Command, Stage
from ettin_data.stages import COMMANDS, command_for

PACKAGE = Path(__file__).resolve().parent.parent / "ettin_data"


def test_every_registered_command_is_its_class() -> None:
    names = [e.name for e in COMMANDS]
    assert len(set(names)) == len(names)
    for e in COMMANDS:
        cmd = e.load()
        assert isinstance(cmd, Command) and cmd.name == e.name and cmd.Config is e.Config, e.name
        assert command_for(e.Config.model_construct()).name == e.name
        if isinstance(cmd, Stage):  # a stage defines the three steps itself (units: one per task, or several)
            write = "units" if cmd.many_units else "process_unit"
            for step in ("plan", write, "finish"):
                assert getattr(type(cmd), step) is not getattr(Stage, step), (e.name, step)
        else:
            assert type(cmd).run is not Command.run, e.name
    assert {e.name for e in COMMANDS if not isinstance(e.load(), Stage)} == {"stats", "export", "index"}


def test_a_run_plans_once(tmp_path: Path, monkeypatch, token_dataset: Path) -> None:
    """The driver plans once and hands the plan to the log and to execution (it used to plan 3x per command)."""
    from ettin_data.cli import app
    from ettin_data.stages import chunk

    calls = []
    real = chunk.Chunk.plan
    monkeypatch.setattr(chunk.Chunk, "plan", lambda self, cfg: calls.append(cfg) or real(self, cfg))
    res = CliRunner().invoke(app, ["chunk", str(token_dataset), "-o", str(tmp_path / "c"), "-w", "1", "-q"])
    assert res.exit_code == 0, res.output
    assert len(calls) == 1
    log = next((tmp_path / "c" / ".ettin_logs").glob("chunk-*.jsonl")).read_text()
    assert log.count('"event": "unit"') == 5 and '"status": "done"' in log  # the log got the plan


def test_a_local_run_never_enters_storage_code(tmp_path: Path) -> None:
    code = f"""
import sys
from ettin_data import run, storage
from ettin_data.config import ConvertConfig
def boom(*a, **k):
    raise AssertionError("a local run reached the storage layer")
storage.store = storage.local_path = boom
s = run(ConvertConfig(inputs=["builtin:python-docs"], output={str(tmp_path / 'o')!r}, workers=1))
assert s["complete"] and "ettin_data.remote" not in sys.modules, sorted(sys.modules)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def _imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports (at module level, or lazily inside functions)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])  # the module's package
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("ettin_data"):
                out.add(mod)
                out.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("ettin_data"))
    return out


def test_no_import_cycle() -> None:
    modules = {}
    for p in PACKAGE.rglob("*.py"):
        rel = p.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = p
    # a module's own packages (``from . import x``) are being imported already: not an edge
    graph = {m: {i for i in _imports(p) if i in modules and i != m and not m.startswith(i + ".")}
             for m, p in modules.items()}

    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(n):], n]))
            if n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert "ettin_data.executors.ray" in graph and "ettin_data.executors.local" not in graph["ettin_data.executors.ray"]


def test_no_stage_module_handles_unit_folders_or_markers() -> None:
    """Making a unit folder atomic and marking it done is the framework's job (worker.py), never a stage's."""
    for p in sorted((PACKAGE / "stages").glob("*.py")) + [PACKAGE / "sampling.py"]:
        names = {n for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, (ast.Name, ast.Attribute))}
        used = {getattr(n, "id", None) or getattr(n, "attr", None) for n in names}
        assert not used & {"mark_done", "atomic_dir"}, (p.name, used & {"mark_done", "atomic_dir"})


def test_the_format_lives_in_the_mds_package() -> None:
    """Shard entries are read through the typed index (ShardEntry, FileInfo): no module outside ``mds/`` reads
    an index entry's ``raw_data``/``zip_data``."""
    leaks = [f"{p.relative_to(PACKAGE)}:{i}" for p in sorted(PACKAGE.rglob("*.py")) if "mds" not in p.parent.name
             for i, line in enumerate(p.read_text().splitlines(), 1) if "raw_data" in line or "zip_data" in line]
    assert leaks == []


def test_no_module_is_over_400_lines() -> None:
    """A module past ~400 lines is split by responsibility (the 90th percentile in datatrove and streaming)."""
    long = {str(p.relative_to(PACKAGE)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_one_of_each_shared_piece() -> None:
    """Each shared piece is written once: the file names a dataset holds (``dataset.py``), the writer of
    ``stats.json``/``token_decile.json`` (``tokenstats.py``), the redo of a unit a fast engine got wrong
    (``encoder.encode_exactly``), whether the hub answers (``hub.py``), whether a path is a URL (``storage.py``),
    and no executor reads ``ProcessPoolExecutor``'s private state."""
    from ettin_data import dataset

    names = {v for k, v in vars(dataset).items() if k.isupper() and isinstance(v, str) and k != "SPLITS"}
    literals, stats_writes, other = [], [], []
    for p in sorted(PACKAGE.rglob("*.py")):
        rel, text = str(p.relative_to(PACKAGE)), p.read_text()
        literals += [f"{rel}:{n.lineno} {n.value}" for n in ast.walk(ast.parse(text))
                     if isinstance(n, ast.Constant) and n.value in names and rel != "dataset.py"]
        for i, line in enumerate(text.splitlines(), 1):
            if "write_json_atomic(" in line and any(f in line for f in ("STATS_FILE", "DECILE_FILE")) \
                    and rel != "tokenstats.py":
                stats_writes.append(f"{rel}:{i}")
            if any(s in line for s in ("except Mismatch", "def _hub_reachable", "._processes", '"://" in')) \
                    and not line.lstrip().startswith("#"):
                other.append(f"{rel}:{i}: {line.strip()}")
    assert literals == [] and stats_writes == []
    allowed = {"encoder.py": "except Mismatch", "hub.py": '"://" in', "storage.py": '"://" in',
               "executors/ray.py": '"://" in'}
    assert [o for o in other if allowed.get(o.split(":")[0], "\0") not in o] == []
