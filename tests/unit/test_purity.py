"""The core is sans-IO: importing the package loads no network, TLS, loop or thread code."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

CORE = pathlib.Path(__file__).parents[2] / "core"
NETWORK_AND_CONCURRENCY = {
    "urllib3",
    "h11",
    "threading",
    "socket",
    "ssl",
    "asyncio",
    "trio",
    "select",
    "selectors",
    "redis",
}
# What core sources may not import at all (os and time are always loaded by the interpreter,
# so only the sources can be checked for them).
FORBIDDEN = NETWORK_AND_CONCURRENCY | {"logging", "subprocess", "time", "random", "os"}

PROBE = """
import builtins, sys, json
forbidden = set(sys.argv[1].split(","))
importers = {}
real = builtins.__import__
def spy(name, globals=None, *args, **kwargs):
    top = name.split(".")[0]
    if top in forbidden and top not in sys.modules:
        importers.setdefault(top, (globals or {}).get("__name__", "?"))
    return real(name, globals, *args, **kwargs)
builtins.__import__ = spy
import eightyeightpay
loaded = sorted(m for m in forbidden if m in sys.modules)
print(json.dumps({"loaded": loaded, "importers": importers}))
"""


def test_importing_the_package_loads_no_io_modules() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(sorted(NETWORK_AND_CONCURRENCY))],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    import json

    report = json.loads(out)
    # attrs and cattrs (required dependencies) import threading for their own caches; no
    # module of this library does, and nothing else on the list is loaded at all.
    assert set(report["loaded"]) <= {"threading"}, report
    for module, importer in report["importers"].items():
        assert not importer.startswith("eightyeightpay"), (module, importer)
        assert importer.split(".")[0] in {"attr", "attrs", "cattrs", "cattr"}, (module, importer)


def _runtime_imports(tree: ast.Module) -> list[str]:
    """Modules a source imports when it runs (imports under ``if TYPE_CHECKING:`` are types)."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING"
        ):
            for statement in node.orelse:
                visit(statement)
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def test_core_sources_import_nothing_that_does_io() -> None:
    for path in CORE.glob("*.py"):
        for name in _runtime_imports(ast.parse(path.read_text())):
            assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_type_only_imports_are_not_counted_as_imports() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ssl\nimport os\n"
    )
    assert _runtime_imports(tree) == ["typing", "os"]
