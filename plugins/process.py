"""Noticing a new process: what holds process state starts afresh in a forked child.

A forked child inherits a copy of every object, but of the threads only the one that forked:
a lock some other thread held stays locked forever, a flight some other thread was running
never ends, a worker thread exists only on paper. Objects that hold such state register
here and are told, in the child, right after ``os.fork()`` returns
(``os.register_at_fork(after_in_child=...)``). For a fork that bypasses that hook (a C
extension calling ``fork()`` directly), each such object also compares the pid it recorded
with ``os.getpid()`` on its slow path, as redis-py's connection pool does, and starts afresh
when they differ. The cached path never looks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

__all__ = [
    "ForkAware",
    "OnEachChild",
    "PerProcessClient",
    "ProcessBound",
    "first_use",
    "forget_in_child",
    "pid",
]

_T = TypeVar("_T")

log = logging.getLogger("eightyeightpay")


class ForkAware(Protocol):
    """An object that starts afresh in a forked child."""

    def after_fork(self) -> None:
        """Drop what belongs to the parent; called once in the child, before any other use."""
        ...


class ProcessBound:
    """Base of objects holding process state: :meth:`_start_afresh` runs once in each child.

    Subclasses call ``super().__init__()`` and implement :meth:`_start_afresh`; their slow
    paths call :meth:`check_process`.
    """

    def __init__(self) -> None:
        self._pid = os.getpid()
        forget_in_child(self)

    def check_process(self) -> None:
        """Start afresh if this is a new process (for a fork the hook did not see)."""
        if self._pid != os.getpid():
            self.after_fork()

    def after_fork(self) -> None:
        """Start afresh, once per process."""
        current = os.getpid()
        if self._pid != current:
            self._pid = current
            self._start_afresh()

    def _start_afresh(self) -> None:
        """Drop the parent's state (threads, locks, flights, connections) in the child."""
        raise NotImplementedError


class OnEachChild(ProcessBound):
    """Calls ``start_afresh()`` once in each new process: for a module's process-wide state.

    The module keeps the instance (it is registered weakly) and calls
    :meth:`ProcessBound.check_process` on its slow path before reading that state.
    """

    def __init__(self, start_afresh: Callable[[], object]) -> None:
        self._callback = start_afresh
        super().__init__()

    def _start_afresh(self) -> None:
        self._callback()


_objects: weakref.WeakSet[ForkAware] = weakref.WeakSet()
_pid = os.getpid()


def pid() -> int:
    """The pid this module last saw (the current process once the fork hook has run)."""
    return _pid


def forget_in_child(obj: ForkAware) -> None:
    """Call ``obj.after_fork()`` in every child forked from now on (held weakly)."""
    _objects.add(obj)


_first_uses = threading.RLock()


def first_use(load: Callable[[], _T]) -> _T:
    """``load()``, which may import modules or load a trust store, never halfway at a fork.

    A thread halfway through an import holds that module's import lock; a fork copies the
    lock held, and the child, whose only thread is the one that forked, waits on it for
    ever at its first use of the module (OpenSSL's locks, while a trust store loads, the
    same). The library's lazy first uses (cattrs, urllib3, a TLS context) run under one
    lock that ``os.fork()`` takes before forking, so a fork waits for the one under way
    (milliseconds, once per process) and the child inherits none halfway. Reentrant: a
    first use may make another.
    """
    with _first_uses:
        return load()


def _before_fork() -> None:
    _first_uses.acquire()


def _after_fork_in_parent() -> None:
    _first_uses.release()


def _after_fork_in_child() -> None:
    global _pid, _first_uses
    _first_uses = threading.RLock()  # the parent's is held by the fork: this one is free
    _pid = os.getpid()
    for obj in list(_objects):
        try:
            obj.after_fork()
        except Exception:  # one broken object must not keep the others from starting afresh
            log.exception("starting afresh after fork failed for %s", type(obj).__name__)


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


class PerProcessClient(ProcessBound):
    """A network client built anew in each process; attribute access reaches this process's.

    For clients that do not notice a fork themselves (pymemcache's; redis-py's pool does).
    In a child, ``forget(inherited)`` closes the child's copy of the inherited sockets (a
    plain close of a plain TCP socket releases the child's descriptor only: the parent's
    connection stays open and untouched; it must take no lock a parent thread may have held)
    and ``build()`` makes the child's own client.
    """

    def __init__(self, build: Callable[[], Any], forget: Callable[[Any], object]) -> None:
        self._build = build
        self._forget = forget
        self._client = build()
        super().__init__()

    def __getattr__(self, name: str) -> Any:
        self.check_process()
        return getattr(self._client, name)

    def _start_afresh(self) -> None:
        inherited, self._client = self._client, self._build()
        with contextlib.suppress(Exception):
            self._forget(inherited)
