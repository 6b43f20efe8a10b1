"""The package's structure: imports only go down the layers, no circles between packages, small modules.

The layers follow the data path (assets → render → optimize → data → train → eval), with the
experiments built on them (search, reproduce, benchmark) on top and the command line above all.
A unit is a top-level module or package of ``dflowgen``; a unit may import units of its own layer
or below, never above.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dflowgen"
MAX_LINES = 400

LAYERS: list[set[str]] = [
    {"errors", "fields", "files", "devices", "seeding", "figures", "flow", "colour", "shapes", "image_limits", "bundled",
     "allocator"},
    {"assets", "weights", "losses", "models"},
    {"render", "proxies"},
    {"optimize"},
    {"data"},
    {"train"},
    {"evaluate"},
    {"recipes"},
    {"generate", "infer", "search", "reproduce", "benchmark"},
    {"cli", "__main__"},
]


def _layer(unit: str) -> int:
    return next(level for level, units in enumerate(LAYERS) if unit in units)


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def unit_imports(package: Path) -> dict[str, dict[str, str]]:
    """For every unit, the units it imports, each with one module that does it."""
    edges: dict[str, dict[str, str]] = defaultdict(dict)
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        home = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                base = home.split(".")[: len(home.split(".")) - node.level + 1] if node.level else []
                names = [".".join([*base, node.module] if node.module else base)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith(f"{package.name}.") and _unit(name) != _unit(module):
                    edges[_unit(module)].setdefault(_unit(name), module)
    return edges


def test_every_unit_has_a_layer():
    units = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir()
             if (path.suffix == ".py" or (path / "__init__.py").exists()) and path.name != "__init__.py"}
    unplaced = sorted(unit for unit in units if not any(unit in layer for layer in LAYERS))
    assert not unplaced, f"put these in a layer of {__name__}.LAYERS: {unplaced}"


def test_imports_only_go_down():
    upward = [f"{module} imports {target} (layer {_layer(target)} > {_layer(unit)})"
              for unit, targets in unit_imports(PACKAGE).items()
              for target, module in targets.items() if _layer(target) > _layer(unit)]
    assert not upward, "\n".join(upward)


def test_no_circles_between_units():
    edges = {unit: set(targets) for unit, targets in unit_imports(PACKAGE).items()}
    state: dict[str, str] = {}

    def visit(unit: str, path: list[str]) -> None:
        state[unit] = "open"
        for target in sorted(edges.get(unit, ())):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target] if target in path else [unit, target]
                pytest.fail("import circle: " + " → ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[unit] = "done"

    for unit in sorted(edges):
        if unit not in state:
            visit(unit, [unit])


def test_no_module_is_over_the_size_limit():
    long = [f"{path.relative_to(PACKAGE.parent)}: {count} lines" for path in sorted(PACKAGE.rglob("*.py"))
            if (count := len(path.read_text().splitlines())) > MAX_LINES]
    assert not long, "split these modules:\n" + "\n".join(long)


def test_the_checks_see_an_upward_import_and_a_circle(tmp_path, monkeypatch):
    fake = tmp_path / "dflowgen"
    (fake / "render").mkdir(parents=True)
    (fake / "render" / "__init__.py").write_text("from dflowgen.train import loop\n")
    (fake / "train").mkdir()
    (fake / "train" / "__init__.py").write_text("from dflowgen.render import draw\n")
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    with pytest.raises(AssertionError, match="render imports train"):
        test_imports_only_go_down()
    with pytest.raises(pytest.fail.Exception, match="import circle"):
        test_no_circles_between_units()
