"""``EightyEightPayRequestsAuth``: a ``requests`` auth that uses a ``TokenManager``'s tokens.

A 401 invalidates the token that was used, and the prepared request is sent once more with
a new token through the same connection adapter; the 401 stays in the answer's ``history``.
Connection errors are requests' own and are never retried here: a charge that may have
reached 88Pay must be looked up, not sent again.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, NoReturn

from requests import PreparedRequest, Response
from requests.auth import AuthBase
from requests.exceptions import UnrewindableBodyError
from requests.utils import rewind_body

from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.tokens import Token

from . import auth_not_picklable, check_origin, same_origin

__all__ = ["EightyEightPayRequestsAuth"]

log = logging.getLogger("eightyeightpay")


def _authenticate(request: PreparedRequest, token: Token) -> None:
    for name, value in token.auth_headers():
        request.headers[name] = value
    if request.body is not None and request.body != b"" and request.body != "":
        request.headers.setdefault("Content-Type", "application/json")


class EightyEightPayRequestsAuth(AuthBase):
    """Adds the 88Pay token and session to requests sent with ``auth=``.

    ``requests.post(url, json=..., auth=EightyEightPayRequestsAuth(manager))``, or set it
    as ``session.auth``. Only requests to the manager's base URL are authenticated; any
    other host is refused with ``ConfigurationError`` before anything is sent.
    """

    def __init__(self, manager: TokenManager) -> None:
        if not isinstance(manager, TokenManager):
            raise TypeError(
                "EightyEightPayRequestsAuth takes a TokenManager (requests is synchronous), "
                f"not {type(manager).__name__}."
            )
        self.manager = manager
        """The manager whose tokens authenticate the requests."""

    def __reduce__(self) -> NoReturn:
        """Refuse with :class:`~eightyeightpay.errors.NotPicklable`, naming the fix."""
        raise auth_not_picklable("EightyEightPayRequestsAuth")

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        """Add the headers, and a response hook that replays the request once after a 401."""
        check_origin(request.url or "", self.manager.credentials.base_url)
        token = self.manager.get_token()
        _authenticate(request, token)
        # The hook holds the token this request carries: a 401 invalidates that one only,
        # whatever other threads sharing this auth have fetched since.
        request.register_hook("response", functools.partial(self._on_response, token=token))
        return request

    def _on_response(self, response: Response, *, token: Token, **send_options: Any) -> Response:
        # A redirect copies this hook to its request; a 401 from another host is no reason
        # to drop our token, and a replay there would hand it over.
        if response.status_code != 401 or not same_origin(
            response.url, self.manager.credentials.base_url
        ):
            return response
        self.manager.invalidate(token)
        replay = response.request.copy()
        if not isinstance(replay.body, bytes | str | None):
            try:
                rewind_body(replay)
            except UnrewindableBodyError:
                return response  # a consumed stream cannot be sent again
        _authenticate(replay, self.manager.get_token())
        log.debug("401 for %s %s; sending it once more", replay.method, replay.path_url)
        _ = response.content  # read and release the connection so the replay can reuse it
        response.close()
        answer = response.connection.send(replay, **send_options)
        answer.history.append(response)
        answer.request = replay
        return answer

    def __repr__(self) -> str:
        return f"EightyEightPayRequestsAuth({self.manager!r})"
