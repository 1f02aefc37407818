"""A test fleet: managers that behave like separate processes, each with its own store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from eightyeightpay import BudgetRequest, Token
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.credentials import CacheKey
from eightyeightpay.fleet import TOKEN_BUDGET
from eightyeightpay.plugins.fleet import FleetStore
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, SandboxServer
from eightyeightpay.ports import FleetOperations


def reserve_wait(
    ops: FleetOperations,
    key: CacheKey,
    per_minute: int,
    per_hour: int,
    minute_span: float = 60.0,
    hour_span: float = 3600.0,
) -> float:
    """One token-budget reservation under the budget's current epoch; the wait (0: recorded).

    The first call learns the epoch (and records nothing), as a process's first contact does.
    """
    request = BudgetRequest(TOKEN_BUDGET, per_minute, per_hour, minute_span, hour_span)
    _, epoch = ops.reserve(key, request)
    wait, same = ops.reserve(key, attrs.evolve(request, epoch=epoch))
    assert same == epoch
    return wait


class Fleet:
    """Managers on one emulator, each with a store of its own from ``make_store``."""

    def __init__(self, server: SandboxServer, make_store: Callable[..., FleetStore]) -> None:
        assert server.certificates is not None
        self.server = server
        self.make_store = make_store
        self.options: dict[str, Any] = {
            "base_url": server.url,
            "ca_bundle": str(server.certificates.ca_file),
        }
        self.stores: list[FleetStore] = []
        self.managers: list[TokenManager] = []

    def store(self, **options: Any) -> Any:
        store = self.make_store(**options)
        self.stores.append(store)
        return store

    def process(self, **options: Any) -> TokenManager:
        store = options.pop("store", None) or self.store()
        manager = TokenManager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store=store, **self.options, **options
        )
        self.managers.append(manager)
        return manager

    def token_requests(self) -> int:
        return self.server.sandbox.stats()["token_requests"]

    def close(self) -> None:
        for manager in self.managers:
            manager.close()
        for store in self.stores:
            store.close()  # type: ignore[attr-defined]


def secrets_of(token: Token) -> list[str]:
    """What an encrypted store must not hold in clear: the token, each JWT segment, the session and the key.

    The segments (header, claims, signature) are long enough that random ciphertext cannot
    contain one by chance, unlike a short prefix such as ``eyJ``; the header segment is the
    same for every token the emulator issues, so it also catches any other JWT stored in clear.
    """
    return [token.access_token, *token.access_token.split("."), token.session_id, DEFAULT_API_KEY]
