"""The code's shape: no import cycles, and no package reaching into another package's private names.

Every import statement counts, including those inside functions: a cycle that is only broken by
importing late is still two modules that cannot be understood (or tested) apart. Imports for type
annotations only (under `if TYPE_CHECKING:`) do not run and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("janus_jax", "data_gen", "eval", "launch", "configs")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _package_of(module: str) -> str:
    path = MODULES[module]
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import statement of `module`."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    out = []
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = _package_of(module).split(".")
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                child = f"{base}.{alias.name}"
                out.append((child, None, node.lineno) if child in MODULES else (base, alias.name, node.lineno))
    return [(m, n, line) for m, n, line in out if m in MODULES]


def _runtime_nodes(tree: ast.AST):
    """Every node except the bodies of `if TYPE_CHECKING:` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            test = child.test if isinstance(child, ast.If) else None
            if test is not None and "TYPE_CHECKING" in ast.unparse(test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def test_no_import_cycles():
    graph = {m: sorted({target for target, _, _ in _imports(m)} - {m}) for m in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_names_across_packages():
    offenders = []
    for module in MODULES:
        for target, name, line in _imports(module):
            private = name is not None and name.startswith("_") and not name.startswith("__")
            if private and _package_of(target) != _package_of(module):
                offenders.append(f"{MODULES[module].relative_to(REPO)}:{line} imports {target}.{name}")
    assert not offenders, "\n".join(offenders)


def test_the_walk_sees_imports_inside_functions():
    imported = {target for target, _, _ in _imports("janus_jax.cli.train")}
    assert "janus_jax.train.trainer" in imported  # imported inside main()
