"""One token manager per process, made lazily from ``settings.EIGHTY_EIGHT_PAY``.

Views call :func:`payments` (sync views) or :func:`async_payments` (async views). The first
call in a process builds the manager; every later call, from any thread or request, gets the
same one. Both share the process's token: with the ``memory`` store a threaded and an
asyncio manager of one process make one token request between them.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.signals import setting_changed

from eightyeightpay import AsyncTokenManager, TokenManager

_lock = threading.Lock()
_managers: dict[type[Any], Any] = {}

Manager = TypeVar("Manager", TokenManager, AsyncTokenManager)


def _made(kind: type[Manager]) -> Manager:
    """The process's manager of ``kind``, built from the settings on first use."""
    manager: Manager | None = _managers.get(kind)
    if manager is None:
        with _lock:
            manager = _managers.get(kind)
            if manager is None:
                config = settings.EIGHTY_EIGHT_PAY
                options = {"store": config.get("STORE", "memory"), **config.get("OPTIONS", {})}
                if config.get("BASE_URL"):
                    options["base_url"] = config["BASE_URL"]
                manager = _managers[kind] = kind(
                    config["API_KEY"], config["MERCHANT_ID"], **options
                )
    return manager


def payments() -> TokenManager:
    """The process's threaded manager, for sync views."""
    return _made(TokenManager)


def async_payments() -> AsyncTokenManager:
    """The process's asyncio manager, for async views."""
    return _made(AsyncTokenManager)


def reset(**changed: Any) -> None:
    """Forget the managers (the next call builds new ones); the old ones are closed.

    Connected to ``setting_changed``, so a test's ``override_settings(EIGHTY_EIGHT_PAY=...)``
    takes effect.
    """
    if changed.get("setting") not in (None, "EIGHTY_EIGHT_PAY"):
        return
    with _lock:
        old = dict(_managers)
        _managers.clear()
    for manager in old.values():
        if isinstance(manager, AsyncTokenManager):
            async_to_sync(manager.aclose)()
        else:
            manager.close()


setting_changed.connect(reset)
