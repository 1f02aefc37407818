"""Serve the emulator from a process of its own, for the benchmarks that time the client.

``python -m tests.benchmarks.serve`` prints one JSON line (``url``, ``port``, ``ca_file``)
and serves HTTPS until its standard input closes. In a process of its own the emulator's
work (TLS, ES256 checks) runs beside the client instead of competing with it for the
client's GIL, as 88Pay's servers would.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from eightyeightpay.plugins.sandbox import RateLimit, Sandbox, SandboxServer

UNLIMITED = (RateLimit(10**9, 60.0),)
"""Limits no benchmark reaches: the emulator answers every call and every token request
(each client process of the load benchmark gets its own token)."""


@contextlib.contextmanager
def emulator_process(*, real_limits: bool = False) -> Iterator[dict[str, Any]]:
    """Start the emulator in a child process; yield its ``url``, ``port`` and ``ca_file``.

    On leaving, its standard input is closed and it must exit with status 0.

    ``real_limits``: 88Pay's 60 s tokens and 10/minute, 100/hour token limits (the
    stampede's), instead of hour-long tokens and no limits.
    """
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.benchmarks.serve",
            *(["--real-limits"] if real_limits else []),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdin is not None and child.stdout is not None
        try:
            yield json.loads(child.stdout.readline())
        finally:
            child.stdin.close()
            assert child.wait(timeout=30) == 0


def main() -> None:
    """Serve until standard input closes."""
    if "--real-limits" in sys.argv:
        sandbox = Sandbox()
    else:
        sandbox = Sandbox(token_lifetime=3600, token_limits=UNLIMITED, api_limits=UNLIMITED)
    with SandboxServer(sandbox, tls=True) as server:
        assert server.certificates is not None
        info = {"url": server.url, "port": server.port, "ca_file": str(server.certificates.ca_file)}
        print(json.dumps(info), flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
