"""The store that docs/store-plugin.md builds passes the contract suite the package ships,
run as its author runs it: the page's ``dict_token_store.py`` and its test module are
written into a temporary package outside the repository, and pytest runs there in a child
process with only the installed ``eightyeightpay`` (and the author's own files) importable."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

from eightyeightpay.adapters.store_contract import StoreContract
from tests.docs.examples import DOCS, NO_RUN, RUN, blocks

REPOSITORY = Path(__file__).resolve().parents[2]
PAGE = DOCS / "store-plugin.md"
MODULE_MARK = re.compile(r"^# -+ (?P<name>.+)$", re.MULTILINE)
"""The comment lines that divide the tutorial's block: a file's name, or what comes next."""


def tutorial_module() -> str:
    """``dict_token_store.py`` as the tutorial writes it: its block up to the next mark."""
    for example in blocks(PAGE):
        marks = list(MODULE_MARK.finditer(example.code))
        if example.info == RUN and marks and marks[0].group("name") == "dict_token_store.py":
            end = marks[1].start() if len(marks) > 1 else len(example.code)
            return example.code[marks[0].end() : end]
    raise AssertionError(f"{PAGE.name} has no block that starts dict_token_store.py")


def tutorial_tests() -> str:
    """The test module the page gives the store's author."""
    found = [
        example.code
        for example in blocks(PAGE)
        if example.info == NO_RUN and "(StoreContract)" in example.code
    ]
    assert len(found) == 1, f"{PAGE.name} should have one StoreContract test module"
    return found[0]


def contract_cases() -> int:
    """How many cases the suite runs: each test, once per parametrization."""
    cases = 0
    for name in dir(StoreContract):
        if name.startswith("test_"):
            marks = getattr(getattr(StoreContract, name), "pytestmark", [])
            sizes = [len(mark.args[1]) for mark in marks if mark.name == "parametrize"]
            cases += math.prod(sizes)
    return cases


def test_the_tutorial_store_passes_the_shipped_contract_suite(tmp_path: Path) -> None:
    package = tmp_path / "dict-token-store"
    (package / "tests").mkdir(parents=True)
    (package / "dict_token_store.py").write_text(tutorial_module(), encoding="utf-8")
    (package / "tests" / "test_contract.py").write_text(tutorial_tests(), encoding="utf-8")
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    environment["PYTHONPATH"] = str(package)  # the author's module; not the repository
    environment.pop("EIGHTY_EIGHT_PAY_STORE_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=package,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed is not None and int(passed.group(1)) == contract_cases(), result.stdout[-2000:]
    assert "failed" not in result.stdout and "skipped" not in result.stdout
    assert str(REPOSITORY) not in result.stdout  # nothing ran from the repository's tests
