"""Every import points one way (docs/architecture.md, "Layers"):

    entry points (slipway.cli) → flows → tasks → targets → the spine (the rest of slipway) → serving

A module imports from its own layer or the ones below it, never above; ``serving`` imports nothing
else of the tree (it is copied into images); ``load_tests`` (run in Locust's process) imports only
the spine and ``serving``; a private module (``_name.py``) is imported only from its own package.
Imports inside functions and under ``TYPE_CHECKING`` count: they are dependencies all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

LAYERS = ["slipway.cli", "flows", "tasks", "targets", "slipway", "serving"]  # top first
PACKAGES = ("slipway", "flows", "tasks", "targets", "serving", "load_tests")


def layer(module: str) -> int:
    """The index of a module's layer: the longest entry of LAYERS it is, or is inside of."""
    matches = [i for i, name in enumerate(LAYERS) if module == name or module.startswith(name + ".")]
    return max(matches, key=lambda i: len(LAYERS[i]))


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, module imported) for every import of the tree's own packages in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{alias.name}" for alias in node.names]
            out += [(node.lineno, n if n.rpartition(".")[0] and _is_module(n) else base) for n in names]
    return [(line, name) for line, name in out if name.split(".")[0] in PACKAGES]


def _is_module(name: str) -> bool:
    return name in modules()


@pytest.fixture(scope="module")
def tree() -> dict[str, list[tuple[int, str]]]:
    return {module: imports(path, module) for module, path in modules().items()}


def test_every_import_points_down_or_sideways(tree: dict[str, list[tuple[int, str]]]) -> None:
    upward = [
        f"{modules()[m].relative_to(REPO)}:{line} imports {target} "
        f"({LAYERS[layer(target)]} is above {LAYERS[layer(m)]})"
        for m, found in tree.items()
        if not m.startswith("load_tests")
        for line, target in found
        if layer(target) < layer(m)
    ]
    assert not upward, "imports that run back up:\n" + "\n".join(upward)


def test_serving_and_load_tests_stay_apart(tree: dict[str, list[tuple[int, str]]]) -> None:
    bad = [
        f"{modules()[m].relative_to(REPO)}:{line} imports {target}"
        for m, found in tree.items()
        for line, target in found
        if (m.startswith("serving") and not target.startswith("serving"))
        or (m.startswith("load_tests") and layer(target) < LAYERS.index("slipway"))
    ]
    assert not bad, "serving imports only serving; load_tests only the spine and serving:\n" + "\n".join(bad)


def test_private_modules_are_imported_only_from_their_package(tree: dict[str, list[tuple[int, str]]]) -> None:
    bad = [
        f"{modules()[m].relative_to(REPO)}:{line} imports the private {target}"
        for m, found in tree.items()
        for line, target in found
        if any(part.startswith("_") and not part.startswith("__") for part in target.split("."))
        and not m.startswith(target.rpartition(".")[0] + ".")
        and m != target.rpartition(".")[0]
    ]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_imports_anywhere_in_a_file(tmp_path: Path) -> None:
    """Lazy and type-checking imports count, and relative ones resolve to their package."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tasks.gate import GateReport\n"
        "def f():\n    import flows.release\nfrom .base import Target\n"
    )
    found = {name for _, name in imports(probe, "targets.probe")}
    assert found == {"tasks.gate", "flows.release", "targets.base"}
    assert all(layer(name) < layer("targets.probe") for name in ("tasks.gate", "flows.release"))
