"""Every fenced ``python`` block of ``docs/*.md`` runs as its own test case, as a user runs it.

Each block runs in a child process of this Python whose working directory is a fresh
temporary directory and whose ``sys.path`` does not hold the repository: only the installed
``eightyeightpay`` (and the packages installed beside it) can be imported, not the
repository's ``tests`` package. The block runs in a fresh module registered in
``sys.modules`` (a plugin example registers itself as a hook module), compiled with the
Markdown file as its file name and padded so that its line numbers are the file's: a failure
points at the line of the block in the document. Warnings are errors, as in the test suite.
A block whose info string is exactly ``python no-run`` needs real 88Pay credentials or
network; it is compiled, not run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.examples import NO_RUN, ROOT, RUN, Example, all_examples, blocks

EXAMPLES = all_examples()

RUNNER = """
import sys, types
path, line, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
code = sys.stdin.read()
module = types.ModuleType(name)
module.__file__ = path
sys.modules[name] = module
exec(compile("\\n" * (line - 1) + code, path, "exec"), module.__dict__)
"""
"""Runs the block read from stdin; argv: the Markdown file, the block's first line, a name."""

TIMEOUT = 180.0
"""Seconds a block may run; the slowest (a fleet store under faults) takes a few."""


def outside_the_repository(tmp_path: Path) -> dict[str, str]:
    """The environment of a child that cannot import the repository's own modules."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment["PYTHONSAFEPATH"] = "1"  # the working directory is not put on sys.path either
    environment["HOME"] = environment.get("HOME", str(tmp_path))
    return environment


def run_block(example: Example, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run one block in a child process from ``tmp_path``, outside the repository."""
    name = f"docs_example_{example.path.stem}_{example.index}"
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", RUNNER, str(example.path), str(example.line), name],
        input=example.code,
        cwd=tmp_path,
        env=outside_the_repository(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.id for example in EXAMPLES])
def test_example(example: Example, tmp_path: Path) -> None:
    example.compiled()  # a syntax error fails here, with the page's line number
    if example.info == NO_RUN:
        # Needs real credentials or the network; compiling it still catches typos.
        return
    result = run_block(example, tmp_path)
    assert result.returncode == 0, f"{example.id} failed:\n{result.stdout}{result.stderr}"


def test_a_block_cannot_import_the_repository(tmp_path: Path) -> None:
    probe = Example(
        ROOT / "docs" / "probe.md",
        0,
        1,
        RUN,
        "import importlib.util, sys\n"
        "spec = importlib.util.find_spec('tests')\n"
        "print(spec.origin if spec else None)\n"
        "import eightyeightpay\n"
        "print(eightyeightpay.__file__)\n",
    )
    result = run_block(probe, tmp_path)
    assert result.returncode == 0, result.stderr
    tests_origin, package = result.stdout.splitlines()
    # No `tests` package of this repository (a stray one installed elsewhere is not ours).
    assert tests_origin == "None" or not tests_origin.startswith(str(ROOT)), tests_origin
    assert package.endswith("__init__.py")


def test_a_failing_block_fails_at_its_line_in_the_page(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# t\n\n```python\nx = 1\nassert x == 2\n```\n", encoding="utf-8")
    (example,) = blocks(page)
    result = run_block(example, tmp_path)
    assert result.returncode != 0
    assert f'File "{page}", line 5' in result.stderr


def test_the_pages_have_examples() -> None:
    pages = {example.path.name for example in EXAMPLES}
    for page in ("quickstart.md", "concepts.md", "errors.md", "plugins.md", "security.md"):
        assert page in pages, f"docs/{page} has no python example"


def test_blocks_are_found_with_their_lines(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n```python\nx = 1\n```\n\n````text\n```python\nnot code\n```\n````\n"
        "```python no-run\ny = 2\n```\n```py\nz\n```\n",
        encoding="utf-8",
    )
    found = blocks(page)
    assert [(b.index, b.line, b.info, b.code) for b in found] == [
        (0, 4, RUN, "x = 1\n"),
        (1, 13, NO_RUN, "y = 2\n"),
    ]
    assert found[0].compiled().co_filename == str(page)
