"""The ``asyncio`` and ``trio`` runtimes: the event loops' primitives the async drivers use.

Each implements :class:`~eightyeightpay.ports.AsyncRuntime`: waiting for a flight to settle
(woken from any thread), sleeping, a deadline, TCP+TLS streams, and background tasks owned by
the manager (never by the caller that happened to start them). The async manager and the h11
client are written once against that port.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from eightyeightpay.credentials import CacheKey
from eightyeightpay.fleet import StoredToken
from eightyeightpay.machine import Settled
from eightyeightpay.ports import (
    AsyncFleetOperations,
    AsyncStream,
    FleetOperations,
    FleetStorePort,
    Job,
    ReadValue,
    Waiter,
)

from .hookspecs import RuntimeFactory, hookimpl

if TYPE_CHECKING:
    import trio

__all__ = ["AsyncioRuntime", "TrioRuntime"]


# --------------------------------------------------------------------------- asyncio


class _AsyncioWaiter:
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._future: asyncio.Future[Settled] = self._loop.create_future()

    def __call__(self, settled: Settled) -> None:
        try:
            same_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            same_loop = False
        if same_loop:  # no self-pipe write per waiter when woken from the loop itself
            self._loop.call_soon(self._resolve, settled)
        else:
            self._loop.call_soon_threadsafe(self._resolve, settled)

    def _resolve(self, settled: Settled) -> None:
        if not self._future.done():
            self._future.set_result(settled)

    async def wait(self, timeout: float) -> Settled | None:
        try:
            async with asyncio.timeout(timeout):
                return await self._future
        except TimeoutError:
            return None


class _AsyncioStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def send_all(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def receive_some(self, max_bytes: int) -> bytes:
        return await self._reader.read(max_bytes)

    async def aclose(self) -> None:
        # Abort: a graceful TLS close waits for the peer's reply (up to asyncio's 30 s TLS
        # shutdown timeout), which a stalled or hostile server never sends.
        self._writer.transport.abort()
        await asyncio.sleep(0)  # let the transport run its connection_lost and free the socket


class _SharedTimer:
    """One timer for every deadline scope open on a loop: it is due at the earliest deadline.

    ``asyncio.timeout`` schedules a timer when a scope opens and cancels it when the scope
    closes, which on a request path costs more than the rest of the deadline's work; most
    scopes close long before their deadline. Here a scope that opens with a later deadline
    than the timer's (the usual case: equal timeouts, later starts) schedules nothing; when
    the timer fires it expires the scopes that are due and moves on to the earliest of the
    others.
    """

    __slots__ = ("_due", "_handle", "_open", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        """The loop whose scopes this timer watches."""
        self._open: set[_AsyncioDeadline] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._due = math.inf

    def add(self, scope: _AsyncioDeadline) -> None:
        """Watch ``scope`` until :meth:`discard`."""
        self._open.add(scope)
        if scope.when < self._due:
            self._schedule(scope.when)

    def discard(self, scope: _AsyncioDeadline) -> None:
        """Stop watching ``scope`` (it has closed)."""
        self._open.discard(scope)

    def _schedule(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self.loop.call_at(when, self._fire)
        self._due = when

    def _fire(self) -> None:
        # The loop runs a timer once its time is near enough; what was due then is due now.
        limit = max(self._due, self.loop.time())
        self._handle, self._due = None, math.inf
        earliest = math.inf
        for scope in list(self._open):
            if scope.when <= limit:
                self._open.discard(scope)
                scope.expire()
            elif scope.when < earliest:
                earliest = scope.when
        if earliest < math.inf:
            self._schedule(earliest)


class _AsyncioDeadline(contextlib.AbstractAsyncContextManager[object]):
    """A deadline scope on a :class:`_SharedTimer`, with ``asyncio.timeout``'s semantics.

    When the deadline passes, the task is cancelled; the scope turns that cancellation (and
    only that one) into :class:`TimeoutError`. A cancellation from elsewhere goes through.
    """

    __slots__ = ("_cancelling", "_expired", "_task", "_timer", "when")

    def __init__(self, timer: _SharedTimer, when: float) -> None:
        self._timer = timer
        self.when = when
        """Loop time at which the scope expires."""
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._expired = False

    async def __aenter__(self) -> object:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline scope must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._timer.add(self)
        return self

    def expire(self) -> None:
        """The deadline has passed: cancel the task inside the scope."""
        assert self._task is not None
        self._expired = True
        self._task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._timer.discard(self)
        if self._expired:
            assert self._task is not None
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc


class AsyncioRuntime:
    """asyncio: tasks kept in a set and cancelled on close."""

    name = "asyncio"
    broken_stream_errors: tuple[type[BaseException], ...] = (OSError, asyncio.IncompleteReadError)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._timer: _SharedTimer | None = None

    def waiter(self) -> Waiter:
        """A waiter on the running loop."""
        return _AsyncioWaiter()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the loop."""
        await asyncio.sleep(seconds)

    def deadline(self, seconds: float) -> contextlib.AbstractAsyncContextManager[object]:
        """A scope that raises TimeoutError once ``seconds`` have passed, as asyncio.timeout.

        Every request enters one; the scopes of a loop share one timer (see
        :class:`_SharedTimer`) instead of scheduling and cancelling a timer each.
        """
        loop = asyncio.get_running_loop()
        timer = self._timer
        if timer is None or timer.loop is not loop:
            # A manager used from another loop gets a new timer; scopes still open on the
            # old one keep it, and it keeps working on its own loop.
            timer = self._timer = _SharedTimer(loop)
        return _AsyncioDeadline(timer, loop.time() + seconds)

    async def connect(self, host: str, port: int, tls: ssl.SSLContext | None) -> AsyncStream:
        """asyncio.open_connection, with the handshake done before returning."""
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname=host if tls else None
        )
        return _AsyncioStream(reader, writer)

    def spawn(self, job: Job, on_drop: Callable[[], None]) -> None:
        """Start ``job`` as a task kept until it ends or :meth:`aclose` cancels it."""
        if self._closed:
            on_drop()
            return
        started = False

        async def runner() -> None:
            nonlocal started
            started = True
            await job()

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if not started:  # cancelled before its first step: the job never ran
                on_drop()

        task = asyncio.get_running_loop().create_task(runner())
        self._tasks.add(task)
        task.add_done_callback(done)

    def fleet_operations(self, store: FleetStorePort) -> AsyncFleetOperations:
        """The store's asyncio client (closed by the manager)."""
        return store.async_operations()

    async def aclose(self) -> None:
        """Cancel every task and wait for them."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


# --------------------------------------------------------------------------- trio


class _TrioWaiter:
    def __init__(self) -> None:
        import trio

        self._event = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        self._settled: Settled | None = None

    def __call__(self, settled: Settled) -> None:
        self._token.run_sync_soon(self._resolve, settled)

    def _resolve(self, settled: Settled) -> None:
        if self._settled is None:
            self._settled = settled
            self._event.set()

    async def wait(self, timeout: float) -> Settled | None:
        import trio

        with trio.move_on_after(timeout):
            await self._event.wait()
        return self._settled


class _TrioStream:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream

    async def send_all(self, data: bytes) -> None:
        await self._stream.send_all(data)

    async def receive_some(self, max_bytes: int) -> bytes:
        return bytes(await self._stream.receive_some(max_bytes))

    async def aclose(self) -> None:
        import trio

        await trio.aclose_forcefully(self._stream)


class _OffLoop:
    """Blocking store operations run by trio in worker threads."""

    def __init__(self, operations: FleetOperations) -> None:
        self._operations = operations

    async def _run(self, method: Callable[..., Any], *args: Any) -> Any:
        import trio

        return await trio.to_thread.run_sync(method, *args, abandon_on_cancel=True)

    async def read(self, key: CacheKey) -> ReadValue:
        result: ReadValue = await self._run(self._operations.read, key)
        return result

    async def acquire(self, key: CacheKey, owner: str, ttl: float) -> bool:
        return bool(await self._run(self._operations.acquire, key, owner, ttl))

    async def reserve(self, key: CacheKey, per_minute: int, per_hour: int) -> float:
        return float(await self._run(self._operations.reserve, key, per_minute, per_hour))

    async def write(self, key: CacheKey, token: StoredToken, ttl: float) -> None:
        await self._run(self._operations.write, key, token, ttl)

    async def cool_down(self, key: CacheKey, seconds: float) -> None:
        await self._run(self._operations.cool_down, key, seconds)

    async def release(self, key: CacheKey, owner: str) -> None:
        await self._run(self._operations.release, key, owner)


class _TrioDeadline(contextlib.AbstractAsyncContextManager[object]):
    """``trio.fail_after`` raising :class:`TimeoutError`, as asyncio's timeout does.

    A plain class: every request enters one, and a generator-based context manager costs
    several times more per use.
    """

    __slots__ = ("_scope",)

    def __init__(self, seconds: float) -> None:
        import trio

        self._scope = trio.move_on_after(seconds)

    async def __aenter__(self) -> object:
        return self._scope.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        swallowed = self._scope.__exit__(exc_type, exc, tb)
        if self._scope.cancelled_caught:
            raise TimeoutError from None
        return swallowed


class TrioRuntime:
    """trio: background tasks run in a nursery the caller opened."""

    name = "trio"

    def __init__(self, nursery: trio.Nursery) -> None:
        import trio

        self._nursery = nursery
        self._scopes: set[trio.CancelScope] = set()
        self._closed = False
        self.broken_stream_errors: tuple[type[BaseException], ...] = (
            OSError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
        )

    def waiter(self) -> Waiter:
        """A waiter on the running trio run."""
        return _TrioWaiter()

    async def sleep(self, seconds: float) -> None:
        """trio.sleep."""
        import trio

        await trio.sleep(seconds)

    def deadline(self, seconds: float) -> contextlib.AbstractAsyncContextManager[object]:
        """A trio cancel scope that raises TimeoutError once ``seconds`` have passed."""
        return _TrioDeadline(seconds)

    async def connect(self, host: str, port: int, tls: ssl.SSLContext | None) -> AsyncStream:
        """trio.open_tcp_stream, wrapped in TLS with the handshake done before returning."""
        import trio

        tcp = await trio.open_tcp_stream(host, port)
        if tls is None:
            return _TrioStream(tcp)
        secure = trio.SSLStream(tcp, tls, server_hostname=host, https_compatible=True)
        try:
            await secure.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(secure)
            raise
        return _TrioStream(secure)

    def spawn(self, job: Job, on_drop: Callable[[], None]) -> None:
        """Start ``job`` in the manager's nursery, under a cancel scope of its own."""
        import trio

        if self._closed:
            on_drop()
            return
        scope = trio.CancelScope()
        self._scopes.add(scope)

        async def runner() -> None:
            try:
                with scope:
                    await job()
            finally:
                self._scopes.discard(scope)

        self._nursery.start_soon(runner)

    def fleet_operations(self, store: FleetStorePort) -> AsyncFleetOperations:
        """The store's blocking operations, each run in a worker thread off the loop."""
        return _OffLoop(store.operations())

    async def aclose(self) -> None:
        """Cancel the manager's tasks; the caller's own code in the block runs on."""
        self._closed = True
        for scope in list(self._scopes):
            scope.cancel()


@hookimpl
def eightyeightpay_register_runtimes(register: Callable[[str, RuntimeFactory], None]) -> None:
    """Register the ``asyncio`` and ``trio`` runtimes."""
    register("asyncio", AsyncioRuntime)
    register("trio", TrioRuntime)
