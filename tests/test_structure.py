"""The core's shape: dependencies point one way. No module of `runner/` imports the built-in
`plugins` package (built-ins import the core as a third party does), and the core's modules
import each other without cycles, counting imports inside functions (not those only for type
checkers, under `if TYPE_CHECKING:`)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def core_modules() -> dict[str, Path]:
    mods = {}
    for path in (ROOT / "runner").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def runtime_imports(tree: ast.AST) -> list[str]:
    """Modules an AST imports when it runs: `from a.b import c` counts a.b and a.b.c."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.extend(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append(child.module)
                found.extend(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(tree)
    return found


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    mods = core_modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    plugin_imports = []
    for name, path in mods.items():
        for target in runtime_imports(ast.parse(path.read_text(), str(path))):
            if target == "plugins" or target.startswith("plugins."):
                plugin_imports.append(f"{path.relative_to(ROOT)} imports {target}")
            if target in mods and target != name:
                graph[name].add(target)
    return graph, plugin_imports


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                on_stack.discard(w)
                comp.append(w)
            on_stack.discard(v)
            if comp:
                out.append(sorted([v, *comp]))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_core_never_imports_the_built_in_plugins() -> None:
    _, plugin_imports = import_graph()
    assert plugin_imports == []


def test_the_core_has_no_import_cycle() -> None:
    graph, _ = import_graph()
    assert len(graph) > 30 and sum(map(len, graph.values())) > 100  # the graph was really read
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    tree = ast.parse(
        "import runner.x\nfrom runner.y import z\nif TYPE_CHECKING:\n    import runner.hidden\n"
        "def f():\n    from plugins.methods import dann\n"
    )
    assert runtime_imports(tree) == ["runner.x", "runner.y", "runner.y.z", "plugins.methods", "plugins.methods.dann"]
