"""Plugins: built-ins, third parties through the entry point, the blocklist, names."""

from __future__ import annotations

import importlib
import pathlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pluggy
import pytest

from eightyeightpay import ConfigurationError
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.plugins import registry as registry_module
from eightyeightpay.plugins.hookspecs import PROJECT, EightyEightPayHookspecs
from eightyeightpay.plugins.memory import MemoryStore
from eightyeightpay.plugins.registry import (
    BUILT_IN_NAMES,
    DEFAULT_PLUGINS,
    KINDS,
    collect,
    plugin_manager,
    registry,
)
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID
from tests.conftest import InProcess


@pytest.fixture
def third_party(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pathlib.Path]:
    """An out-of-tree plugin distribution: its module and its dist-info on sys.path."""
    (tmp_path / "acme_token_store.py").write_text(
        textwrap.dedent("""
        from eightyeightpay.plugins.hookspecs import hookimpl
        from eightyeightpay.plugins.memory import MemoryStore

        class AcmeStore(MemoryStore):
            name = "acme"

        STORE = AcmeStore()

        @hookimpl
        def eightyeightpay_register_stores(register):
            register("acme", lambda: STORE)
    """)
    )
    info = tmp_path / "acme_token_store-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-token-store\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[eightyeightpay]\nacme = acme_token_store\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.cache_clear()
    yield tmp_path
    registry.cache_clear()


def test_built_in_plugins_register_their_factories() -> None:
    found = collect(plugin_manager())
    assert "memory" in found.stores
    assert "urllib3" in found.transports
    assert "h11" in found.async_transports
    assert {"asyncio", "trio"} <= set(found.runtimes)
    assert found.store("memory")() is MemoryStore.process_wide()
    assert DEFAULT_PLUGINS[0] == "eightyeightpay.plugins.memory"


def test_a_third_party_store_is_found_through_its_entry_point_and_used_by_name(
    third_party: pathlib.Path, inproc: InProcess
) -> None:
    assert "acme" in collect(plugin_manager()).stores
    with TokenManager(
        DEFAULT_API_KEY,
        DEFAULT_MERCHANT_ID,
        store="acme",
        transport=inproc.transport,
        clock=inproc.clock,
    ) as manager:
        manager.get_token()
        assert type(manager._slot.machine).__name__ == "TokenMachine"
    import acme_token_store  # type: ignore[import-not-found]

    assert len(acme_token_store.STORE._slots) == 1


def test_the_environment_blocklist_disables_a_plugin(
    third_party: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(registry_module.DISABLE_VARIABLE, "acme")
    assert "acme" not in collect(plugin_manager()).stores
    with pytest.raises(ConfigurationError, match="No store named 'acme'"):
        TokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store="acme")


def test_an_unknown_store_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"known: .*memory.*redis"):
        TokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store="nope")


def test_the_built_in_names_table_says_what_each_built_in_module_registers() -> None:
    for module_name, names in BUILT_IN_NAMES.items():
        manager = pluggy.PluginManager(PROJECT)
        manager.add_hookspecs(EightyEightPayHookspecs)
        manager.register(importlib.import_module(module_name), name=module_name)
        found = collect(manager)
        registered = {(kind, name) for kind in KINDS for name in getattr(found, kind)}
        assert registered == set(names), module_name
    assert set(BUILT_IN_NAMES) == set(DEFAULT_PLUGINS)


def test_a_threaded_manager_with_the_memory_store_loads_no_async_or_fleet_plugin() -> None:
    code = (
        "import sys\n"
        "from eightyeightpay import TokenManager\n"
        "manager = TokenManager('sk_test_sandbox_4f3a9c2e7b1d', 'MCH-COL-TEST-12345')\n"
        "manager.close()\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        ).stdout.split()
    )
    for module in ("asyncio", "h11", "redis", "pymemcache", "trio"):
        assert module not in loaded
    for plugin in ("h11_transport", "redis_store", "memcached_store", "runtimes"):
        assert f"eightyeightpay.plugins.{plugin}" not in loaded
    assert "eightyeightpay.plugins.urllib3_transport" in loaded
    # Deferred too: the entry-point scan (importlib.metadata), TLS until a connection is
    # made, and telemetry unless it is given.
    for module in ("importlib.metadata", "ssl", "eightyeightpay.adapters.telemetry"):
        assert module not in loaded


def test_entry_points_are_scanned_only_for_a_name_no_built_in_plugin_has() -> None:
    code = (
        "import sys\n"
        "from eightyeightpay.errors import ConfigurationError\n"
        "from eightyeightpay.plugins.registry import registry\n"
        "found = registry()\n"
        "found.store('memory'); found.transport('urllib3'); found.runtime('asyncio')\n"
        "assert 'importlib.metadata' not in sys.modules\n"
        "try:\n"
        "    found.store('nope')\n"
        "except ConfigurationError as error:\n"
        "    assert 'memory' in str(error) and 'redis' in str(error)\n"
        "assert 'importlib.metadata' in sys.modules\n"
        "assert found.entry_points is not None and found.entry_points.loaded\n"
        "print('ok')\n"
    )
    prints_ok(code)


def test_a_third_party_name_is_found_by_the_registry_after_built_in_look_ups(
    third_party: pathlib.Path,
) -> None:
    found = registry()
    assert found.store("memory")() is MemoryStore.process_wide()
    assert "acme" not in found.stores  # not scanned yet
    assert found.store("acme")().name == "acme"
    assert "acme" in found.everything().stores


def test_a_built_in_plugin_is_loaded_when_its_name_is_first_used() -> None:
    code = (
        "import sys\n"
        "from eightyeightpay.plugins.registry import registry\n"
        "found = registry()\n"
        "assert {'memory', 'redis', 'memcached'} <= set(found.stores)\n"
        "assert 'eightyeightpay.plugins.redis_store' not in sys.modules\n"
        "store = found.store('redis')\n"
        "assert 'eightyeightpay.plugins.redis_store' in sys.modules\n"
        "assert found.store('redis') is store\n"
        "print('ok')\n"
    )
    prints_ok(code)


def prints_ok(code: str) -> None:
    """Run ``code`` in a fresh interpreter, which must print ``ok`` (its stderr otherwise)."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr
