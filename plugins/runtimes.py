"""The ``asyncio`` and ``trio`` runtimes: the event loops' primitives the async drivers use.

Each implements :class:`~eightyeightpay.ports.AsyncRuntime`: waiting for a flight to settle
(woken from any thread), sleeping, a deadline, TCP+TLS streams, and background tasks owned by
the manager (never by the caller that happened to start them). The async manager and the h11
client are written once against that port.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import select
import ssl
from collections.abc import AsyncGenerator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from eightyeightpay.machine import Settled
from eightyeightpay.ports import (
    AsyncFleetOperations,
    AsyncStream,
    FleetStorePort,
    Job,
    Lot,
    Waiter,
)

from .fleet import InThreads
from .hookspecs import RuntimeFactory, hookimpl
from .process import ProcessBound

if TYPE_CHECKING:
    import trio

__all__ = ["AsyncioRuntime", "TrioRuntime"]

_T = TypeVar("_T")


# --------------------------------------------------------------------------- asyncio


WAIT_GRANULARITY = 1 / 32
"""Waits end up to this many seconds after their deadline, so that the waiters of one
flight, whose deadlines differ by microseconds, share one group and one timer."""


def _bucket(when: float) -> float:
    return math.ceil(when / WAIT_GRANULARITY) * WAIT_GRANULARITY


class _WaitGroup:
    """The waiters whose waits end at one (rounded) time on one loop: one timer entry.

    A waiter woken or cancelled earlier stays listed (a list append is the whole cost of
    joining) and is skipped when the group expires.
    """

    __slots__ = ("waiters", "when")

    def __init__(self, when: float) -> None:
        self.when = when
        self.waiters: list[_AsyncioWaiter | _TrioWaiter] = []

    def expire(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.expire()


class _AsyncioWaiter:
    """One task waiting for a flight: a future, and a place in its deadline's wait group.

    No timer of its own: the waiters of one flight share its deadline, so the loop's
    :class:`_SharedTimer` holds one entry for all of them (issue 15: a timeout scope per
    waiter cost a timer each, 10,005 for 10,000 waiters).
    """

    __slots__ = ("_future", "_runtime")

    def __init__(self, runtime: AsyncioRuntime) -> None:
        self._runtime = runtime
        self._future: asyncio.Future[Settled | None] = asyncio.get_running_loop().create_future()

    def __call__(self, settled: Settled) -> None:
        future = self._future
        if future.done():
            return
        loop = future.get_loop()
        try:
            same_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            same_loop = False
        if same_loop:  # woken by the flight's own task: no call_soon, no self-pipe write
            future.set_result(settled)
        else:
            loop.call_soon_threadsafe(self.expire, settled)

    def expire(self, settled: Settled | None = None) -> None:
        """End the wait with ``settled`` (None: the deadline passed). On the loop only."""
        if not self._future.done():
            self._future.set_result(settled)

    async def wait(self, timeout: float) -> Settled | None:
        loop = self._future.get_loop()
        self._runtime.timer(loop).group(loop.time() + timeout).waiters.append(self)
        return await self._future


def _readable(fileno: int) -> Callable[[], bool]:
    """A probe: True if the descriptor has something to read (bytes, or the peer's end) now.

    One poll object per stream, registered once: a kept-alive stream is probed before each
    reuse.
    """
    poller = select.poll()
    poller.register(fileno, select.POLLIN | select.POLLERR | select.POLLHUP)
    poll = poller.poll
    return lambda: bool(poll(0))


class _AsyncioLot:
    __slots__ = ("_parked",)

    def __init__(self) -> None:
        self._parked: collections.deque[asyncio.Future[None]] = collections.deque()

    async def park(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self._parked.append(future)
        await future

    def unpark(self) -> None:
        while self._parked:
            future = self._parked.popleft()
            if not future.done():  # a cancelled one is skipped: the turn goes to the next
                future.set_result(None)
                return


class _AsyncioStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        sock = writer.transport.get_extra_info("socket")
        fileno: int = sock.fileno() if sock is not None else -1
        self._readable = _readable(fileno) if fileno >= 0 else None

    def is_stale(self) -> bool:
        if self._writer.transport.is_closing() or self._reader.at_eof():
            return True
        return self._readable is None or self._readable()

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


class _Expiring(Protocol):
    """What a :class:`_SharedTimer` watches: a deadline scope or a wait group."""

    when: float

    def expire(self) -> None: ...


class _SharedTimer:
    """One timer for every deadline scope open on a loop: it is due at the earliest deadline.

    ``asyncio.timeout`` schedules a timer when a scope opens and cancels it when the scope
    closes, which on a request path costs more than the rest of the deadline's work; most
    scopes close long before their deadline. Here a scope that opens with a later deadline
    than the timer's (the usual case: equal timeouts, later starts) schedules nothing; when
    the timer fires it expires the scopes that are due and moves on to the earliest of the
    others.
    """

    __slots__ = ("_due", "_groups", "_handle", "_open", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        """The loop whose scopes this timer watches."""
        self._open: set[_Expiring] = set()
        self._groups: dict[float, _WaitGroup] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._due = math.inf

    def group(self, when: float) -> _WaitGroup:
        """The wait group ending at ``when`` rounded up to :data:`WAIT_GRANULARITY`."""
        when = _bucket(when)
        group = self._groups.get(when)
        if group is None:
            group = self._groups[when] = _WaitGroup(when)
            self.add(group)
        return group

    def add(self, scope: _Expiring) -> None:
        """Watch ``scope`` until :meth:`discard`."""
        self._open.add(scope)
        if scope.when < self._due:
            self._schedule(scope.when)

    def discard(self, scope: _Expiring) -> None:
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
                if isinstance(scope, _WaitGroup):
                    del self._groups[scope.when]
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


class AsyncioRuntime(ProcessBound):
    """asyncio: tasks kept in a set and cancelled on close.

    A forked child forgets the parent's tasks and timer: they belong to the parent's loop,
    which never runs in the child (nothing is cancelled or woken through it).
    """

    name = "asyncio"
    broken_stream_errors: tuple[type[BaseException], ...] = (OSError, asyncio.IncompleteReadError)

    def __init__(self) -> None:
        super().__init__()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._timer: _SharedTimer | None = None

    def _start_afresh(self) -> None:
        self._tasks = set()
        self._timer = None

    def waiter(self) -> Waiter:
        """A waiter for the running loop."""
        return _AsyncioWaiter(self)

    def loop_key(self) -> object:
        """The running loop."""
        return asyncio.get_running_loop()

    def lot(self) -> Lot:
        """A lot of futures on the running loop."""
        return _AsyncioLot()

    def timer(self, loop: asyncio.AbstractEventLoop) -> _SharedTimer:
        """The shared timer of ``loop`` for this runtime's deadlines and waiters."""
        timer = self._timer
        if timer is None or timer.loop is not loop:
            # A manager used from another loop gets a new timer; scopes still open on the
            # old one keep it, and it keeps working on its own loop.
            timer = self._timer = _SharedTimer(loop)
        return timer

    async def sleep(self, seconds: float) -> None:
        """Sleep on the loop."""
        await asyncio.sleep(seconds)

    def deadline(self, seconds: float) -> contextlib.AbstractAsyncContextManager[object]:
        """A scope that raises TimeoutError once ``seconds`` have passed, as asyncio.timeout.

        Every request enters one; the scopes of a loop share one timer (see
        :class:`_SharedTimer`) instead of scheduling and cancelling a timer each.
        """
        loop = asyncio.get_running_loop()
        return _AsyncioDeadline(self.timer(loop), loop.time() + seconds)

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
        """The store's asyncio operations, a client per event loop (closed by the manager)."""
        return cast(AsyncFleetOperations, _PerLoopOperations(store.async_operations))

    async def aclose(self) -> None:
        """Cancel every task and wait for those of the running loop.

        A task of another loop that still runs is cancelled through that loop; one of a
        closed loop ended when its loop did (``asyncio.run`` cancels what is left).
        """
        self._closed = True
        here = asyncio.get_running_loop()
        tasks = [task for task in self._tasks if task.get_loop() is here]
        for task in tasks:
            task.cancel()
        for task in list(self._tasks):
            loop = task.get_loop()
            if loop is not here and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # closed meanwhile
                    loop.call_soon_threadsafe(task.cancel)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class _PerLoopOperations:
    """A fleet store's asyncio operations, built anew for each event loop that uses them.

    An asyncio client's connections belong to the loop that opened them: used from the next
    ``asyncio.run()`` they fail (or, worse, touch a closed loop). Each loop gets its own
    operations; when the loop ends under ``asyncio.run()`` (or anything else that calls
    ``loop.shutdown_asyncgens()``), its operations are closed on it, while it still runs,
    through an async generator parked for that purpose (the loop closes open async
    generators before it closes). Operations of a loop closed some other way are dropped.
    """

    def __init__(self, build: Callable[[], AsyncFleetOperations]) -> None:
        self._build = build
        self._by_loop: dict[asyncio.AbstractEventLoop, tuple[Any, Any]] = {}
        self._pid = os.getpid()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy, pickle and friends probing: not an operation
            raise AttributeError(name)
        return getattr(self._current(), name)

    def _current(self) -> Any:
        if self._pid != os.getpid():  # a forked child: the parent's loops and clients are not ours
            self._by_loop, self._pid = {}, os.getpid()
        loop = asyncio.get_running_loop()
        entry = self._by_loop.get(loop)
        if entry is None:
            for old in [old for old in self._by_loop if old.is_closed()]:
                self._abandon(self._by_loop.pop(old))
            operations = self._build()
            keeper = _close_when_loop_ends(operations)
            with contextlib.suppress(StopIteration):  # runs to its yield: the loop now knows it
                keeper.asend(None).send(None)
            entry = self._by_loop[loop] = (operations, keeper)
        return entry[0]

    @staticmethod
    def _abandon(entry: tuple[Any, Any]) -> None:
        # Its loop is closed: nothing of it can run. End the keeper here so that no
        # finalizer tries to schedule its close on that loop later.
        with contextlib.suppress(BaseException):
            entry[1].aclose().send(None)

    async def aclose(self) -> None:
        """Close the running loop's operations (and forget those of closed loops)."""
        here = asyncio.get_running_loop()
        for loop in list(self._by_loop):
            if loop is here:
                _, keeper = self._by_loop.pop(loop)
                await keeper.aclose()  # closes the operations, on this loop
            elif loop.is_closed():
                self._abandon(self._by_loop.pop(loop))


async def _close_when_loop_ends(operations: Any) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        closer = getattr(operations, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()


# --------------------------------------------------------------------------- trio


class _TrioWaiter:
    """One task waiting for a flight: parked, with a place in its deadline's wait group.

    No event and no cancel scope of its own: the run's :class:`_TrioTimer` wakes a whole
    group at its deadline, and a cancelled waiter simply leaves.
    """

    __slots__ = ("_done", "_settled", "_task", "_token")

    def __init__(self) -> None:
        import trio

        self._token = trio.lowlevel.current_trio_token()
        self._task: trio.lowlevel.Task | None = None
        self._settled: Settled | None = None
        self._done = False

    def __call__(self, settled: Settled) -> None:
        import trio

        try:
            same_run = trio.lowlevel.current_trio_token() is self._token
        except RuntimeError:
            same_run = False
        if same_run:
            self.expire(settled)
        else:
            self._token.run_sync_soon(self.expire, settled)

    def expire(self, settled: Settled | None = None) -> None:
        """End the wait with ``settled`` (None: the deadline passed). In the run only."""
        import trio

        if self._done:
            return
        self._done = True
        self._settled = settled
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    async def wait(self, timeout: float) -> Settled | None:
        import trio

        if self._done:
            await trio.lowlevel.checkpoint()
            return self._settled
        self._task = trio.lowlevel.current_task()
        _TrioTimer.current().group(trio.current_time() + timeout).waiters.append(self)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._done, self._task = True, None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        return self._settled


class _TrioTimer:
    """The wait groups of one trio run, expired by one system task sleeping until the earliest."""

    _run_var: Any = None

    def __init__(self) -> None:
        import trio

        self._groups: dict[float, _WaitGroup] = {}
        self._due = math.inf
        self._scope: trio.CancelScope | None = None
        trio.lowlevel.spawn_system_task(self._run, name="eightyeightpay-wait-groups")

    @classmethod
    def current(cls) -> _TrioTimer:
        """The timer of the current run, started on first need."""
        import trio

        if cls._run_var is None:
            cls._run_var = trio.lowlevel.RunVar("eightyeightpay_wait_groups")
        try:
            timer: _TrioTimer = cls._run_var.get()
        except LookupError:
            timer = cls()
            cls._run_var.set(timer)
        return timer

    def group(self, when: float) -> _WaitGroup:
        """The wait group ending at ``when`` rounded up to :data:`WAIT_GRANULARITY`."""
        when = _bucket(when)
        group = self._groups.get(when)
        if group is None:
            group = self._groups[when] = _WaitGroup(when)
            if when < self._due:
                self._due = when
                if self._scope is not None:
                    self._scope.deadline = when
        return group

    async def _run(self) -> None:
        import trio

        while True:
            with trio.CancelScope(deadline=self._due) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            now = trio.current_time()
            for when in [when for when in self._groups if when <= now]:
                self._groups.pop(when).expire()
            self._due = min(self._groups, default=math.inf)


class _TrioLot:
    __slots__ = ("_lot",)

    def __init__(self, lot: trio.lowlevel.ParkingLot) -> None:
        self._lot = lot

    async def park(self) -> None:
        await self._lot.park()

    def unpark(self) -> None:
        self._lot.unpark()


class _TrioStream:
    def __init__(self, stream: trio.abc.Stream, fileno: int) -> None:
        self._stream = stream
        self._readable = _readable(fileno)

    def is_stale(self) -> bool:
        return self._readable()

    async def send_all(self, data: bytes) -> None:
        await self._stream.send_all(data)

    async def receive_some(self, max_bytes: int) -> bytes:
        return bytes(await self._stream.receive_some(max_bytes))

    async def aclose(self) -> None:
        import trio

        await trio.aclose_forcefully(self._stream)


class _OffLoop(InThreads):
    """Blocking store operations run by trio in worker threads."""

    async def _run(self, method: Callable[..., _T], *args: Any) -> _T:
        import trio

        result: _T = await trio.to_thread.run_sync(method, *args, abandon_on_cancel=True)
        return result


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

    def loop_key(self) -> object:
        """The running trio run's token."""
        import trio

        return trio.lowlevel.current_trio_token()

    def lot(self) -> Lot:
        """A lot on trio's own parking lot."""
        import trio

        return _TrioLot(trio.lowlevel.ParkingLot())

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
        fileno = tcp.socket.fileno()
        if tls is None:
            return _TrioStream(tcp, fileno)
        secure = trio.SSLStream(tcp, tls, server_hostname=host, https_compatible=True)
        try:
            await secure.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(secure)
            raise
        return _TrioStream(secure, fileno)

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
