"""Check that the package's modules import each other without a cycle: ``python scripts/check_imports.py``.

Every ``import`` of a ``deeplearning_tutorial`` module counts, at module level or
inside a function, except those under ``if TYPE_CHECKING:`` (never run) and
under ``if __name__ == "__main__":`` (run only when the module is the program,
as ``python -m deeplearning_tutorial.mlp``).  ``from package import name``
counts as an import of ``package.name`` where that is a module, else of
``package``.  Prints each cycle and exits with status 1 if there is one.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "deeplearning_tutorial"
ROOT = Path(__file__).resolve().parent.parent


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """The package's modules, by dotted name (a package by its ``__init__``)."""
    names = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _skipped(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``__name__ == "__main__"``: blocks whose imports do not count."""
    if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
        return True
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators))


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _skipped(child.test):
            yield from (i for n in child.orelse for i in _imports_of(n))
            continue
        yield from _imports_of(child)


def _imports_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    else:
        yield from _imports(node)


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` (its source at ``path``) imports."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative: from the module's own package upwards
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        found.update(target for target in targets if target in modules and target != name)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Each module of the package and the package's modules it imports."""
    modules = module_names(root)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    found = cycles(import_graph())
    for component in found:
        print(f"import cycle among: {', '.join(component)}", file=sys.stderr)
    if not found:
        print(f"no import cycle among the {len(module_names())} modules of {PACKAGE}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
