"""A third-party store in a temporary package outside the repository passes the contract
suite the package ships, run as its author runs it: pytest in a child process, with only
the installed ``eightyeightpay`` (and the author's own files) importable."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from eightyeightpay.adapters.store_contract import StoreContract

HERE = Path(__file__).resolve().parent / "third_party"
REPOSITORY = Path(__file__).resolve().parents[2]


def test_a_third_party_store_passes_the_shipped_contract_suite(tmp_path: Path) -> None:
    package = tmp_path / "dict-token-store"
    (package / "tests").mkdir(parents=True)
    shutil.copy(HERE / "dict_token_store.py", package / "dict_token_store.py")
    shutil.copy(HERE / "contract_module.py", package / "tests" / "test_contract.py")
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    environment["PYTHONPATH"] = str(package)  # the author's module; not the repository
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
    cases = sum(name.startswith("test_") for name in dir(StoreContract)) + 1  # asyncio, trio
    assert passed is not None and int(passed.group(1)) == cases, result.stdout[-2000:]
    assert "failed" not in result.stdout and "skipped" not in result.stdout
    assert str(REPOSITORY) not in result.stdout  # nothing ran from the repository's tests
