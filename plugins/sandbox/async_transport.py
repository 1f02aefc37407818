"""The in-process sandbox for the asyncio and trio managers, on a fake clock."""

from __future__ import annotations

from eightyeightpay.errors import ConfigurationError
from eightyeightpay.http import HttpRequest, HttpResponse

from .clock import FakeClock
from .emulator import Sandbox
from .http_limits import H11_ADDS
from .transport import SandboxTransport

__all__ = ["AsyncSandboxTransport"]


class AsyncSandboxTransport:
    """An async transport that hands requests straight to a :class:`Sandbox`, no sockets.

    It runs on a :class:`FakeClock` only: an injected latency then advances the clock
    instead of sleeping, so nothing ever blocks the event loop. Use it for deterministic
    asyncio and trio tests; serve the sandbox with ``SandboxServer`` for real-time ones.

    A request the sandbox server would refuse for its size is answered ``414`` or ``431`` as
    :class:`SandboxTransport` answers it, counting the header the h11 transport (the async
    managers' over HTTP) adds: ``Host``.
    """

    def __init__(self, sandbox: Sandbox, clock: FakeClock) -> None:
        if not isinstance(clock, FakeClock):
            raise ConfigurationError(
                "AsyncSandboxTransport runs on a FakeClock; for real time, serve the sandbox "
                "with SandboxServer and use the h11 transport."
            )
        self._inner = SandboxTransport(sandbox, clock, client_adds=H11_ADDS)

    async def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        """Answer ``request`` from the sandbox (see :class:`SandboxTransport`)."""
        return self._inner.send(request, timeout=timeout)

    async def aclose(self) -> None:
        """Refuse every later send."""
        self._inner.close()
