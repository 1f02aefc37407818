"""The asyncio and trio managers: one driver over the core, two runtimes.

``AsyncTokenManager`` (asyncio) and the trio manager opened with
``async with open_trio_token_manager(...)`` behave exactly like the threaded
``TokenManager``, because the core decides and this driver only performs effects. The
token request runs in a task the manager owns: a cancelled caller cancels only its own
wait, and every other waiter still gets the token or the error.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from eightyeightpay.api import (
    ApiResponse,
    NeedToken,
    SendApiRequest,
)
from eightyeightpay.errors import (
    ConfigurationError,
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
    Unavailable,
    Wait,
)
from eightyeightpay.plugins.fleet import FleetStore
from eightyeightpay.plugins.memory import MemoryStore
from eightyeightpay.plugins.registry import registry
from eightyeightpay.policy import Deadline, Policy, Rng, call_deadline, check_deadline
from eightyeightpay.ports import AsyncFleetOperations, AsyncRuntime, AsyncTransport, Lot
from eightyeightpay.tokens import Token

from .base import EnvConstructible, ManagerBase, transport_options
from .common import (
    FlightRun,
    aperform_api_governor,
    drop_flight,
    log_notices,
)
from .config import read_environment
from .lifecycle import default_clock

if TYPE_CHECKING:  # imported with telemetry=, not with the manager
    from .telemetry import Telemetry

__all__ = ["AsyncTokenManager", "TrioTokenManager", "open_trio_token_manager"]

Clock = Callable[[], float]


class _AsyncManager(ManagerBase):
    """The driver shared by the asyncio and trio managers."""

    def __init__(
        self,
        runtime: AsyncRuntime,
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
        transport: AsyncTransport | None = None,
        timeout: float = 30.0,
        clock: Clock = default_clock,
        sleep: Callable[[float], Awaitable[object]] | None = None,
        rng: Rng | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        plugins, fleet = self._configure(
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
        self._fleet: AsyncFleetOperations | None = (
            runtime.fleet_operations(fleet) if fleet else None
        )
        self._governs_at_once = self._fleet is None
        self._runtime = runtime
        self._sleep: Callable[[float], Awaitable[object]] = sleep or self._nap
        """Waits a backoff or a cool-down; a test on a fake clock passes one that moves it."""
        self._napping: dict[Lot, object] = {}
        """The default sleep's waits, with their loop: :meth:`aclose` ends those of its loop."""
        built = transport_options(transport, max_connections)
        chosen: AsyncTransport = transport or plugins.async_transport("h11")(
            runtime, ca_bundle=ca_bundle, **built
        )
        self._join_slot()  # last: a manager that could not be built never holds the slot
        self._transport = chosen

    # ------------------------------------------------------------------ tokens

    async def get_token(self, deadline: float | None = None) -> Token:
        """A usable token: from the cache when possible, else from one shared request.

        ``deadline`` is how many seconds this call may take (None: the policy's
        ``Policy.deadline``, 10 s by default; 0 fails fast); within it
        transient failures are retried, as the threaded ``TokenManager.get_token`` says; the
        deadline bounds the whole call (a shared token request goes on after this call
        stops waiting for it).
        """
        if deadline is not None:  # refused on every path, the cached one too
            check_deadline(deadline)
        # The memo is checked on the cache clock (time.time() for the default boot clock,
        # see cache_clock); its window was set by the slow path on the boot clock.
        token, clock, since, until = self._cache.memo
        if since <= clock() < until:
            return token  # type: ignore[return-value]  # a memo with a window has a token
        return await self._get_token_slowly(call_deadline(self.policy, self._clock(), deadline))

    async def _get_token_slowly(self, until: Deadline) -> Token:
        self._check_process()
        slot = self._slot
        while True:
            if self._closed:
                raise ManagerClosed()
            waiter = self._runtime.waiter()
            with slot.lock:
                now = self._clock()
                decision = slot.machine.decide_and_start(now, until)
                notices = slot.machine.take_notices()
                if isinstance(decision, Serve):
                    slot.remember(decision.token, self._clock, self._cache_clock)
                elif isinstance(decision, Wait | Refresh):
                    slot.listen(decision.flight, waiter)
            if notices:
                log_notices(notices)
            match decision:
                case Serve(token):
                    return token
                case ServeAndRefresh(token, flight):
                    self._start_flight(flight)
                    return token
                case Refresh(flight, wait_until):
                    self._start_flight(flight)
                case Wait(flight, wait_until):
                    pass
                case Pause(resume_at):
                    await self._sleep(max(0.0, resume_at - now))
                    if self._clock() <= now:  # a fake clock the sleep did not move: no loop
                        until = Deadline(now)
                    continue
                case Unavailable(error):
                    raise error
            try:
                settled = await waiter.wait(max(0.0, wait_until - now))
            finally:
                with slot.lock:  # a cancelled or timed-out caller stops waiting; nobody else
                    slot.unlisten(flight, waiter)
            if settled is None:
                assert isinstance(decision, Refresh | Wait)
                raise slot.machine.gave_up(decision)
            if settled.error is not None:
                with slot.lock:
                    retry = slot.machine.may_retry(settled.error, self._clock(), until)
                if not retry:
                    raise settled.error.copy()
                continue
            if settled.token is not None and self._clock() < settled.token.usable_until:
                return settled.token

    def _start_flight(self, flight: Flight) -> None:
        self._runtime.spawn(
            functools.partial(self._run_flight, flight),
            functools.partial(drop_flight, self._slot, flight),
        )

    async def _run_flight(self, flight: Flight) -> None:
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
                        response = await self._transport.send(
                            effect.request, timeout=effect.timeout
                        )
                    except EightyEightPayError as error:
                        result = run.exchanged(None, error)
                    else:
                        result = run.exchanged(response, None)
                elif isinstance(effect, Sleep):
                    await self._sleep(effect.seconds)
                    result = run.slept()
                else:
                    assert self._fleet is not None
                    result = await run.aperform_store(effect, self._fleet, self._runtime)
                effect = run.feed(result)
        except Exception as unexpected:  # a broken transport plugin must not strand waiters
            run.crash(unexpected)
        finally:
            run.finish()

    # ------------------------------------------------------------------ API calls

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> ApiResponse:
        """An authenticated API call; returns the answer, or raises its typed error.

        The answers, typed errors, retries and deadline are those the threaded
        ``TokenManager.request`` documents: the core decides them for every runtime.
        """
        run = self._api_call(method, path, json, headers, deadline)
        while (effect := run.next()) is not None:  # the rest is performed in the run
            if isinstance(effect, SendApiRequest):
                try:
                    response = await self._transport.send(effect.request, timeout=effect.timeout)
                except TransportError as error:
                    run.received(error)
                except BaseException as error:  # cancelled, or closed, in flight
                    run.cut(error)
                    raise
                else:
                    run.received(response)
            elif isinstance(effect, NeedToken):  # none fresh in the cache
                try:
                    run.give(await self._get_token_slowly(effect.until))
                except EightyEightPayError as error:
                    run.fail(error)
            elif isinstance(effect, Sleep):
                await self._sleep(effect.seconds)
                run.give(None)
            else:  # the governor with a fleet store to ask (without one, the run performs it)
                run.give(
                    await aperform_api_governor(
                        self._slot,
                        effect,
                        self._clock,
                        self._fleet,
                        self._store_deadline,
                        self._health,
                        self._runtime,
                    )
                )
        assert run.response is not None
        return run.response

    # ------------------------------------------------------------------ lifecycle

    async def _nap(self, seconds: float) -> None:
        """The runtime's sleep of ``seconds``, ended early by :meth:`aclose` on its loop.

        A call waiting for a backoff, a cool-down or the API limits then goes on at once to
        find the manager closed (``ManagerClosed``, nothing sent), as the threaded manager's
        does, instead of holding a shutdown for the rest of its wait.
        """
        lot = self._runtime.lot()
        self._napping[lot] = self._runtime.loop_key()
        try:
            async with self._runtime.deadline(seconds):
                await lot.park()
        except TimeoutError:
            pass
        finally:
            del self._napping[lot]

    async def aclose(self) -> None:
        """Cancel the manager's tasks and close its connections. Idempotent.

        A call of this loop waiting for a backoff, a cool-down or the API limits is woken:
        it raises ``ManagerClosed`` without sending. Calls under way are not cancelled.
        """
        if not self._mark_closed():
            return
        loop = self._runtime.loop_key()
        for lot, napping_on in list(self._napping.items()):
            if napping_on is loop:
                lot.unpark()
        await self._runtime.aclose()
        await self._transport.aclose()
        closer = getattr(self._fleet, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()


class AsyncTokenManager(_AsyncManager, EnvConstructible):
    """The asyncio manager. ``async with AsyncTokenManager(...) as manager:`` closes it."""

    def __init__(self, api_key: str, merchant_id: str, **options: Any) -> None:
        super().__init__(registry().runtime("asyncio")(), api_key, merchant_id, **options)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class TrioTokenManager(_AsyncManager):
    """The trio manager; open it with :func:`open_trio_token_manager`.

    Its background refresh runs in a nursery, so it cannot be built directly: constructing
    it raises :class:`~eightyeightpay.errors.ConfigurationError` naming the opener.
    """

    def __init__(self, *args: Any, _runtime: AsyncRuntime | None = None, **options: Any) -> None:
        if _runtime is None:
            raise ConfigurationError(
                "TrioTokenManager is not built directly: its background refresh needs a "
                "nursery. Use `async with eightyeightpay.open_trio_token_manager(api_key, "
                "merchant_id, ...) as manager:` instead."
            )
        super().__init__(_runtime, *args, **options)


@contextlib.asynccontextmanager
async def open_trio_token_manager(
    api_key: str | None = None,
    merchant_id: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> AsyncIterator[TrioTokenManager]:
    """Open a trio manager whose background refresh runs in a nursery opened here.

    With ``api_key`` and ``merchant_id`` omitted, they come from the ``EIGHTY_EIGHT_PAY_*``
    variables (or ``environ``). Leaving the block cancels the refresh and closes
    connections: nothing of the manager's keeps running. An error raised in the block (or
    by the manager's construction) leaves it as itself, not wrapped in an ``ExceptionGroup``.
    """
    import trio

    if api_key is None or merchant_id is None:
        config = read_environment(environ)
        api_key, merchant_id = config.api_key, config.merchant_id
        config.apply(options)
    try:
        async with trio.open_nursery() as nursery:
            runtime = registry().runtime("trio")(nursery)
            manager = TrioTokenManager(api_key, merchant_id, _runtime=runtime, **options)
            try:
                yield manager
            finally:
                with trio.CancelScope(shield=True):
                    await manager.aclose()
    except BaseExceptionGroup as group:
        # The manager's own tasks never raise (a flight's failure goes to its waiters), so a
        # group of one holds what the block itself raised: give the caller that error, as
        # asyncio's manager does, so that `except InvalidCredentials:` around the block works.
        if len(group.exceptions) != 1:
            raise
        leaf = group.exceptions[0]
        raise leaf from leaf.__cause__
