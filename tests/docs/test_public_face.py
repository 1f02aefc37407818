"""Every docs example imports from ``eightyeightpay`` itself, and every name it imports is there.

The folders behind the package (``eightyeightpay.adapters``, ``eightyeightpay.plugins``, the
core's modules) are the maintainers' layout, not an API: an example that reaches into them
teaches users a path that may move. The exceptions are the hook markers and hook types of
``plugins.hookspecs`` (a plugin author's module) and the pytest plugin (which pytest loads
by module); the registry and the command line's entry point are on the face too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import eightyeightpay
from tests.docs.examples import README, Example, all_examples, blocks

ALLOWED = {
    "eightyeightpay.plugins.hookspecs": "hook implementations: hookimpl and the hook types",
    "eightyeightpay.adapters.pytest_plugin": "the pytest plugin, loaded by module",
}
"""Modules below the package an example may import from, and why."""

EXAMPLES = [*all_examples(), *blocks(README)]


def deep_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of each import of a module below ``eightyeightpay`` not in ALLOWED."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            modules = [node.module]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            below = module.startswith("eightyeightpay.") and module not in ALLOWED
            if below or module == "tests" or module.startswith("tests."):
                found.append((node.lineno, module))
    return sorted(found)


def face_names(tree: ast.Module) -> set[str]:
    """The names an example imports with ``from eightyeightpay import ...``."""
    return {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "eightyeightpay"
        for alias in node.names
    }


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.id for example in EXAMPLES])
def test_the_example_imports_only_from_the_package(example: Example) -> None:
    found = deep_imports(example.tree())
    assert not found, "\n".join(
        f"{example.path.name}:{line}: imports {module}; write `from eightyeightpay import ...`"
        " (add the name to the face in core/__init__.py if it is missing)"
        for line, module in found
    )


def test_every_name_the_docs_import_is_on_the_face() -> None:
    used = set().union(*(face_names(example.tree()) for example in EXAMPLES))
    assert len(used) > 30  # the examples do use the face
    missing = sorted(name for name in used if name not in eightyeightpay.__all__)
    assert not missing, f"not in eightyeightpay.__all__: {missing}"
    for name in sorted(used):
        assert getattr(eightyeightpay, name) is not None
        assert name in dir(eightyeightpay)


def test_a_deep_import_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nfrom eightyeightpay import TokenManager\n"
        "from eightyeightpay.plugins.hookspecs import hookimpl\n"
        "def f():\n    from eightyeightpay.plugins.memory import MemoryStore\n"
        "import eightyeightpay.machine\nfrom tests.servers import RedisServer\n```\n",
        encoding="utf-8",
    )
    (example,) = blocks(page)
    assert deep_imports(example.tree()) == [
        (5, "eightyeightpay.plugins.memory"),
        (6, "eightyeightpay.machine"),
        (7, "tests.servers"),
    ]
    assert face_names(example.tree()) == {"TokenManager"}
