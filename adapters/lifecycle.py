"""What managers share about their life in a process: the clock, the refresh thread, pickling.

- :data:`default_clock` counts the time the host spent suspended where the platform offers
  such a clock (``CLOCK_BOOTTIME`` on Linux): ``time.monotonic`` stops during a suspend, so a
  token would look younger than the server knows it is.
- :class:`RefreshWorker` is the one thread per process that runs every threaded manager's
  background refreshes: threads do not grow with managers (or merchants). It starts when a
  refresh is first queued, stops when the last manager using it is closed or collected, and
  starts afresh (a new thread, on need) in a forked child. It is a daemon: interpreter exit
  never waits on it.
- :class:`EnvRecipe` is how a manager built by ``from_env()`` pickles: the option values
  and the names of the variables to read again, never the key or a token.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from eightyeightpay.errors import NotPicklable
from eightyeightpay.plugins.process import ProcessBound
from eightyeightpay.policy import Policy

__all__ = [
    "THREAD_PREFIX",
    "EnvRecipe",
    "RefreshHandle",
    "RefreshWorker",
    "cache_clock",
    "default_clock",
    "not_picklable",
    "refresh_worker",
]

log = logging.getLogger("eightyeightpay")

THREAD_PREFIX = "eightyeightpay-"
"""Every thread this library starts is named with this prefix."""


def _boot_clock() -> Callable[[], float]:
    clock_id = getattr(time, "CLOCK_BOOTTIME", None)
    if clock_id is None or not sys.platform.startswith("linux"):
        return time.monotonic
    try:
        time.clock_gettime(clock_id)
    except OSError:  # a kernel without it (before 2.6.39)
        return time.monotonic
    # A partial over the builtin is called in C, as time.monotonic is: no Python frame.
    return functools.partial(time.clock_gettime, clock_id)


default_clock: Callable[[], float] = _boot_clock()
"""Seconds on a clock that never goes back and counts suspended time, where there is one.

``time.clock_gettime(time.CLOCK_BOOTTIME)`` on Linux; ``time.monotonic`` elsewhere. Every
manager compares token lifetimes with it unless given ``clock=``.
"""

wall_clock: Callable[[], float] = time.time
"""The cached path's clock for managers on :data:`default_clock` (``CLOCK_REALTIME``)."""


def cache_clock(clock: Callable[[], float]) -> Callable[[], float]:
    """The clock a manager on ``clock`` checks its cached token on.

    For :data:`default_clock` it is ``wall_clock``, ``time.time``: it counts suspended
    time as ``CLOCK_BOOTTIME`` does, and takes no argument, so CPython calls it for about 400
    instructions less than ``clock_gettime(CLOCK_BOOTTIME)``. The slow path, which decides
    everything on ``clock``, arms the cache with a window of at most the token's advisory
    lead, ending by its ``fresh_until`` (:meth:`~eightyeightpay.plugins.memory.Slot.remember`),
    and the check also refuses a reading before the window's start. A forward step of the
    wall clock only sends a caller to the slow path, which arms the cache again; a backward
    step of ``s`` seconds can keep a token served at most ``s`` seconds past the window's end
    (docs/performance.md, "The cached path's clock"). An injected clock is used as it is.
    """
    return wall_clock if clock is default_clock else clock


Job = Callable[[], None]


class RefreshHandle(ProcessBound):
    """One manager's use of the process's refresh thread (the ``background`` it is given).

    :meth:`submit` queues a job; :meth:`close` drops the jobs not started (calling their
    ``on_drop``), waits for a running one, and lets the thread stop if no other manager
    uses it.
    """

    def __init__(self, worker: RefreshWorker) -> None:
        super().__init__()
        self._worker = worker
        self._lock = threading.Lock()
        self._running = threading.Lock()
        self._pending: deque[tuple[Job, Job]] = deque()
        self._closed = False
        worker.attach()

    def _start_afresh(self) -> None:
        self._lock = threading.Lock()
        self._running = threading.Lock()
        self._pending.clear()  # the slots dropped these flights already

    def submit(self, job: Job, on_drop: Job) -> None:
        """Run ``job`` on the refresh thread; if it will never run (closed), ``on_drop``."""
        self.check_process()
        with self._lock:
            accepted = not self._closed
            if accepted:
                self._pending.append((job, on_drop))
        if accepted:
            self._worker.wake(self)
        else:
            on_drop()

    def run_one(self) -> None:
        """Run the oldest pending job (on the refresh thread)."""
        with self._lock:
            if not self._pending:
                return
            job, on_drop = self._pending.popleft()
        with self._running:
            if self._closed:
                on_drop()
            else:
                job()

    def close(self) -> None:
        """Drop pending jobs, wait for a running one, release the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            dropped = list(self._pending)
            self._pending.clear()
        for _, on_drop in dropped:
            on_drop()
        if not self._worker.is_current():
            with self._running:  # a job running now ends before close returns
                pass
        self._worker.detach()


class RefreshWorker(ProcessBound):
    """The process's refresh thread, shared by every :class:`RefreshHandle`."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._users = 0
        self._thread: threading.Thread | None = None
        self._queue: deque[RefreshHandle | None] = deque()
        self._ready = threading.Condition(self._lock)

    def _start_afresh(self) -> None:
        # The parent's thread does not exist here: a new one starts when a job comes.
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._thread = None
        self._queue = deque()

    @property
    def running(self) -> bool:
        """True while the thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def is_current(self) -> bool:
        """True when called on the refresh thread."""
        return self._thread is threading.current_thread()

    def attach(self) -> None:
        """A manager starts using the thread (it starts only when a job comes)."""
        self.check_process()
        with self._lock:
            self._users += 1

    def detach(self) -> None:
        """A manager stopped using the thread; the last one stops it."""
        self.check_process()
        with self._lock:
            self._users -= 1
            if self._users > 0 or self._thread is None:
                return
            thread, self._thread = self._thread, None
            self._queue.append(None)  # after every job queued so far
            self._ready.notify()
        if thread is not threading.current_thread() and not sys.is_finalizing():
            # Jobs are never waited for here (close dropped them); a wedged one does not
            # hold the caller (possibly the garbage collector) for long.
            thread.join(timeout=1.0)

    def wake(self, handle: RefreshHandle) -> None:
        """Have the thread run one of ``handle``'s pending jobs; start it if needed."""
        self.check_process()
        with self._lock:
            if self._thread is None:
                self._queue = queue = deque[RefreshHandle | None]()
                self._thread = threading.Thread(
                    target=self._run,
                    args=(queue,),
                    name=f"{THREAD_PREFIX}refresh",
                    daemon=True,  # interpreter exit never waits on it
                )
                self._thread.start()
            self._queue.append(handle)
            self._ready.notify()

    def _run(self, queue: deque[RefreshHandle | None]) -> None:
        while True:
            with self._lock:
                while not queue:
                    self._ready.wait()
                handle = queue.popleft()
            if handle is None:
                return
            try:
                handle.run_one()
            except Exception:  # a broken job must not end the thread every manager shares
                log.exception("a background refresh job failed")


_worker: RefreshWorker | None = None
_worker_lock = threading.Lock()


def refresh_worker() -> RefreshWorker:
    """The process's refresh thread (created on first use; one per process)."""
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = RefreshWorker()
        return _worker


def _new_worker_lock() -> None:
    global _worker_lock
    _worker_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_worker_lock)


# --------------------------------------------------------------------------- pickling

_PLAIN = (str, int, float, bool, type(None), Policy)


@attrs.frozen(repr=False)
class EnvRecipe:
    """How to build a manager again: ``cls.from_env(**options)`` in the loading process.

    Holds the options passed to ``from_env()`` (plain values only) and nothing read from
    the environment: the loading process reads its own ``EIGHTY_EIGHT_PAY_*`` variables.
    """

    options: tuple[tuple[str, Any], ...]
    """The keyword options given to ``from_env()``, sorted by name."""

    @classmethod
    def of(cls, options: Mapping[str, Any], kind: str) -> EnvRecipe | NotPicklable:
        """The recipe, or the error pickling will raise for an option that cannot travel."""
        for name, value in options.items():
            if not isinstance(value, _PLAIN):
                return NotPicklable(
                    f"This {kind} was built by from_env() with {name}= set to an object "
                    f"({type(value).__name__}), which cannot be rebuilt in another process "
                    "without carrying its state. Pass plain values (a store name such as "
                    "store='redis' with its URL in the environment, a Policy, numbers and "
                    "strings), or build the manager in the worker process itself."
                )
        return cls(tuple(sorted(options.items())))

    def __repr__(self) -> str:
        return f"EnvRecipe(options={[name for name, _ in self.options]})"


def not_picklable(kind: str) -> NotPicklable:
    """The error for pickling a manager that holds its key (not built by ``from_env()``)."""
    return NotPicklable(
        f"A {kind} built with an API key is not pickled: the bytes would carry the key. "
        f"Build it with {kind}.from_env() (it pickles as 'build again from the "
        "EIGHTY_EIGHT_PAY_* variables'), or make one in each worker process (for example "
        "in a Celery worker_process_init handler or a multiprocessing pool initializer)."
    )
