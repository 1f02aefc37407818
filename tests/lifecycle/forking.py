"""Running a function in a forked child, bounded in time, and reading back what it returned."""

from __future__ import annotations

import json
import os
import select
import signal
import time
import warnings
from collections.abc import Callable
from typing import Any


def in_child(body: Callable[[], Any], *, seconds: float = 20.0) -> Any:
    """Fork, run ``body()`` in the child, and return its JSON-able result (or raise its error).

    The child exits with ``os._exit`` (no cleanup of the parent's objects runs twice); one
    that has not answered within ``seconds`` is killed and the test fails.
    """
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns that forking a threaded process is risky
        warnings.simplefilter("ignore", DeprecationWarning)
        child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        try:
            answer = {"value": body()}
        except BaseException as error:  # the parent reports it
            answer = {"error": f"{type(error).__name__}: {error}"}
        with os.fdopen(write_end, "w") as out:
            out.write(json.dumps(answer))
        os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + seconds
    chunks: list[bytes] = []
    try:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([read_end], [], [], max(0.0, left))
            if not ready:
                os.kill(child, signal.SIGKILL)
                raise AssertionError(f"the child did not answer within {seconds} s")
            data = os.read(read_end, 65536)
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(read_end)
        os.waitpid(child, 0)
    answer = json.loads(b"".join(chunks) or b"{}")
    if "error" in answer:
        raise AssertionError(f"the child failed: {answer['error']}")
    return answer["value"]
