"""``EightyEightPayAuth``: an ``httpx.Auth`` that authenticates requests with a token manager.

Sync clients take a ``TokenManager``; async clients (asyncio or trio) take an
``AsyncTokenManager`` or the manager of ``open_trio_token_manager``. A 401 invalidates the
token that was used and the request is sent once more with a new token. Transport errors are
httpx's own and are never retried here: a charge that may have reached 88Pay must be looked
up, not sent again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Generator
from typing import NoReturn

import httpx

from eightyeightpay.adapters.async_manager import AsyncTokenManager, TrioTokenManager
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.tokens import Token

from . import auth_not_picklable, check_origin, same_origin

__all__ = ["EightyEightPayAuth"]

log = logging.getLogger("eightyeightpay")

AnyManager = TokenManager | AsyncTokenManager | TrioTokenManager


def _authenticate(request: httpx.Request, token: Token) -> None:
    for name, value in token.auth_headers():
        request.headers[name] = value
    if request.content and "content-type" not in request.headers:
        request.headers["Content-Type"] = "application/json"


class EightyEightPayAuth(httpx.Auth):
    """Adds the 88Pay token and session to every request of an httpx client.

    ``httpx.Client(auth=EightyEightPayAuth(token_manager))`` or
    ``httpx.AsyncClient(auth=EightyEightPayAuth(async_or_trio_manager))``. Only requests to
    the manager's base URL are authenticated; any other host is refused with
    ``ConfigurationError`` before anything is sent.
    """

    requires_request_body = True  # the body is kept in memory so a 401 can be replayed

    def __init__(self, manager: AnyManager) -> None:
        if not isinstance(manager, TokenManager | AsyncTokenManager | TrioTokenManager):
            raise TypeError(
                "EightyEightPayAuth takes a TokenManager, an AsyncTokenManager or a trio "
                f"manager, not {type(manager).__name__}."
            )
        self.manager: AnyManager = manager
        """The manager whose tokens authenticate the requests."""

    def __reduce__(self) -> NoReturn:
        """Refuse with :class:`~eightyeightpay.errors.NotPicklable`, naming the fix."""
        raise auth_not_picklable("EightyEightPayAuth")

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Authenticate ``request`` for ``httpx.Client``; replay it once after a 401."""
        manager = self.manager
        if not isinstance(manager, TokenManager):
            raise TypeError(
                f"{type(manager).__name__} is async: use it with httpx.AsyncClient, or give "
                "httpx.Client a TokenManager."
            )
        base_url = manager.credentials.base_url
        check_origin(str(request.url), base_url)
        request.read()
        token = manager.get_token()
        _authenticate(request, token)
        response = yield request
        if response.status_code == 401 and same_origin(str(response.url), base_url):
            manager.invalidate(token)
            log.debug("401 for %s %s; sending it once more", request.method, request.url.path)
            _authenticate(request, manager.get_token())
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Authenticate ``request`` for ``httpx.AsyncClient``; replay it once after a 401."""
        manager = self.manager
        if isinstance(manager, TokenManager):
            raise TypeError(
                "A TokenManager would block the event loop: give httpx.AsyncClient an "
                "AsyncTokenManager (asyncio) or the manager of open_trio_token_manager (trio)."
            )
        base_url = manager.credentials.base_url
        check_origin(str(request.url), base_url)
        await request.aread()
        token = await manager.get_token()
        _authenticate(request, token)
        response = yield request
        if response.status_code == 401 and same_origin(str(response.url), base_url):
            manager.invalidate(token)
            log.debug("401 for %s %s; sending it once more", request.method, request.url.path)
            _authenticate(request, await manager.get_token())
            yield request

    def __repr__(self) -> str:
        return f"EightyEightPayAuth({self.manager!r})"
