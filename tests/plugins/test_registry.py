"""Plugins: built-ins, third parties through the entry point, the blocklist, names."""

from __future__ import annotations

import pathlib
import textwrap
from collections.abc import Iterator

import pytest

from eightyeightpay import ConfigurationError
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.plugins import registry as registry_module
from eightyeightpay.plugins.memory import MemoryStore
from eightyeightpay.plugins.registry import DEFAULT_PLUGINS, collect, plugin_manager, registry
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
