"""The package keeps its rooms: small modules in subpackages, no import cycle, and a top level a
newcomer can read at a glance."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lorad"
MODULE_LINES, FUNCTION_LINES, CLASS_LINES = 400, 60, 250
TOP_LEVEL_MODULES = 12  # about: the rest lives in subpackages


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The lorad modules `name` imports, at its top or inside a function."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {target for target in targets if target in known and target != name}
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert cycles(graph) == []


def test_the_cycle_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("def f():\n    from lorad import b\n")
    known = {"lorad.a": tmp_path / "a.py", "lorad.b": tmp_path / "b.py"}
    (tmp_path / "b.py").write_text("from lorad import a\n")
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert cycles(graph) == [["lorad.a", "lorad.b"]]


def test_no_module_function_or_class_outgrows_its_room() -> None:
    too_big = []
    for name, path in sorted(modules().items()):
        text = path.read_text()
        if text.count("\n") > MODULE_LINES:
            too_big.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                limit = CLASS_LINES if isinstance(node, ast.ClassDef) else FUNCTION_LINES
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    too_big.append(f"{name}.{node.name}: {length} lines (limit {limit})")
    assert too_big == []


def test_the_top_level_holds_only_a_few_modules() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= TOP_LEVEL_MODULES, top
