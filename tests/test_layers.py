"""The layers of impl/ (impl/__init__.py), held by the imports: arrows point down only.

entry (impl.app, impl.asgi, impl.cli, impl.migrations)  ->  generated.routes, impl.mcp (the
contract's operations as HTTP routes and as MCP tools)  ->  resources (impl.tasks, impl.system:
one package per tag)  ->  impl.http  ->  impl.platform; the generated models and MCP tool
descriptions are leaves any layer may use. A resource uses no other resource, and within a resource only
its handlers speak HTTP (the rest raises domain errors, impl/platform/errors.py). Every import
counts, also those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRY = {"impl.app", "impl.asgi", "impl.cli", "impl.migrations"}
RESOURCES = {"impl.tasks", "impl.system", "impl.webhooks"}
RANK = {"entry": 5, "generated.routes": 4, "impl.mcp": 4, "resource": 3, "impl.http": 2,
        "impl.platform": 1, "generated.models": 0, "generated.mcp_tools": 0}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {
    _module_name(path): path
    for folder in ("impl", "generated")
    for path in sorted((ROOT / folder).rglob("*.py"))
    if "__pycache__" not in path.parts
}


def _layer(module: str) -> tuple[str, str]:
    """(layer, package) of a module of impl/ or generated/."""
    for prefix in ENTRY:
        if module == prefix or module.startswith(prefix + "."):
            return "entry", "entry"  # the entry points compose everything, each other too
    for prefix in RESOURCES:
        if module == prefix or module.startswith(prefix + "."):
            return "resource", prefix
    for prefix in ("impl.http", "impl.platform", "impl.mcp", "generated.routes",
                   "generated.models", "generated.mcp_tools"):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, prefix
    return "package", module  # impl/__init__.py, generated/__init__.py: docstrings only


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:  # relative, in generated/
            found.add("generated." + node.module)
    return {name for name in found if name.split(".")[0] in ("impl", "generated")}


def _known(name: str) -> str | None:
    """The module an imported name lives in (`from impl.x import y`: y may be a name in x)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def test_the_layers_are_found() -> None:
    layers = {_layer(module)[0] for module in MODULES}
    assert {"entry", "generated.routes", "impl.mcp", "resource", "impl.http", "impl.platform"} <= layers
    assert "impl.tasks.handlers" in MODULES and "impl.system.handlers" in MODULES


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    layer, package = _layer(module)
    if layer == "package":
        assert not _imports(MODULES[module]), "a package's __init__ holds its docstring only"
        return
    wrong = []
    for name in sorted(_imports(MODULES[module])):
        target = _known(name)
        if target is None or target in ("impl", "generated"):
            continue
        target_layer, target_package = _layer(target)
        if target_package == package:
            continue  # within one package (one resource, the http layer, the platform)
        if target_layer == "package" or RANK[target_layer] >= RANK[layer]:
            wrong.append(f"{name} ({target_layer})")
        elif layer == "resource" and target_layer == "impl.http" and not module.endswith(
            ".handlers"
        ):
            wrong.append(f"{name}: only a resource's handlers speak HTTP")
    assert not wrong, f"{module} ({layer}) imports upward or sideways: {wrong}"


def test_generated_calls_each_tag_s_handlers_module() -> None:
    """The regen visitor maps the contract's tag to impl/<tag>/handlers.py."""
    routes = _imports(MODULES["generated.routes"])
    assert {"impl.tasks.handlers", "impl.system.handlers"} <= routes


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("impl.http")))
def test_generic_http_modules_say_nothing_about_tasks(module: str) -> None:
    text = MODULES[module].read_text().lower()
    for name in ("task_api", "task-api", "task api"):  # the application's name is fine
        text = text.replace(name, "")
    assert "task" not in text, f"{module} mentions tasks"


TESTS = ROOT / "tests"


def test_tests_mirror_the_layout() -> None:
    """A folder of tests per package of impl/ (and contract/, bench/), helpers in support/, and
    nothing imported from conftest.py (it declares fixtures only)."""
    packages = {path.name for path in (ROOT / "impl").iterdir() if (path / "__init__.py").exists()}
    folders = {path.name for path in TESTS.iterdir() if (path / "__init__.py").exists()}
    assert packages - {"migrations"} <= folders
    assert folders <= packages | {"contract", "bench", "support"}
    for path in TESTS.rglob("*.py"):
        text = path.read_text()
        assert "from tests" + ".conftest" not in text, f"{path} imports from conftest.py"
        if path.parent == TESTS:
            assert path.name in ("__init__.py", "conftest.py", "test_layers.py"), path
