"""The package's layering rules (README, "Layout"), read off the source with ``ast``:

- core imports nothing from the rest of the package;
- nothing imports cli, and argparse is used only in cli;
- the module import graph (imports inside functions included) has no cycles.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "transformer_fam"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> list[str]:
    """Full names of the package modules an ``import`` statement brings in."""
    if node.level:
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        for _ in range(node.level - 1):
            package = package.rsplit(".", 1)[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    names = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
    return names or [base]


def imports_of(module: str) -> set[str]:
    path = MODULES[module]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found |= set(_resolve(module, path, node))
    return found


def own(names: set[str]) -> set[str]:
    return {n for n in names if n == "transformer_fam" or n.startswith("transformer_fam.")}


def test_the_resolver_sees_relative_and_function_level_imports():
    # a check of the checker: these edges exist in the source
    assert "transformer_fam.core.cache" in imports_of("transformer_fam.core.model")
    assert "transformer_fam.hf.smollm2" in imports_of("transformer_fam.hf.loading")
    assert "transformer_fam.training.trainer" in imports_of("transformer_fam.cli.train")  # inside run()


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("transformer_fam.core")))
def test_core_imports_only_core(module):
    outside = {n for n in own(imports_of(module)) if not n.startswith("transformer_fam.core")}
    assert not outside, f"{module} imports {sorted(outside)}"


def test_nothing_imports_cli_and_argparse_lives_in_cli():
    for module in MODULES:
        if module.startswith("transformer_fam.cli"):
            continue
        names = imports_of(module)
        assert not {n for n in own(names) if n.startswith("transformer_fam.cli")}, module
        assert "argparse" not in names, f"{module} uses argparse (command-line code belongs in cli/)"


def test_the_import_graph_has_no_cycles():
    graph = {m: {n for n in own(imports_of(m)) if n in MODULES and n != m} for m in MODULES}
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
