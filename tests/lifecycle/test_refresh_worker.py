"""The process's one refresh thread, shared by the managers' handles."""

from __future__ import annotations

import threading

import pytest

from eightyeightpay.adapters.lifecycle import RefreshHandle, RefreshWorker
from tests.lifecycle.support import eventually


def test_handles_share_one_thread_that_stops_with_the_last_of_them() -> None:
    worker = RefreshWorker()
    first, second = RefreshHandle(worker), RefreshHandle(worker)
    assert not worker.running  # started on need only
    ran: list[int] = []
    done = threading.Event()

    def note() -> None:
        ran.append(threading.get_ident())

    first.submit(note, lambda: None)
    second.submit(note, lambda: None)
    second.submit(done.set, lambda: None)
    assert done.wait(10)
    assert len(set(ran)) == 1 and ran[0] != threading.get_ident()
    first.close()
    assert worker.running  # the second handle still uses it
    second.close()
    assert not worker.running


def test_close_drops_queued_jobs_and_waits_for_a_running_one() -> None:
    worker = RefreshWorker()
    busy, other = RefreshHandle(worker), RefreshHandle(worker)
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        release.wait(10)
        finished.set()

    busy.submit(slow, lambda: None)
    assert started.wait(10)
    dropped: list[str] = []
    other.submit(lambda: dropped.append("ran"), lambda: dropped.append("dropped"))
    other.close()  # queued behind the busy job: dropped at once, never run
    assert dropped == ["dropped"]
    closer = threading.Thread(target=busy.close)
    closer.start()
    assert closer.is_alive()  # waits for the running job
    release.set()
    closer.join(10)
    assert finished.is_set() and not closer.is_alive()
    assert eventually(lambda: not worker.running)
    busy.submit(lambda: dropped.append("ran"), lambda: dropped.append("dropped late"))
    assert dropped == ["dropped", "dropped late"]


def test_a_failing_job_leaves_the_thread_serving_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = RefreshWorker()
    handle = RefreshHandle(worker)
    done = threading.Event()

    def broken() -> None:
        raise RuntimeError("a broken job")

    handle.submit(broken, lambda: None)
    handle.submit(done.set, lambda: None)
    assert done.wait(10)
    handle.close()
    assert "a background refresh job failed" in caplog.text
