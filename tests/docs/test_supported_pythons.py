"""The supported Pythons are said once, in pyproject.toml, and CI tests each one it finds."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def versions() -> list[tuple[int, int]]:
    """The ``Programming Language :: Python :: 3.X`` classifiers, as (3, X)."""
    found = []
    for classifier in PROJECT["classifiers"]:
        match = re.fullmatch(r"Programming Language :: Python :: 3\.(\d+)", classifier)
        if match:
            found.append((3, int(match.group(1))))
    return found


def test_the_classifiers_start_at_requires_python_and_leave_no_gap() -> None:
    match = re.fullmatch(r">=3\.(\d+)", PROJECT["requires-python"])
    assert match, PROJECT["requires-python"]
    listed = versions()
    assert listed[0] == (3, int(match.group(1)))
    assert listed == [(3, minor) for minor in range(listed[0][1], listed[-1][1] + 1)]


def test_this_python_is_a_supported_one() -> None:
    assert sys.version_info[:2] in versions()


def test_ci_runs_the_other_pythons_after_the_whole_suite() -> None:
    run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert run.index('bash -c "$test_command"') < run.index('bash .ci/pythons "$tested"')
    pythons = (ROOT / ".ci" / "pythons").read_text(encoding="utf-8")
    assert "tests/unit tests/adapters tests/parity tests/layers" in pythons
    assert '"classifiers"' in pythons  # the versions come from pyproject.toml, not a copy
