"""The documentation builds, as ``.ci/docs`` builds it, without a single warning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_docs_build_without_warnings(tmp_path: Path) -> None:
    # The same command as .ci/docs, into a temporary directory.
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-b", "html"]
    result = subprocess.run(
        [*command, "-d", str(tmp_path / "doctrees"), "docs", str(tmp_path / "html")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    assert (tmp_path / "html" / "reference.html").is_file()


def test_the_ci_script_runs_the_same_build() -> None:
    script = (ROOT / ".ci" / "docs").read_text(encoding="utf-8")
    assert "python -m sphinx -W --keep-going -n -b html docs docs/_build/html" in script
