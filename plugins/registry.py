"""Finding plugins: the built-in ones, third parties' entry points, and the blocklist."""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

import attrs
import pluggy

from eightyeightpay.errors import ConfigurationError

from .hookspecs import (
    PROJECT,
    EightyEightPayHookspecs,
    RuntimeFactory,
    StoreFactory,
    TransportFactory,
)

__all__ = ["DEFAULT_PLUGINS", "DISABLE_VARIABLE", "Registry", "plugin_manager", "registry"]

DEFAULT_PLUGINS: tuple[str, ...] = (
    "eightyeightpay.plugins.memory",
    "eightyeightpay.plugins.urllib3_transport",
    "eightyeightpay.plugins.h11_transport",
    "eightyeightpay.plugins.redis_store",
    "eightyeightpay.plugins.memcached_store",
    "eightyeightpay.plugins.runtimes",
)
"""Built-in plugins, registered before third-party ones."""

DISABLE_VARIABLE = "EIGHTY_EIGHT_PAY_DISABLE_PLUGINS"
"""Comma-separated plugin names (entry-point or module names) that must not be loaded."""


def _blocked() -> set[str]:
    return {
        name.strip() for name in os.environ.get(DISABLE_VARIABLE, "").split(",") if name.strip()
    }


def plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager with the built-in plugins and the third-party entry points."""
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(EightyEightPayHookspecs)
    blocked = _blocked()
    for name in blocked:
        manager.set_blocked(name)
    for module_name in DEFAULT_PLUGINS:
        if module_name not in blocked:
            module: ModuleType = importlib.import_module(module_name)
            manager.register(module, name=module_name)
    manager.load_setuptools_entrypoints(PROJECT)
    return manager


@attrs.frozen
class Registry:
    """Factories gathered from every plugin, by name."""

    stores: dict[str, StoreFactory]
    """Token stores."""
    transports: dict[str, TransportFactory]
    """Sync HTTP transports."""
    async_transports: dict[str, TransportFactory]
    """Async HTTP transports."""
    runtimes: dict[str, RuntimeFactory]
    """Async runtimes."""

    def store(self, name: str) -> StoreFactory:
        """The store factory called ``name``, or a ConfigurationError listing the known ones."""
        return _pick("store", name, self.stores)

    def transport(self, name: str) -> TransportFactory:
        """The transport factory called ``name``, or a ConfigurationError listing the known ones."""
        return _pick("transport", name, self.transports)

    def async_transport(self, name: str) -> TransportFactory:
        """The async transport factory called ``name``."""
        return _pick("async transport", name, self.async_transports)

    def runtime(self, name: str) -> RuntimeFactory:
        """The async runtime called ``name``."""
        return _pick("runtime", name, self.runtimes)


def _pick(kind: str, name: str, known: dict[str, StoreFactory]) -> StoreFactory:
    try:
        return known[name]
    except KeyError:
        names = ", ".join(sorted(known)) or "none"
        raise ConfigurationError(
            f"No {kind} named {name!r} is installed (known: {names}). Install the plugin that "
            f"provides it, or check {DISABLE_VARIABLE}."
        ) from None


def collect(manager: pluggy.PluginManager) -> Registry:
    """Ask every plugin of ``manager`` for its factories."""
    tables: list[dict[str, StoreFactory]] = [{}, {}, {}, {}]
    hooks = manager.hook
    for hook, table in zip(
        (
            hooks.eightyeightpay_register_stores,
            hooks.eightyeightpay_register_transports,
            hooks.eightyeightpay_register_async_transports,
            hooks.eightyeightpay_register_runtimes,
        ),
        tables,
        strict=True,
    ):
        hook(register=functools.partial(_register, table))
    return Registry(*tables)


def _register(table: dict[str, StoreFactory], name: str, factory: StoreFactory) -> None:
    if name in table:
        raise ConfigurationError(f"Two plugins register the name {name!r}; disable one of them.")
    table[name] = factory


@functools.cache
def registry() -> Registry:
    """The process's registry, built on first use."""
    return collect(plugin_manager())
