"""The floors run one way: a module imports only from its own package or the floors below, and no
import cycle exists. Read from the source (every import statement, function-level ones too), so
a lazy upward import is caught as well as a top-level one."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "xpcnn"

# Lowest first. A group is a top-level module or subpackage of xpcnn; "" is the package itself.
FLOORS = [
    ["errors", "version"],
    ["backend", "init", "_allocator", "fileformat"],
    ["_validate"],
    ["functional", "testing", "notebook", "plot"],
    ["layers"],
    ["optim"],
    ["checkpoint", "jit", "datasets"],
    ["callbacks"],
    ["training"],
    ["model"],
    ["saving", "interop", "zoo"],
    ["export"],
    ["distributed"],
    ["dask", "sklearn"],
    ["cli_train"],
    ["cli"],
    ["__main__"],
    [""],
]
FLOOR = {group: level for level, groups in enumerate(FLOORS) for group in groups}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def group(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def imports(module: str) -> set[str]:
    """The xpcnn modules ``module`` imports (a name imported from a package counts as its submodule)."""
    path = MODULES[module]
    here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "xpcnn")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "xpcnn":
                target = node.module
            else:
                continue
            found.update(f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names)
    return found - {module}


GRAPH = {module: imports(module) for module in MODULES}


def test_every_module_has_a_floor():
    assert not sorted({group(m) for m in MODULES} - set(FLOOR))


def test_no_module_imports_from_a_floor_above_or_beside_it():
    wrong = [f"{m} (floor {FLOOR[group(m)]}) imports {d} (floor {FLOOR[group(d)]})"
             for m, deps in GRAPH.items() for d in deps
             if group(d) != group(m) and FLOOR[group(d)] >= FLOOR[group(m)]]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    state: dict[str, int] = {}

    def visit(module, trail):
        if state.get(module) == 1:
            raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(module):] + [module]))
        if state.get(module) == 2:
            return
        state[module] = 1
        for dep in sorted(GRAPH[module]):
            if dep != "xpcnn":  # the package's own __init__ is the top floor
                visit(dep, trail + [module])
        state[module] = 2

    for module in sorted(MODULES):
        visit(module, [])


def test_the_check_catches_an_upward_import(tmp_path):
    """The rule is live: a layer module importing training would be reported."""
    assert FLOOR["layers"] < FLOOR["training"]
    assert any(group(d) == "training" for d in GRAPH["xpcnn.model"])  # the model sits above training
