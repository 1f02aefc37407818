"""``TokenManager``: the threaded driver over the core, with urllib3 underneath.

The driver decides nothing. It asks the core's machine what to do, performs the effects it
is handed, and wakes waiters. The cached path reads one immutable memo the slow path armed
and checks one clock reading against its window, without a lock.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from eightyeightpay.api import (
    ApiResponse,
    NeedToken,
    SendApiRequest,
)
from eightyeightpay.errors import (
    EightyEightPayError,
    ManagerClosed,
    TransportError,
)
from eightyeightpay.fleet import Sleep
from eightyeightpay.machine import (
    Flight,
    Pause,
    Refresh,
    Result,
    SendTokenRequest,
    Serve,
    ServeAndRefresh,
    Settled,
    Unavailable,
    Wait,
)
from eightyeightpay.plugins.fleet import FleetStore
from eightyeightpay.plugins.memory import MemoryStore
from eightyeightpay.policy import Deadline, Policy, Rng, call_deadline, check_deadline
from eightyeightpay.ports import FleetOperations, Transport
from eightyeightpay.tokens import Token

from .base import EnvConstructible, ManagerBase, transport_options
from .common import FlightRun, drop_flight, log_notices
from .lifecycle import RefreshHandle, default_clock, refresh_worker

if TYPE_CHECKING:  # imported with telemetry=, not with the manager
    from .telemetry import Telemetry

__all__ = ["Background", "ManualBackground", "ThreadBackground", "TokenManager"]

log = logging.getLogger("eightyeightpay")

Clock = Callable[[], float]


class Background(Protocol):
    """Runs refresh-ahead jobs away from the caller that triggered them."""

    def submit(self, job: Callable[[], None], on_drop: Callable[[], None]) -> None:
        """Run ``job`` later; if it will never run (closed), call ``on_drop`` instead."""
        ...

    def close(self) -> None:
        """Stop; jobs not started are dropped, a running one is waited for."""
        ...


class ThreadBackground(RefreshHandle):
    """A manager's share of the process's one refresh thread (a ``RefreshWorker``).

    The thread starts when a refresh is first queued and stops when the last manager using
    it closes (or is garbage-collected); :meth:`close` drops this manager's queued jobs and
    waits for its running one.
    """

    def __init__(self) -> None:
        super().__init__(refresh_worker())


class ManualBackground:
    """Jobs wait until :meth:`run_pending` runs them: deterministic tests and simulations.

    A caller that needs a queued refresh before then (its token expired) runs it itself; the
    job then does nothing when :meth:`run_pending` reaches it.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[[], None], Callable[[], None]]] = []
        """Jobs submitted and not run yet."""
        self._closed = False

    def submit(self, job: Callable[[], None], on_drop: Callable[[], None]) -> None:
        """Keep ``job`` until :meth:`run_pending`."""
        if self._closed:
            on_drop()
        else:
            self.pending.append((job, on_drop))

    def run_pending(self) -> int:
        """Run every pending job now; return how many ran."""
        jobs, self.pending = self.pending, []
        for job, _ in jobs:
            job()
        return len(jobs)

    def close(self) -> None:
        """Drop pending jobs."""
        self._closed = True
        jobs, self.pending = self.pending, []
        for _, on_drop in jobs:
            on_drop()


class _Waiter:
    """The threads of one manager waiting for one flight: one condition, one listener.

    The first thread to wait for a flight registers this with the slot; the others wait on
    the same condition, and the flight's end wakes them all with one ``notify_all``.
    """

    __slots__ = ("_key", "_waiters", "condition", "settled", "waiting")

    def __init__(self, waiters: dict[int, _Waiter], key: int) -> None:
        self.condition = threading.Condition(threading.Lock())
        self.settled: Settled | None = None
        self.waiting = 0
        """Threads waiting now."""
        self._waiters, self._key = waiters, key

    def __call__(self, settled: Settled) -> None:
        self._waiters.pop(self._key, None)
        with self.condition:
            self.settled = settled
            self.condition.notify_all()

    def wait(self, timeout: float) -> Settled | None:
        """The flight's outcome, or None after ``timeout`` seconds."""
        with self.condition:
            if self.settled is None:
                self.waiting += 1
                try:
                    self.condition.wait(timeout)
                finally:
                    self.waiting -= 1
            return self.settled


class TokenManager(ManagerBase, EnvConstructible):
    """Gets, caches and uses 88Pay access tokens from any number of threads.

    ``get_token()`` returns a usable :class:`~eightyeightpay.tokens.Token`; ``request()``
    makes an authenticated API call. One token request at most is in flight per credentials
    in the process; a token is refreshed in the background shortly before it would stop
    being used; 88Pay's rate limit is never broken by this process.
    """

    def __init__(
        self,
        api_key: str,
        merchant_id: str,
        *,
        environment: str | None = None,
        base_url: str | None = None,
        store: str | MemoryStore | FleetStore = "memory",
        policy: Policy | None = None,
        ca_bundle: str | None = None,
        max_connections: int | None = None,
        allow_http_loopback: bool = False,
        transport: Transport | None = None,
        timeout: float = 30.0,
        clock: Clock = default_clock,
        sleep: Callable[[float], object] = time.sleep,
        background: Background | None = None,
        rng: Rng | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        stores, fleet = self._configure(
            api_key,
            merchant_id,
            environment=environment,
            base_url=base_url,
            store=store,
            policy=policy,
            allow_http_loopback=allow_http_loopback,
            timeout=timeout,
            clock=clock,
            rng=rng,
            telemetry=telemetry,
        )
        self._fleet: FleetOperations | None = fleet.operations() if fleet else None
        self._blocking_fleet = self._fleet
        built = transport_options(transport, max_connections)
        chosen: Transport = transport or stores.transport("urllib3")(ca_bundle=ca_bundle, **built)
        self._join_slot()  # last: a manager that could not be built never holds the slot
        self._transport = chosen
        self._owns_transport = transport is None
        self._stopping = threading.Event()
        # The default sleep ends at close(): no backoff holds a flight's thread past it.
        self._sleep = self._stopping.wait if sleep is time.sleep else sleep
        self._background = background or ThreadBackground()
        self._waiters: dict[int, _Waiter] = {}  # by flight number; added under the slot's lock

    # ------------------------------------------------------------------ tokens

    def get_token(self, deadline: float | None = None) -> Token:
        """A usable token: from the cache when possible, else from one shared request.

        ``deadline`` is how many seconds this call may take (None: the policy's
        ``Policy.deadline``, 10 s by default; 0 fails fast). Within it,
        transient failures of the token request (network errors, 5xx, a gateway's page, a
        429 whose cool-down fits) are retried with the backoff and within 88Pay's rate
        limit; a definite failure (401, 403) is raised at once. When no token can be had in
        time a typed error says when one can (``retry_after``). The deadline bounds the whole
        call: a token request shared with other callers goes on after this call stops
        waiting for it (``DeadlineExceeded``), and its token is cached.
        """
        if deadline is not None:  # refused on every path, the cached one too
            check_deadline(deadline)
        # The cached path. ``deadline`` is not keyword-only: CPython 3.11 does not specialize
        # calls of functions with keyword-only parameters (about 9 % of this path, by callgrind).
        # The memo is checked on the cache clock (time.time() for the default boot clock,
        # see cache_clock); its window was set by the slow path on the boot clock.
        token, clock, since, until = self._cache.memo
        if since <= clock() < until:
            return token  # type: ignore[return-value]  # a memo with a window has a token
        return self._get_token_slowly(call_deadline(self.policy, self._clock(), deadline))

    def _get_token_slowly(self, until: Deadline) -> Token:
        self._check_process()
        slot = self._slot
        while True:
            if self._closed:
                raise ManagerClosed()
            waiter: _Waiter | None = None
            queued: Callable[[], Settled] | None = None
            with slot.lock:
                now = self._clock()
                decision = slot.machine.decide_and_start(now, until)
                notices = slot.machine.take_notices()
                if isinstance(decision, Serve):
                    slot.remember(decision.token, self._clock, self._cache_clock)
                elif isinstance(decision, ServeAndRefresh):
                    job = functools.partial(self._run_flight, decision.flight)
                    slot.queue(decision.flight, job)
                elif isinstance(decision, Wait | Refresh):
                    if isinstance(decision, Wait):
                        queued = slot.claim(decision.flight)
                    runs_here = isinstance(decision, Refresh) or queued is not None
                    if not (runs_here and decision.in_caller):
                        waiter = self._waiter_for(decision.flight)
            if notices:
                log_notices(notices)
            match decision:
                case Serve(token):
                    return token
                case ServeAndRefresh(token, flight):
                    log.debug("token %s is stale; refreshing in the background", token.fingerprint)
                    self._background.submit(
                        functools.partial(self._run_queued, flight),
                        functools.partial(self._drop_queued, flight),
                    )
                    return token
                case Refresh(flight) if decision.in_caller:
                    settled = self._run_flight(flight)
                case Wait() if queued is not None and decision.in_caller:
                    settled = queued()  # a refresh no thread has started: run it here
                case Refresh() | Wait():
                    if isinstance(decision, Refresh):
                        self._run_apart(functools.partial(self._run_flight, decision.flight))
                    elif queued is not None:
                        self._run_apart(queued)
                    assert waiter is not None
                    outcome = waiter.wait(max(0.0, decision.until - now))
                    if outcome is None:  # the listener stays, for the flight's other waiters
                        raise slot.machine.gave_up(decision)
                    settled = outcome
                case Pause(resume_at):
                    self._sleep(max(0.0, resume_at - now))
                    if self._clock() <= now:  # a fake clock the sleep did not move: no loop
                        until = Deadline(now)
                    continue
                case Unavailable(error):
                    raise error
            if settled.error is not None:
                with slot.lock:
                    retry = slot.machine.may_retry(settled.error, self._clock(), until)
                if not retry:
                    raise settled.error.copy()
                continue
            if settled.token is not None and self._clock() < settled.token.usable_until:
                return settled.token

    def _waiter_for(self, flight: Flight) -> _Waiter:
        """The manager's listener for ``flight`` (called under the slot's lock)."""
        waiter = self._waiters.get(flight.number)
        if waiter is None:
            waiter = self._waiters[flight.number] = _Waiter(self._waiters, flight.number)
            self._slot.listen(flight, waiter)
        return waiter

    @staticmethod
    def _run_apart(job: Callable[[], object]) -> None:
        """Run a flight that may outlast its caller's deadline in a thread of its own.

        The caller stops waiting at its deadline; the flight goes on for its other waiters.
        """
        threading.Thread(target=job, name="eightyeightpay-flight", daemon=True).start()

    def _run_flight(self, flight: Flight) -> Settled:
        """Run the core's refresh protocol for ``flight`` and wake its waiters."""
        run = FlightRun(
            self._slot,
            flight,
            self._clock,
            self.credentials.host,
            self._health,
            self._observer,
            store_deadline=self._store_deadline,
        )
        try:
            effect = run.start()
            while effect is not None:
                result: Result
                if isinstance(effect, SendTokenRequest):
                    try:
                        response = self._transport.send(effect.request, timeout=effect.timeout)
                    except EightyEightPayError as error:
                        result = run.exchanged(None, error)
                    else:
                        result = run.exchanged(response, None)
                elif isinstance(effect, Sleep):
                    self._sleep(effect.seconds)
                    result = run.slept()
                else:
                    assert self._fleet is not None
                    result = run.perform_store(effect, self._fleet)
                if self._closed:  # close() cut the effect short: the flight is aborted
                    break
                effect = run.feed(result)
        except Exception as unexpected:  # a broken transport plugin must not strand waiters
            run.crash(unexpected)
        finally:
            settled = run.finish()
        return settled

    def _run_queued(self, flight: Flight) -> None:
        """The background's job: run ``flight`` unless a waiting caller already took it."""
        with self._slot.lock:
            job = self._slot.claim(flight)
        if job is not None:
            job()

    def _drop_queued(self, flight: Flight) -> None:
        """The background closed before starting ``flight``: end it, unless a caller runs it."""
        with self._slot.lock:
            job = self._slot.claim(flight)
        if job is not None:
            drop_flight(self._slot, flight)

    # ------------------------------------------------------------------ API calls

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> ApiResponse:
        """An authenticated API call; returns the answer, or raises its typed error.

        A 2xx (or 3xx) answer is returned as an :class:`~eightyeightpay.api.ApiResponse`; an
        error status raises an :class:`~eightyeightpay.errors.ApiError` (``BadRequest``,
        ``Unprocessable``, ``NotFound``, ``PermissionDenied``, ``ApiRateLimited``,
        ``ApiServerError``...) carrying the status, 88Pay's ``code`` and ``message``, and
        whether the call may have been processed, as Stripe's SDKs do. Within ``deadline``
        seconds (default ``Policy.deadline``; 0 fails fast) the API governor (60/minute,
        1,000/hour) is kept and what is safe is retried: a call that never left, a 429, a
        read-only call (the balance) after a 5xx or a broken connection. A 401 invalidates the
        token used and the call is sent once more with a new one. A call that may have
        reached the server (a charge) is never sent twice; its error says so.
        """
        run = self._api_call(method, path, json, headers, deadline)
        while (effect := run.next()) is not None:  # the rest is performed in the run
            if isinstance(effect, SendApiRequest):
                try:
                    response = self._transport.send(effect.request, timeout=effect.timeout)
                except TransportError as error:
                    run.received(error)
                except BaseException as error:  # closed (or interrupted) in flight
                    run.cut(error)
                    raise
                else:
                    run.received(response)
            elif isinstance(effect, NeedToken):  # none fresh in the cache
                try:
                    run.give(self._get_token_slowly(effect.until))
                except EightyEightPayError as error:
                    run.fail(error)
            else:
                assert isinstance(effect, Sleep)
                self._sleep(effect.seconds)
                run.give(None)
        assert run.response is not None
        return run.response

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop the background worker and close connections. Idempotent.

        A token request under way is cut (its connection shut, a backoff sleep ended), so
        its thread ends now rather than at its timeout; the flight is aborted, its waiters
        on this manager get ManagerClosed, and those of other managers sharing the store
        decide again.
        """
        if not self._mark_closed():
            return
        self._stopping.set()
        self._transport.close()
        self._background.close()

    def _release(self) -> None:
        self._background.close()
        if self._owns_transport:  # one the caller passed in may serve other managers
            self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
