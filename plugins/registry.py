"""Finding plugins: the built-in ones, third parties' entry points, and the blocklist.

The process's :func:`registry` loads a built-in plugin only when one of its names is first
asked for (a threaded manager with the memory store imports neither asyncio nor h11 nor a
Redis or Memcached client): :data:`BUILT_IN_NAMES` says which names each built-in module
registers. Third-party plugins are loaded from their entry points when the registry is
built, as before. :func:`plugin_manager` still registers every built-in module at once.
"""

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

__all__ = [
    "BUILT_IN_NAMES",
    "DEFAULT_PLUGINS",
    "DISABLE_VARIABLE",
    "Registry",
    "collect",
    "plugin_manager",
    "registry",
]

DEFAULT_PLUGINS: tuple[str, ...] = (
    "eightyeightpay.plugins.memory",
    "eightyeightpay.plugins.urllib3_transport",
    "eightyeightpay.plugins.h11_transport",
    "eightyeightpay.plugins.redis_store",
    "eightyeightpay.plugins.memcached_store",
    "eightyeightpay.plugins.runtimes",
)
"""Built-in plugins, registered before third-party ones."""

KINDS = ("stores", "transports", "async_transports", "runtimes")

BUILT_IN_NAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "eightyeightpay.plugins.memory": (("stores", "memory"),),
    "eightyeightpay.plugins.urllib3_transport": (("transports", "urllib3"),),
    "eightyeightpay.plugins.h11_transport": (("async_transports", "h11"),),
    "eightyeightpay.plugins.redis_store": (("stores", "redis"),),
    "eightyeightpay.plugins.memcached_store": (("stores", "memcached"),),
    "eightyeightpay.plugins.runtimes": (("runtimes", "asyncio"), ("runtimes", "trio")),
}
"""What each of :data:`DEFAULT_PLUGINS` registers, as (kind, name): read without importing it.

A test checks it against what the modules' hooks really register.
"""

DISABLE_VARIABLE = "EIGHTY_EIGHT_PAY_DISABLE_PLUGINS"
"""Comma-separated plugin names (entry-point or module names) that must not be loaded."""


def _blocked() -> set[str]:
    return {
        name.strip() for name in os.environ.get(DISABLE_VARIABLE, "").split(",") if name.strip()
    }


def plugin_manager(*, built_in: bool = True) -> pluggy.PluginManager:
    """A fresh plugin manager with the built-in plugins and the third-party entry points.

    With ``built_in=False``, only the third-party entry points (what :func:`registry` loads
    eagerly; the built-in modules it imports on first use of one of their names).
    """
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(EightyEightPayHookspecs)
    blocked = _blocked()
    for name in blocked:
        manager.set_blocked(name)
    if built_in:
        for module_name in DEFAULT_PLUGINS:
            if module_name not in blocked:
                module: ModuleType = importlib.import_module(module_name)
                manager.register(module, name=module_name)
    manager.load_setuptools_entrypoints(PROJECT)
    return manager


class _BuiltIn:
    """A built-in factory not loaded yet: calling it (or :func:`_pick`) imports its module."""

    __slots__ = ("kind", "module", "name")

    def __init__(self, module: str, kind: str, name: str) -> None:
        self.module, self.kind, self.name = module, kind, name

    def load(self) -> StoreFactory:
        """Import the module and return the factory its hook registers under this name."""
        found: dict[str, StoreFactory] = {}
        module = importlib.import_module(self.module)
        getattr(module, f"eightyeightpay_register_{self.kind}")(
            register=functools.partial(_register, found)
        )
        return found[self.name]

    def __call__(self, *args: object, **options: object) -> object:
        return self.load()(*args, **options)

    def __repr__(self) -> str:
        return f"<built-in {self.kind[:-1]} {self.name!r} from {self.module}, not loaded yet>"


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
        factory = known[name]
    except KeyError:
        names = ", ".join(sorted(known)) or "none"
        raise ConfigurationError(
            f"No {kind} named {name!r} is installed (known: {names}). Install the plugin that "
            f"provides it, or check {DISABLE_VARIABLE}."
        ) from None
    if isinstance(factory, _BuiltIn):
        factory = known[name] = factory.load()
    return factory


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
    """The process's registry, built on first use.

    Third-party plugins are loaded now; a built-in one when one of its names is first used.
    """
    found = collect(plugin_manager(built_in=False))
    blocked = _blocked()
    tables = dict(zip(KINDS, attrs.astuple(found, recurse=False), strict=True))
    for module_name in DEFAULT_PLUGINS:
        if module_name not in blocked:
            for kind, name in BUILT_IN_NAMES[module_name]:
                _register(tables[kind], name, _BuiltIn(module_name, kind, name))
    return found
