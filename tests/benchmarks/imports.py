"""Import and construction cost in fresh interpreters: what a user writes, timed from inside.

Each sample is a fresh ``python -c`` that times its own statement with ``perf_counter``
(interpreter start-up excluded), interleaved with the other statements, median of the runs:

- ``from eightyeightpay import TokenManager`` (the import a user writes: the package face
  plus the lazily loaded manager) against ``import urllib3``;
- that import plus ``TokenManager(api_key, merchant_id)`` with the memory store (what a
  threaded application does at start-up) against ``import requests; requests.Session()``.

The modules the construction loaded are listed too: none of asyncio, h11, trio, redis or
pymemcache may be among them.

The package's bytecode is compiled first (:func:`compile_package`), as ``pip install``
does for a wheel: an editable install has none, and with ``PYTHONDONTWRITEBYTECODE`` set
(as on the shared machine) every sample compiled the package's sources again, while
``requests`` and ``urllib3`` loaded the bytecode pip wrote, which more than doubled our
side of the ratio.
"""

from __future__ import annotations

import compileall
import importlib.util
import json
import statistics
import subprocess
import sys

from .common import Figures, rotations

KEY, MERCHANT = "sk_test_sandbox_4f3a9c2e7b1d", "MCH-COL-TEST-12345"
STATEMENTS = {
    "from eightyeightpay import TokenManager": "from eightyeightpay import TokenManager",
    "import urllib3": "import urllib3",
    "TokenManager(...) with its import": (
        f"from eightyeightpay import TokenManager\nTokenManager({KEY!r}, {MERCHANT!r})"
    ),
    "requests.Session() with its import": "import requests\nrequests.Session()",
}
UNWANTED = ("asyncio", "h11", "trio", "redis", "pymemcache")


def compile_package() -> None:
    """Write the bytecode of every module of the package, as installing a wheel does."""
    for name in ("eightyeightpay", "eightyeightpay.adapters", "eightyeightpay.plugins"):
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.submodule_search_locations is not None
        for folder in spec.submodule_search_locations:
            compileall.compile_dir(folder, quiet=1)


def _sample(statement: str) -> tuple[float, list[str]]:
    code = (
        "import sys, time, json\n"
        "started = time.perf_counter()\n"
        f"exec({statement!r})\n"
        "took = time.perf_counter() - started\n"
        "print(json.dumps([took, sorted(sys.modules)]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    took, modules = json.loads(result.stdout)
    return float(took), list(modules)


def run(quick: bool) -> Figures:
    """Medians over interleaved fresh interpreters."""
    repeats = 7 if quick else 21
    compile_package()
    samples: dict[str, list[float]] = {name: [] for name in STATEMENTS}
    loaded: list[str] = []
    for order in rotations(list(STATEMENTS), repeats):
        for name in order:
            took, modules = _sample(STATEMENTS[name])
            samples[name].append(took)
            if name.startswith("TokenManager"):
                loaded = modules
    ms = {name: statistics.median(values) * 1000 for name, values in samples.items()}
    return {
        "ms": ms,
        "import_vs_urllib3": ms["from eightyeightpay import TokenManager"] / ms["import urllib3"],
        "construction_vs_requests_session": (
            ms["TokenManager(...) with its import"] / ms["requests.Session() with its import"]
        ),
        "unwanted_modules_loaded": sorted(
            name for name in loaded if name.split(".")[0] in UNWANTED
        ),
        "repeats": repeats,
    }
