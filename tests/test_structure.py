"""The core's shape: dependencies point one way. No module of `runner/` imports the built-in
`plugins` package (built-ins import the core as a third party does, through its public modules
alone), the core's modules import each other without cycles, and each imports only its own
layer and those below it: kernel < toolkits (runner.adapt, runner.generate) < run machinery <
commands. Imports inside functions count, and so do those only for type checkers (under
`if TYPE_CHECKING:`): a type is a dependency too, and the public packages' lazy exports are
imported from there at run time. Every `hw3.*` tag and param name is spelled in runner/record.py alone."""

from __future__ import annotations

import ast
import re
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


def _imports(tree: ast.AST, skip_type_checking: bool = False) -> list[ast.Import | ast.ImportFrom]:
    """Every absolute import statement in a tree, those inside functions and under
    `if TYPE_CHECKING:` too (unless `skip_type_checking`)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if skip_type_checking and isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import) or (isinstance(child, ast.ImportFrom) and child.level == 0):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def spelled_imports(tree: ast.AST) -> list[str]:
    """The modules an AST names in its imports: `from a.b import c` counts a.b and a.b.c."""
    found: list[str] = []
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif node.module:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def facade_exports() -> dict[str, dict[str, str]]:
    """For each package of the core, where each name its `__init__` imports comes from. A public
    package re-exports lazily (runner/lazy.py reads the imports under `if TYPE_CHECKING:` and
    imports a name's module when it is first asked for), so `from runner.adapt import Outputs`
    depends on the module that defines `Outputs`, not on everything the package exports."""
    out: dict[str, dict[str, str]] = {}
    for name, path in core_modules().items():
        if path.name == "__init__.py":
            tree = ast.parse(path.read_text(), str(path))
            out[name] = {
                alias.asname or alias.name: node.module
                for node in _imports(tree)
                if isinstance(node, ast.ImportFrom) and node.module
                for alias in node.names
            }
    return out


def module_imports(name: str, tree: ast.AST, mods: dict[str, Path], facades: dict[str, dict[str, str]]) -> set[str]:
    """The core modules a module depends on, type-only imports included; names taken from a
    package resolve to the module that defines them. A package's own lazy re-exports are not
    dependencies of the package (they are its importers')."""
    found: set[str] = set()
    for node in _imports(tree, skip_type_checking=name in facades):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        package = node.module or ""
        for alias in node.names:
            submodule = f"{package}.{alias.name}"
            if submodule in mods:
                found.add(submodule)
            else:
                found.add(facades.get(package, {}).get(alias.name, package))
    return {m for m in found if m in mods and m != name} | {m for m in found if m.split(".")[0] == "plugins"}


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    mods, facades = core_modules(), facade_exports()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    plugin_imports = []
    for name, path in mods.items():
        for target in sorted(module_imports(name, ast.parse(path.read_text(), str(path)), mods, facades)):
            if target.split(".")[0] == "plugins":
                plugin_imports.append(f"{path.relative_to(ROOT)} imports {target}")
            else:
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


# The layers, lowest first; a module not named here is kernel. Each may import its own and lower ones.
RUN_MACHINERY = {"runner.runs"}
COMMANDS = {"runner.commands", "runner.testing", "runner.__main__"}
TOOLKITS = {"runner.adapt", "runner.generate"}
LAYERS = ("kernel", "toolkit", "run", "commands")
# What built-in plugins (and the docs' third parties) may import of the core.
PUBLIC = {
    "runner", "runner.adapt", "runner.generate", "runner.data", "runner.figures", "runner.record", "runner.testing",
}  # fmt: skip


def layer_of(module: str) -> str:
    def within(names: set[str]) -> bool:
        return any(module == n or module.startswith(n + ".") for n in names)

    if within(COMMANDS):
        return "commands"
    if within(RUN_MACHINERY):
        return "run"
    return "toolkit" if within(TOOLKITS) else "kernel"


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    rank = {name: i for i, name in enumerate(LAYERS)}
    return sorted(
        f"{m} ({layer_of(m)}) imports {t} ({layer_of(t)})"
        for m, targets in graph.items()
        for t in targets
        if rank[layer_of(t)] > rank[layer_of(m)]
    )


def non_public_imports(root: Path) -> list[str]:
    """Imports of core modules outside `PUBLIC` in the Python files under `root`."""
    mods = core_modules()
    found = []
    for path in sorted(root.rglob("*.py")):
        for target in spelled_imports(ast.parse(path.read_text(), str(path))):
            if target in mods and target not in PUBLIC and target.rsplit(".", 1)[0] not in PUBLIC - {"runner"}:
                found.append(f"{path.relative_to(ROOT)} imports {target}")
    return found


def test_each_layer_imports_only_itself_and_the_layers_below() -> None:
    graph, _ = import_graph()
    assert {layer_of(m) for m in graph} == set(LAYERS)  # every layer was found
    assert layer_violations(graph) == []


def test_built_in_plugins_import_only_the_public_modules() -> None:
    assert non_public_imports(ROOT / "plugins") == []


def test_the_layer_check_catches_a_toolkit_above_its_station() -> None:
    graph = {
        "runner.adapt.features": {"runner.runs.execute", "runner.config"},
        "runner.runs.execute": {"runner.commands.cli"},
    }
    assert layer_violations({**{m: set() for m in ("runner.config", "runner.commands.cli")}, **graph}) == [
        "runner.adapt.features (toolkit) imports runner.runs.execute (run)",
        "runner.runs.execute (run) imports runner.commands.cli (commands)",
    ]


# hw3.* names that are not MLflow's, each where its reader is: a model format's kind (written in
# weights/spec.json) on its network class, and the attributes of an Optuna study and its trials.
NOT_MLFLOW_NAMES = {
    "runner/adapt/networks.py": "KIND",
    "runner/generate/networks.py": "KIND",
    "runner/runs/tune/study.py": "ATTR_",
}


def tag_names_outside_the_schema() -> list[str]:
    """String constants shaped like an hw3 tag or param name (`hw3.row`, `hw3.grid.lr`) anywhere
    in the core, the built-in plugins or the bench scripts but runner/record.py (less the
    `NOT_MLFLOW_NAMES`: constants assigned to names of that start in that file)."""
    found = []
    for folder in ("runner", "plugins", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "runner" / "record.py":
                continue
            tree = ast.parse(path.read_text(), str(path))
            start = NOT_MLFLOW_NAMES.get(path.relative_to(ROOT).as_posix())
            allowed = {
                id(node.value)
                for node in ast.walk(tree)
                if start and isinstance(node, ast.Assign)
                for target in node.targets
                if isinstance(target, ast.Name) and target.id.startswith(start)
            }
            for node in ast.walk(tree):
                if id(node) in allowed:
                    continue
                text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""
                if re.fullmatch(r"hw3\.[a-z_.]+", text) or text.startswith("mlflow.parentRunId"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    return found


def test_no_tag_or_param_name_is_spelled_outside_the_schema() -> None:
    assert tag_names_outside_the_schema() == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    tree = ast.parse(
        "import runner.x\nfrom runner.y import z\nif TYPE_CHECKING:\n    import runner.hidden\n"
        "def f():\n    from plugins.methods import dann\n"
    )
    assert spelled_imports(tree) == [
        "runner.x", "runner.y", "runner.y.z", "runner.hidden", "plugins.methods", "plugins.methods.dann",
    ]  # fmt: skip


def test_a_type_only_import_that_breaks_a_layer_rule_is_caught() -> None:
    mods = core_modules()
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from runner.adapt import AdaptMethod\n")
    found = module_imports("runner.validator", tree, mods, facade_exports())
    assert found == {"runner.adapt.method"}  # through the package's lazy export, to the defining module
    graph = {m: set() for m in mods} | {"runner.validator": found}
    assert layer_violations(graph) == ["runner.validator (kernel) imports runner.adapt.method (toolkit)"]
    # ... and a package's own lazy re-exports are not its dependencies
    init = mods["runner"]
    assert "runner.adapt" not in module_imports("runner", ast.parse(init.read_text()), mods, facade_exports())
