"""The layers run one way (``adapters -> plugins -> core``), checked by import-linter.

The package installs from three folders (setuptools ``package-dir``), which import-linter
cannot follow from an editable install, so each test lays the sources out as they install,
with symbolic links, and runs ``lint-imports`` over that tree with the contract kept in
``pyproject.toml``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[2]
PYPROJECT = ROOT / "pyproject.toml"


def lay_out(tree: pathlib.Path) -> pathlib.Path:
    """Link every source file into ``tree/eightyeightpay`` as the wheel would place it."""
    package = tree / "eightyeightpay"
    for source, target in ((ROOT / "core", package),):
        target.mkdir(parents=True)
        for entry in source.glob("*.py"):
            (target / entry.name).symlink_to(entry)
    for folder in ("adapters", "plugins"):
        for entry in (ROOT / folder).rglob("*.py"):
            target = package / folder / entry.relative_to(ROOT / folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(entry)
    return package


def lint_imports(tree: pathlib.Path) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("lint-imports", path=str(pathlib.Path(sys.executable).parent))
    assert executable is not None, "import-linter is a test dependency: pip install -e '.[test]'"
    return subprocess.run(
        [executable, "--config", str(PYPROJECT), "--no-cache"],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_layers_contract_holds(tmp_path: pathlib.Path) -> None:
    lay_out(tmp_path)
    result = lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_the_contract_is_live_a_plugin_importing_an_adapter_breaks_it(
    tmp_path: pathlib.Path,
) -> None:
    package = lay_out(tmp_path)
    (package / "plugins" / "violation.py").write_text(
        "from eightyeightpay.adapters.sync import TokenManager\n"
    )
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "eightyeightpay.plugins.violation -> eightyeightpay.adapters.sync" in result.stdout


def test_a_new_core_module_left_out_of_the_contract_breaks_it(tmp_path: pathlib.Path) -> None:
    package = lay_out(tmp_path)
    (package / "unlisted.py").write_text("X = 1\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "unlisted" in result.stdout
