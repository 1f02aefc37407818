"""``pip install '.[docs]'`` is enough to build the docs: autodoc imports every documented
module, so whatever a module of the package imports when it is loaded must come with the
``docs`` extra (or be a base dependency). Proven once by building in a fresh venv with only
that extra; this test keeps it true as modules gain imports.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ("core", "plugins", "adapters")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def docs_closure() -> set[str]:
    """The distributions ``eightyeightpay[docs]`` installs directly, extras followed."""
    requirements = [Requirement(text) for text in metadata.requires("eightyeightpay") or []]
    extras: set[str] = {"docs"}
    names: set[str] = set()
    while True:
        before = (len(extras), len(names))
        for requirement in requirements:
            marker = requirement.marker
            wanted = marker is None or any(marker.evaluate({"extra": extra}) for extra in extras)
            if not wanted:
                continue
            if normalized(requirement.name) == "eightyeightpay":
                extras |= requirement.extras
            else:
                names.add(normalized(requirement.name))
        if (len(extras), len(names)) == before:
            return names


def imported_when_loaded() -> dict[str, list[str]]:
    """Third-party top-level modules imported at module level, by the files importing them."""
    found: dict[str, list[str]] = {}
    for directory in PACKAGE_DIRS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue  # imports inside functions or TYPE_CHECKING blocks load lazily
                for module in modules:
                    top = module.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in (
                        "eightyeightpay",
                        "__future__",
                    ):
                        found.setdefault(top, []).append(str(path.relative_to(ROOT)))
    return found


def test_the_docs_extra_brings_what_the_documented_modules_import() -> None:
    closure = docs_closure()
    assert {"sphinx", "myst-parser", "pytest", "httpx", "requests"} <= closure
    providers = metadata.packages_distributions()
    imported = imported_when_loaded()
    assert {"attrs", "pluggy", "httpx", "pytest"} <= set(imported)  # the scan sees imports
    missing = {
        module: files
        for module, files in imported.items()
        if not {normalized(name) for name in providers.get(module, [])} & closure
    }
    assert not missing, f"add to the docs extra in pyproject.toml what provides: {missing}"
