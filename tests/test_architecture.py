"""The shape of `app/`: imports go one way, and shared facts live in leaf modules."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

from tests.conftest import REPO

APP = REPO / "app"
# Imports inside functions, each for a reason other than dodging a cycle.
DEFERRED_IMPORTS = {
    # TensorFlow is ~0.5 GB of memory that a process serving through LiteRT never pays for.
    ("app.runtimes", "app.tensorflow_runtime"),
}
LEAF_MODULES = {"app.errors", "app.model_format", "app.compile_cache"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def app_imports(tree: ast.AST) -> list[tuple[str, ast.AST]]:
    """(imported app module, the import node) for every import of `app.*`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node) for alias in node.names if alias.name.startswith("app")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("app"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                is_module = (APP.parent / Path(*submodule.split("."))).with_suffix(".py").exists()
                found.append((submodule if is_module else node.module, node))
    return found


def parse_app() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text()) for path in APP.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    return {
        name: {imported for imported, _ in app_imports(tree) if imported != "app"} - {name}
        for name, tree in parse_app().items()
    }


def test_the_import_graph_has_no_cycle():
    try:
        order = list(TopologicalSorter(import_graph()).static_order())
    except CycleError as error:
        raise AssertionError(f"import cycle: {' -> '.join(error.args[1])}") from None
    assert "app.main" in order


def test_no_import_hides_in_a_function_or_behind_type_checking():
    for name, tree in parse_app().items():
        module_level = {id(node) for node in tree.body}
        type_checking_blocks = [
            node
            for node in tree.body
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        ]
        for block in type_checking_blocks:
            assert not app_imports(block), f"{name} imports app modules under TYPE_CHECKING"
        for imported, node in app_imports(tree):
            if id(node) not in module_level:
                assert (name, imported) in DEFERRED_IMPORTS, f"{name} imports {imported} late"


def test_shared_facts_live_in_leaf_modules():
    graph = import_graph()
    for leaf in LEAF_MODULES:
        assert graph[leaf] == set(), f"{leaf} imports {graph[leaf]}"


def test_routes_do_not_reach_past_the_registry():
    for name, tree in parse_app().items():
        if name.startswith("app.routes"):
            source = ast.unparse(tree)
            # Facts of the model format are fine; finding or loading versions is the registry's.
            for forbidden in ("iterdir", "glob(", "read_metadata", "load_model", "app.runtimes"):
                assert forbidden not in source, f"{name} uses {forbidden}"
