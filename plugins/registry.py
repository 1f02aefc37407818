"""Finding plugins: the built-in ones, third parties' entry points, and the blocklist.

The process's :func:`registry` loads a built-in plugin only when one of its names is first
asked for (a threaded manager with the memory store imports neither asyncio nor h11 nor a
Redis or Memcached client): :data:`BUILT_IN_NAMES` says which names each built-in module
registers. Third-party plugins are loaded from their entry points when a name no built-in
plugin has is first asked for (or the registry is listed with :meth:`Registry.everything`),
so a process that uses only built-in names never scans the installed distributions'
metadata. :func:`plugin_manager` still registers every built-in module at once.
"""

from __future__ import annotations

import functools
import importlib
import os
import threading
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
    """A built-in factory not loaded yet: calling it (or a look-up by name) imports its module."""

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


class _EntryPoints:
    """The third-party plugins of :func:`registry`, loaded into it once, when first needed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.loaded = False
        """True once the entry points have been loaded."""

    def load_into(self, tables: Registry) -> None:
        """Load every entry point of the group (once) and add its factories to ``tables``.

        Raises ConfigurationError when a third-party plugin registers a name already taken.
        """
        with self._lock:
            if self.loaded:
                return
            found = collect(plugin_manager(built_in=False))
            for kind in KINDS:
                table = getattr(tables, kind)
                for name, factory in getattr(found, kind).items():
                    _register(table, name, factory)
            self.loaded = True


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
    entry_points: _EntryPoints | None = attrs.field(default=None, repr=False, eq=False)
    """Third-party plugins not loaded yet (:func:`registry`), or None when they are in the
    tables already (:func:`collect`)."""

    def store(self, name: str) -> StoreFactory:
        """The store factory called ``name``, or a ConfigurationError listing the known ones."""
        return self._pick("store", name, self.stores)

    def transport(self, name: str) -> TransportFactory:
        """The transport factory called ``name``, or a ConfigurationError listing the known ones."""
        return self._pick("transport", name, self.transports)

    def async_transport(self, name: str) -> TransportFactory:
        """The async transport factory called ``name``."""
        return self._pick("async transport", name, self.async_transports)

    def runtime(self, name: str) -> RuntimeFactory:
        """The async runtime called ``name``."""
        return self._pick("runtime", name, self.runtimes)

    def everything(self) -> Registry:
        """The registry itself, with the third-party plugins loaded (entry points scanned)."""
        if self.entry_points is not None:
            self.entry_points.load_into(self)
        return self

    def _pick(self, kind: str, name: str, known: dict[str, StoreFactory]) -> StoreFactory:
        if name not in known:  # not built in: look among the third-party plugins
            self.everything()
        try:
            factory = known[name]
        except KeyError:
            names = ", ".join(sorted(known)) or "none"
            raise ConfigurationError(
                f"No {kind} named {name!r} is installed (known: {names}). Install the plugin "
                f"that provides it, or check {DISABLE_VARIABLE}."
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
    stores, transports, async_transports, runtimes = tables
    return Registry(stores, transports, async_transports, runtimes)


def _register(table: dict[str, StoreFactory], name: str, factory: StoreFactory) -> None:
    if name in table:
        raise ConfigurationError(f"Two plugins register the name {name!r}; disable one of them.")
    table[name] = factory


@functools.cache
def registry() -> Registry:
    """The process's registry, built on first use.

    A built-in plugin is loaded when one of its names is first used; the third-party ones
    (entry points) when a name the built-in plugins do not have is first asked for, or by
    :meth:`Registry.everything`.
    """
    blocked = _blocked()
    found = Registry({}, {}, {}, {}, entry_points=_EntryPoints())
    for module_name in DEFAULT_PLUGINS:
        if module_name not in blocked:
            for kind, name in BUILT_IN_NAMES[module_name]:
                _register(getattr(found, kind), name, _BuiltIn(module_name, kind, name))
    return found
