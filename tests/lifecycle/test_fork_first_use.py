"""A fork never copies one of the library's first uses halfway (an import, a trust store).

A thread halfway through an import holds that module's import lock, and a child forked then
waits on it for ever at its own first import of the module. The library's lazy first uses
(cattrs at the first token, urllib3 at the first connection, a TLS context) run under a lock
that ``os.fork()`` takes first; a fresh reviewer had children of a process whose threads
were getting its first token hang in about 1 fork in 10.
"""

from __future__ import annotations

import builtins
import importlib
import logging
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from eightyeightpay import DEFAULT_MERCHANT_ID
from eightyeightpay.plugins import tls
from eightyeightpay.plugins.process import first_use
from tests.conftest import InProcess
from tests.lifecycle.forking import in_child


def test_a_fork_waits_for_an_import_under_way_and_the_child_can_import_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, gate = threading.Event(), threading.Event()
    monkeypatch.setattr(builtins, "_eightyeightpay_test_gate", (entered, gate), raising=False)
    (tmp_path / "slow_to_import.py").write_text(
        "import builtins\n"
        "entered, gate = builtins._eightyeightpay_test_gate\n"
        "entered.set()\n"
        "gate.wait(10)\n"
        "VALUE = 'imported'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    loader = threading.Thread(
        target=first_use, args=(lambda: importlib.import_module("slow_to_import"),)
    )
    loader.start()
    assert entered.wait(10)  # the loader holds the module's import lock now
    threading.Timer(0.2, gate.set).start()  # it finishes while the fork below waits

    def child() -> Any:
        finished_before_the_fork = gate.is_set()
        module = importlib.import_module("slow_to_import")  # hangs if its lock was copied held
        return [finished_before_the_fork, module.VALUE, first_use(lambda: "free")]

    try:
        assert in_child(child, seconds=10) == [True, "imported", "free"]
    finally:
        gate.set()
        loader.join(10)
        sys.modules.pop("slow_to_import", None)


def test_a_child_makes_its_own_tls_contexts() -> None:
    trust = tls.trust_key(None)
    parents = tls.shared_tls_context(trust)
    assert tls.shared_tls_context(trust) is parents  # one per process and trust

    def child() -> Any:
        return tls.shared_tls_context(trust) is not parents

    assert in_child(child) is True


def test_a_child_of_a_process_that_used_the_memory_store_is_told_at_its_first_refresh(
    inproc: InProcess,
) -> None:
    manager = inproc.manager()
    token = manager.get_token()

    def child() -> Any:
        records: list[logging.LogRecord] = []

        class Kept(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                records.append(record)

        handler = Kept()
        logger = logging.getLogger("eightyeightpay")
        logger.addHandler(handler)
        try:
            assert manager.get_token() == token  # the inherited token: no request, no word
            said_before = len(records)
            for _ in range(2):  # two refreshes of its own: told once
                inproc.clock.advance(token.usable_until - inproc.clock() + 1)
                assert manager.get_token() != token
        finally:
            logger.removeHandler(handler)
        warned = [r.getMessage() for r in records if r.levelno == logging.WARNING]
        return [said_before, warned]

    said_before, warned = in_child(child)
    assert said_before == 0 and len(warned) == 1, warned
    assert DEFAULT_MERCHANT_ID in warned[0] and "fleet store" in warned[0]
    assert "74 an hour" in warned[0] and "100 an hour" in warned[0]
