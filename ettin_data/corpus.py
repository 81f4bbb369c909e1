"""The built-in default corpus: real English documentation that ships with every Python, no download.

``python_docs()`` yields a few hundred documents of varied length: the language reference topics of
``pydoc_data.topics`` and, per standard-library module, its docstrings (read with ``ast``, nothing is
imported). The order and content are deterministic for a given Python version.
"""

from __future__ import annotations

import ast
import sysconfig
from collections.abc import Iterator
from pathlib import Path

__all__ = ["python_docs", "MIN_CHARS"]

MIN_CHARS = 200


def _module_docs(path: Path) -> str:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return ""
    parts = []
    doc = ast.get_docstring(tree)
    if doc:
        parts.append(doc)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
            d = ast.get_docstring(node)
            if d:
                parts.append(f"{node.name}\n\n{d}")
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, ast.FunctionDef) and not sub.name.startswith("_"):
                        d = ast.get_docstring(sub)
                        if d:
                            parts.append(f"{node.name}.{sub.name}\n\n{d}")
    return "\n\n".join(parts)


def python_docs() -> Iterator[dict[str, str]]:
    """Yield ``{"id", "text", "source"}`` documents."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        text = topics[name].strip()
        if len(text) >= MIN_CHARS:
            yield {"id": f"topic/{name}", "text": text, "source": "pydoc_topics"}
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/__init__.py")):
        rel = path.relative_to(stdlib).as_posix()
        if rel.startswith(("test", "idlelib", "lib2to3", "turtledemo", "site-packages")):
            continue
        text = _module_docs(path).strip()
        if len(text) >= MIN_CHARS:
            yield {"id": f"stdlib/{rel}", "text": text, "source": "stdlib_docstrings"}
