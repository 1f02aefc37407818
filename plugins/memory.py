"""The ``memory`` store: one process-wide slot per cache key, never persisted.

Every manager in the process with the same base URL, merchant and API key shares one slot,
hence one token, one in-flight request and one rate window, whatever runtime it runs on.
The slot's lock guards only short, non-blocking updates of the core's machine; it is never
held across I/O or an ``await``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from eightyeightpay.credentials import CacheKey, Credentials
from eightyeightpay.errors import ConfigurationError
from eightyeightpay.machine import Flight, Settled, TokenMachine
from eightyeightpay.policy import Policy, Rng
from eightyeightpay.tokens import Token

from .hookspecs import StoreFactory, hookimpl
from .process import ProcessBound

__all__ = ["NO_MEMO", "Memo", "MemoryStore", "Slot"]

Listener = Callable[[Settled], None]
log = logging.getLogger("eightyeightpay")


Memo = tuple[Token | None, Callable[[], float], float, float]
"""The cached path's memo, ``(token, clock, since, until)``: serve ``token`` while
``since <= clock() < until``.

The slow path arms it (:meth:`Slot.remember`) after deciding on the managers' clock (one per
slot, :meth:`Slot.join`). ``clock`` is the cache clock the memo is checked on
(``time.time`` for managers on the default boot clock); ``since`` is when it was armed and
``until`` when it runs out, both read on ``clock`` (seconds): the check is the same whichever
manager of the slot reads it. The window is at most the token's advisory lead long and ends no later
than its ``fresh_until``, as the slow path measured it when it armed the memo.

A plain tuple, not a frozen class: the cached path unpacks it into locals, which CPython 3.11
runs as fast as the reference check's two attribute reads, where reading four attributes of
a frozen class cost about 6 % more (``tests/benchmarks/cached.py``).
"""


def _never() -> float:
    return 0.0


NO_MEMO: Memo = (None, _never, 1.0, 0.0)
"""The empty memo: its window is empty (``1.0 <= 0.0`` fails), so every check takes the slow
path."""


class Slot(ProcessBound):
    """The shared state of one cache key: the core's machine, its lock, and who waits.

    In a forked child the slot keeps its token (valid in any process) and its rate window
    (the parent's sends count against the same limits), and forgets what only the parent's
    threads could finish: the flight in progress (no thread of the child runs it), its
    waiters and queued job, and the lock (a parent thread may have held it at the fork).
    """

    def __init__(self, machine: Callable[[], TokenMachine]) -> None:
        super().__init__()
        self.lock = threading.Lock()
        """Guards :attr:`machine` and the listeners; held only for short updates."""
        self._new_machine = machine
        self.machine = machine()
        """The core's decisions for this key."""
        self.snapshot: Token | None = None
        """The machine's newest token, readable without the lock."""
        self.memo: Memo = NO_MEMO
        """What the lock-free cached path reads (see :meth:`remember`); reset on every change
        of :attr:`snapshot`."""
        self.clock: Callable[[], float] | None = None
        """The clock of the slot's managers (:meth:`join`); None until the first."""
        self._clock_label = ""
        self._members: set[object] = set()
        self._listeners: dict[int, list[Listener]] = {}
        self._queued: tuple[Flight, Callable[[], Settled]] | None = None
        self.forked_unshared = False
        """True in a process forked from one that used this key with no fleet store, until
        the driver has said so at its first token request (each such process requests its
        own tokens, against the same merchant's limits)."""

    def _start_afresh(self) -> None:
        used = bool(self._members) or self.machine.token is not None
        self.forked_unshared = used and not self.machine.fleet
        self.lock = threading.Lock()
        self._listeners = {}
        self._queued = None
        if self.machine.flight is not None:
            self.machine.abort(self.machine.flight)

    def queue(self, flight: Flight, job: Callable[[], Settled]) -> None:
        """Note that ``job`` runs ``flight`` and waits for a background thread to start it.

        A thread that would otherwise wait for ``flight`` takes the job with :meth:`claim`
        and runs it itself, so no caller waits on a thread that has not started (or, with a
        manual background in a single-threaded test, never will). Call with :attr:`lock` held.
        """
        self._queued = (flight, job)

    def claim(self, flight: Flight) -> Callable[[], Settled] | None:
        """The queued job for ``flight`` if nobody has started it; it is then yours to run.

        Exactly one claim of a queued job succeeds. Call with :attr:`lock` held.
        """
        queued = self._queued
        if queued is None or queued[0] is not flight:
            return None
        self._queued = None
        return queued[1]

    def listen(self, flight: Flight, listener: Listener) -> None:
        """Call ``listener`` once ``flight`` settles. Call with :attr:`lock` held."""
        self._listeners.setdefault(flight.number, []).append(listener)

    def unlisten(self, flight: Flight, listener: Listener) -> None:
        """Stop waiting for ``flight`` (a cancelled waiter). Call with :attr:`lock` held."""
        waiting = self._listeners.get(flight.number, [])
        if listener in waiting:
            waiting.remove(listener)

    def publish(self, settled: Settled) -> None:
        """Wake everyone waiting for ``settled.flight``. Call without the lock."""
        with self.lock:
            self.snapshot = self.machine.token
            self._forget_memos()
            listeners = self._listeners.pop(settled.flight.number, [])
        for listener in listeners:
            try:
                listener(settled)
            except Exception:  # a waiter whose event loop has gone must not stop the others
                log.debug("a waiter could not be woken (its event loop is closed)")

    def refresh_snapshot(self) -> None:
        """Copy the machine's token to :attr:`snapshot`. Call with :attr:`lock` held."""
        self.snapshot = self.machine.token
        self._forget_memos()

    def join(self, clock: Callable[[], float], label: str, credentials: Credentials) -> object:
        """Take a manager on ``clock``; returns its membership, for :meth:`leave` at its close.

        ``label`` names the clock in errors. The token's life, the flight's deadline and the
        rate windows are kept in the slot on one clock: its managers share it. While a manager
        is in, one on another clock is refused with
        :class:`~eightyeightpay.errors.ConfigurationError`. Once every manager has left, one
        on another clock starts the slot afresh (no token, empty windows): the old clock's
        times mean nothing on the new one.
        """
        with self.lock:
            if self.clock is not None and self.clock != clock:
                if self._members:
                    raise ConfigurationError(
                        f"Another manager in this process uses {credentials.merchant_id} at "
                        f"{credentials.base_url} on {self._clock_label}; this one is on "
                        f"{label}. Managers sharing credentials share one token and one rate "
                        "window, kept on one clock: give them the same clock= object, or give "
                        "this one a private MemoryStore()."
                    )
                self._start_over()
            self.clock, self._clock_label = clock, label
            membership = object()
            self._members.add(membership)
            return membership

    @property
    def has_members(self) -> bool:
        """Whether a manager that joined is still open."""
        return bool(self._members)

    def leave(self, membership: object) -> None:
        """The manager of ``membership`` (from :meth:`join`) has closed.

        Takes no lock: it also runs from a manager's finalizer, which the garbage collector
        may call on a thread that holds :attr:`lock` (a set's discard is atomic).
        """
        self._members.discard(membership)

    def _start_over(self) -> None:
        self.machine = self._new_machine()
        self.snapshot = None
        self.memo = NO_MEMO
        self._listeners = {}
        self._queued = None

    def _forget_memos(self) -> None:
        self.memo = NO_MEMO

    def remember(
        self, token: Token, clock: Callable[[], float], cache_clock: Callable[[], float]
    ) -> None:
        """Arm :attr:`memo` for ``token``, just served by the slow path on ``clock``.

        The memo is read on ``cache_clock`` (see :data:`Memo`): it holds while that clock
        reads from now until ``min(fresh_until - now, usable_until - fresh_until)`` seconds
        later, ``now`` read on ``clock`` after ``cache_clock``, so that the window ends no
        later than ``fresh_until`` in ``clock``'s terms. Nothing is armed for a token that is
        no longer the snapshot (invalidated, replaced) or no longer fresh. Call with
        :attr:`lock` held.
        """
        since = cache_clock()
        now = clock()
        if token is not self.snapshot or not now < token.fresh_until:
            return
        span = min(token.fresh_until - now, token.usable_until - token.fresh_until)
        self.memo = (token, cache_clock, since, since + span)


class MemoryStore(ProcessBound):
    """Slots by cache key. ``MemoryStore.process_wide()`` is the one ``store="memory"`` uses.

    A private ``MemoryStore()`` isolates a group of managers, which tests use to start clean.
    A forked child keeps the slots (each starts afresh itself) with a new lock.
    """

    name = "memory"
    shared = False
    """A memory store is local to this process: there is no fleet to coordinate with."""

    _process_wide: MemoryStore | None = None
    _process_wide_lock = threading.Lock()

    def __init__(self) -> None:
        super().__init__()
        self._slots: dict[CacheKey, Slot] = {}
        self._lock = threading.Lock()

    def _start_afresh(self) -> None:
        self._lock = threading.Lock()

    @property
    def slots(self) -> tuple[Slot, ...]:
        """The slots made so far."""
        return tuple(self._slots.values())

    @classmethod
    def process_wide(cls) -> MemoryStore:
        """The store shared by every manager of this process."""
        with cls._process_wide_lock:
            if cls._process_wide is None:
                cls._process_wide = cls()
            return cls._process_wide

    def slot(
        self,
        credentials: Credentials,
        policy: Policy,
        rng: Rng,
        *,
        machine: Callable[[], TokenMachine] | None = None,
    ) -> Slot:
        """The slot for ``credentials``, created with ``policy`` (or ``machine()``) on first use.

        A manager that asks for an existing slot with a different policy is refused: one
        key has one rate window, and two policies could not both keep it.
        """
        key = credentials.cache_key
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = Slot(machine or (lambda: TokenMachine(credentials, policy, rng)))
                self._slots[key] = slot
            elif slot.machine.policy != policy:
                who = (
                    "Another manager in this process already uses"
                    if slot.has_members
                    else "A manager closed earlier in this process used"
                )
                raise ConfigurationError(
                    f"{who} {credentials.merchant_id} at {credentials.base_url} with a different "
                    "policy; the process keeps one policy, and one rate window, per merchant and "
                    "base URL for as long as it runs. Managers sharing credentials must share "
                    "the policy, or use a private MemoryStore()."
                )
            return slot

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._slots)} keys)"


def _new_class_lock() -> None:
    MemoryStore._process_wide_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_class_lock)


@hookimpl
def eightyeightpay_register_stores(register: Callable[[str, StoreFactory], None]) -> None:
    """Register the ``memory`` store."""
    register("memory", MemoryStore.process_wide)
