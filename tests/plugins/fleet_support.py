"""A test fleet: managers that behave like separate processes, each with its own store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eightyeightpay import Token
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.plugins.fleet import FleetStore
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, SandboxServer


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
