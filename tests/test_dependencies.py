"""What the library imports is what a plain `pip install transformerkit` installs: every third-party
module imported anywhere in src/ (also lazily, inside a function, as matplotlib is) is a runtime
dependency in pyproject.toml, unless it is an optional bonus guarded by its ImportError."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:                     # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "transformerkit"
OPTIONAL = {"huggingface_hub"}   # hub ids are a bonus (DESIGN.md: nothing is fetched from a hub), ImportError handled


def imported_modules() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "transformerkit":
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def name(requirement: str) -> str:
        return re.split(r"[<>=!~\[;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    extras = {extra: {name(r) for r in reqs} for extra, reqs in project.get("optional-dependencies", {}).items()}
    return {name(r) for r in project["dependencies"]}, extras


def test_matplotlib_is_a_runtime_dependency():
    runtime, extras = declared()
    assert "matplotlib" in runtime                      # tkit viz works after a plain pip install
    assert "plot" not in extras                         # no extra that suggests pictures are optional


def test_every_imported_package_is_declared():
    runtime, _ = declared()
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module, files in imported_modules().items():
        if module in OPTIONAL:
            continue
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not names & runtime:
            missing[module] = sorted(files)
    assert not missing, f"imported in src/ but not in pyproject.toml's dependencies: {missing}"
