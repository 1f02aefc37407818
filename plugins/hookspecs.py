"""The plugin hooks of eightyeightpay (pluggy project and entry-point group ``eightyeightpay``).

Hooks run once, at setup, and hand back factories through a ``register`` callback. None is
called on the request path (pluggy cannot await, and the cached path must stay cheap).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

__all__ = [
    "PROJECT",
    "RuntimeFactory",
    "StoreFactory",
    "TransportFactory",
    "hookimpl",
    "hookspec",
]

PROJECT = "eightyeightpay"
"""The pluggy project name and the entry-point group third-party plugins use."""

hookspec = pluggy.HookspecMarker(PROJECT)
"""Marks a hook specification."""
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marks a hook implementation in a plugin."""

StoreFactory = Callable[..., Any]
"""Builds a store from keyword options; see :mod:`eightyeightpay.plugins.memory`."""
TransportFactory = Callable[..., Any]
"""Builds a transport from keyword options (``ca_bundle=``...)."""
RuntimeFactory = Callable[..., Any]
"""Builds an async runtime (``asyncio``: no arguments; ``trio``: the nursery to run in)."""


class EightyEightPayHookspecs:
    """The hooks a plugin may implement."""

    @hookspec
    def eightyeightpay_register_stores(self, register: Callable[[str, StoreFactory], None]) -> None:
        """Register token stores by name: ``register("memory", MemoryStore.process_wide)``."""

    @hookspec
    def eightyeightpay_register_transports(
        self, register: Callable[[str, TransportFactory], None]
    ) -> None:
        """Register sync HTTP transports by name: ``register("urllib3", Urllib3Transport)``."""

    @hookspec
    def eightyeightpay_register_async_transports(
        self, register: Callable[[str, TransportFactory], None]
    ) -> None:
        """Register async HTTP transports by name: ``register("h11", AsyncHttp11Transport)``."""

    @hookspec
    def eightyeightpay_register_runtimes(
        self, register: Callable[[str, RuntimeFactory], None]
    ) -> None:
        """Register async runtimes by name: ``register("asyncio", AsyncioRuntime)``."""
