"""The fleet-store contract as a pytest suite, for the authors of stores (built-in and third-party).

Subclass :class:`StoreContract` in a test module of your own and give it two fixtures:

- ``make_store``: a factory; each call returns a **new** store object on the same backend
  (a new store object stands for another process of the fleet: it has its own local slots).
  It accepts ``encryption_key=`` (a Fernet key) and passes it to the store;
- ``store_outage``: a factory of context managers; inside ``with store_outage():`` the
  backend is unreachable (a stopped server, a closed port), and it is back afterwards.

.. code-block:: python

    import contextlib
    import pytest
    from eightyeightpay.adapters.store_contract import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def make_store(self, my_server):
            return lambda **options: MyStore(my_server.url, **options)

        @pytest.fixture
        def store_outage(self, my_server):
            @contextlib.contextmanager
            def outage():
                my_server.stop()
                try:
                    yield
                finally:
                    my_server.start()
            return outage

Then ``pytest`` runs the whole contract against the store: the fleet shares one token (one
token request for several processes, on threads, asyncio and trio), the lock is exclusive,
fenced and renewable only by its owner, the budget counts sends with the store's clock and
not the hosts', the cool-down is shared, an outage degrades to local work without an error
and is logged once, the fleet rejoins when the store is back, and with an encryption key
nothing of the token is stored in the clear. The suite starts the 88Pay emulator itself
(HTTPS on loopback) and needs ``trio`` for the trio cases. The built-in Redis and memcached
stores run this same suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from eightyeightpay.errors import RateLimited
from eightyeightpay.fleet import (
    API_BUDGET,
    TOKEN_BUDGET,
    BudgetRequest,
    StoredToken,
    encode_stored,
)
from eightyeightpay.plugins.fleet import FleetStore
from eightyeightpay.tokens import Token

__all__ = ["ContractFleet", "StoreContract"]

MakeStore = Callable[..., FleetStore]
Outage = Callable[[], contextlib.AbstractContextManager[object]]


class ContractFleet:
    """Managers on one emulator, each "process" with a store of its own from ``make_store``."""

    def __init__(self, make_store: MakeStore) -> None:
        from eightyeightpay.plugins.sandbox import Sandbox, SandboxServer

        self._server = SandboxServer(Sandbox(), tls=True)
        self._server.start()
        assert self._server.certificates is not None
        self.make_store = make_store
        self.options: dict[str, Any] = {
            "base_url": self._server.url,
            "ca_bundle": str(self._server.certificates.ca_file),
        }
        self.stores: list[FleetStore] = []
        self._managers: list[Any] = []

    @property
    def sandbox(self) -> Any:
        """The emulator (its ``stats()`` count the token requests)."""
        return self._server.sandbox

    def store(self, **options: Any) -> FleetStore:
        """A new store object: another process's view of the backend."""
        store = self.make_store(**options)
        self.stores.append(store)
        return store

    def process(self, **options: Any) -> Any:
        """A threaded manager with a store of its own."""
        from eightyeightpay.adapters.sync import TokenManager
        from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID

        store = options.pop("store", None) or self.store()
        manager = TokenManager(
            DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store=store, **self.options, **options
        )
        self._managers.append(manager)
        return manager

    def token_requests(self) -> int:
        """Token requests the emulator has answered."""
        return int(self.sandbox.stats()["token_requests"])

    def close(self) -> None:
        """Close the managers, the stores (when they can be closed) and the emulator."""
        for manager in self._managers:
            manager.close()
        for store in self.stores:
            closer = getattr(store, "close", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    closer()
        self._server.stop()


def _key_of(fleet: ContractFleet) -> Any:
    return fleet.process().credentials.cache_key


class StoreContract:
    """The contract every fleet store keeps.

    Subclass it and give the ``make_store`` and ``store_outage`` fixtures (see the module's
    documentation).
    """

    @pytest.fixture
    def make_store(self) -> MakeStore:
        """Override: a factory of new store objects on the shared backend."""
        raise NotImplementedError("give the contract suite a make_store fixture")

    @pytest.fixture
    def store_outage(self) -> Outage:
        """Override: a factory of context managers during which the backend is unreachable."""
        raise NotImplementedError("give the contract suite a store_outage fixture")

    @pytest.fixture
    def fleet(self, make_store: MakeStore) -> Iterator[ContractFleet]:
        """A fleet of processes on the store, and the emulator they ask."""
        world = ContractFleet(make_store)
        yield world
        world.close()

    # ------------------------------------------------------------------ sharing

    def test_processes_share_one_token(self, fleet: ContractFleet) -> None:
        """Three processes, one token request."""
        a, b, c = fleet.process(), fleet.process(), fleet.process()
        assert len({a.get_token(), b.get_token(), c.get_token()}) == 1
        assert fleet.token_requests() == 1

    @pytest.mark.parametrize("runtime", ["asyncio", "trio"])
    def test_async_runtimes_share_the_fleet_token(self, fleet: ContractFleet, runtime: str) -> None:
        """An asyncio or trio process refreshes for the fleet, and a threaded one adopts it."""
        from eightyeightpay.adapters.async_manager import (
            AsyncTokenManager,
            open_trio_token_manager,
        )
        from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID

        async def crowd(manager: Any) -> Token:
            tokens: list[Token] = [await manager.get_token() for _ in range(50)]
            assert len(set(tokens)) == 1
            return tokens[0]

        async def on_asyncio() -> Token:
            async with AsyncTokenManager(
                DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store=fleet.store(), **fleet.options
            ) as manager:
                return await crowd(manager)

        async def on_trio() -> Token:
            async with open_trio_token_manager(
                DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, store=fleet.store(), **fleet.options
            ) as manager:
                return await crowd(manager)

        if runtime == "asyncio":
            token = asyncio.run(on_asyncio())
        else:
            import trio

            token = trio.run(on_trio)
        assert fleet.process().get_token() == token
        assert fleet.token_requests() == 1

    # ------------------------------------------------------------------ the lock

    def test_the_lock_is_exclusive_fenced_and_renewed_only_by_its_owner(
        self, fleet: ContractFleet
    ) -> None:
        """Acquire is set-if-absent; release and extend touch only the owner's lock."""
        key = _key_of(fleet)
        ops, other = fleet.store().operations(), fleet.store().operations()
        assert ops.acquire(key, "owner-a", 5.0)
        assert not other.acquire(key, "owner-b", 5.0)
        other.release(key, "owner-b")  # not its lock: nothing happens
        assert not other.acquire(key, "owner-b", 5.0)
        assert not other.extend(key, "owner-b", 5.0)
        assert ops.extend(key, "owner-a", 5.0)
        ops.release(key, "owner-a")
        assert other.acquire(key, "owner-b", 5.0)
        other.release(key, "owner-b")

    def test_the_lock_expires_unless_renewed(self, fleet: ContractFleet) -> None:
        """A holder that stops renewing loses the lock after its lease (2 s here)."""
        key = _key_of(fleet)
        ops, other = fleet.store().operations(), fleet.store().operations()
        assert ops.acquire(key, "dead-holder", 1.0)
        time.sleep(2.1)  # whole-second stores may keep an item up to a second longer
        assert other.acquire(key, "next", 5.0)
        assert not ops.extend(key, "dead-holder", 5.0)
        other.release(key, "next")

    # ------------------------------------------------------------------ budget, cool-down

    def test_the_budget_counts_the_fleets_sends(self, fleet: ContractFleet) -> None:
        """Reserve names the epoch, records while the windows allow, then answers the wait.

        ``spent`` counts the sends.
        """
        key = _key_of(fleet)
        ops, other = fleet.store().operations(), fleet.store().operations()
        wait, epoch = ops.reserve(key, BudgetRequest(TOKEN_BUDGET, 2, 100))
        assert wait == 0 and isinstance(epoch, str) and epoch  # first contact: an epoch
        assert ops.spent(key, TOKEN_BUDGET, 60.0, 3600.0) == (0, 0)  # and nothing recorded
        ask = BudgetRequest(TOKEN_BUDGET, 2, 100, epoch=epoch)
        assert ops.reserve(key, ask) == (0, epoch)
        assert other.reserve(key, ask) == (0, epoch)
        wait, same = ops.reserve(key, ask)
        assert 0 < wait <= 60 and same == epoch
        wait, _ = other.reserve(key, BudgetRequest(TOKEN_BUDGET, 100, 2, epoch=epoch))
        assert 0 < wait <= 3600
        assert other.spent(key, TOKEN_BUDGET, 60.0, 3600.0) == (2, 2)

    def test_token_and_api_budgets_are_kept_apart(self, fleet: ContractFleet) -> None:
        """A full token budget leaves the API budget untouched, and the reverse."""
        key = _key_of(fleet)
        ops = fleet.store().operations()
        epochs = {}
        for purpose in (TOKEN_BUDGET, API_BUDGET):
            _, epochs[purpose] = ops.reserve(key, BudgetRequest(purpose, 1, 100))
        token = BudgetRequest(TOKEN_BUDGET, 1, 100, epoch=epochs[TOKEN_BUDGET])
        api = BudgetRequest(API_BUDGET, 2, 100, epoch=epochs[API_BUDGET])
        assert ops.reserve(key, token)[0] == 0
        assert ops.reserve(key, token)[0] > 0
        assert ops.reserve(key, api)[0] == 0 and ops.reserve(key, api)[0] == 0
        assert ops.reserve(key, api)[0] > 0
        assert ops.spent(key, TOKEN_BUDGET, 60.0, 3600.0) == (1, 1)
        assert ops.spent(key, API_BUDGET, 60.0, 3600.0) == (2, 2)

    def test_the_windows_are_the_ones_asked_for(self, fleet: ContractFleet) -> None:
        """A compressed policy's windows (here 1 s and 60 s) are the budget's and spent's."""
        key = _key_of(fleet)
        ops = fleet.store().operations()
        _, epoch = ops.reserve(key, BudgetRequest(TOKEN_BUDGET, 1, 100))
        ask = BudgetRequest(TOKEN_BUDGET, 1, 100, 1.0, 60.0, epoch)
        assert ops.reserve(key, ask) == (0, epoch)
        wait, _ = ops.reserve(key, ask)
        assert 0 < wait <= 1.0
        time.sleep(wait + 0.05)
        assert ops.reserve(key, ask) == (0, epoch)
        assert ops.spent(key, TOKEN_BUDGET, 1.0, 60.0) == (1, 2)

    def test_backfill_is_recorded_only_under_the_budgets_epoch(self, fleet: ContractFleet) -> None:
        """Backfill counts at the store's now minus each age, before the limits are checked.

        Asked with another epoch than the budget's, the store records nothing.
        """
        key = _key_of(fleet)
        ops, other = fleet.store().operations(), fleet.store().operations()
        _, epoch = ops.reserve(key, BudgetRequest(TOKEN_BUDGET, 3, 100))
        stale = BudgetRequest(TOKEN_BUDGET, 3, 100, epoch=epoch + "-old", backfill=(1.0, 2.0))
        assert other.reserve(key, stale) == (0, epoch)
        assert other.spent(key, TOKEN_BUDGET, 60.0, 3600.0) == (0, 0)
        back = BudgetRequest(TOKEN_BUDGET, 3, 100, epoch=epoch, backfill=(30.0, 600.0, 4000.0))
        assert other.reserve(key, back) == (0, epoch)  # 4000 s ago is outside the hour
        assert other.spent(key, TOKEN_BUDGET, 60.0, 3600.0) == (2, 3)
        full = BudgetRequest(TOKEN_BUDGET, 2, 100, epoch=epoch)
        wait, _ = ops.reserve(key, full)
        assert 25 < wait <= 30  # the send put back 30 s ago leaves the minute first
        only_back = BudgetRequest(TOKEN_BUDGET, 9, 100, epoch=epoch, backfill=(1.0,), send=False)
        assert ops.reserve(key, only_back) == (0, epoch)  # room for more, yet nothing new
        assert ops.spent(key, TOKEN_BUDGET, 60.0, 3600.0) == (3, 4)

    def test_the_fleet_counts_its_live_members(self, fleet: ContractFleet) -> None:
        """Join registers a process for ttl seconds and answers how many are live.

        Degraded mode divides 88Pay's limits by this count.
        """
        key = _key_of(fleet)
        ops, other = fleet.store().operations(), fleet.store().operations()
        assert ops.join(key, "p1", 30.0) == 1
        assert other.join(key, "p2", 1.0) == 2
        assert ops.join(key, "p1", 30.0) == 2  # not twice
        time.sleep(2.1)  # whole-second stores may keep an item up to a second longer
        assert ops.join(key, "p1", 30.0) == 1  # p2 lapsed

    def test_the_budget_is_the_stores_not_the_hosts_clock(self, fleet: ContractFleet) -> None:
        """Two hosts whose monotonic clocks are an hour apart share one budget."""
        behind = fleet.process(clock=lambda: time.monotonic() - 3600.0)
        ahead = fleet.process(clock=lambda: time.monotonic() + 3600.0)
        key = behind.credentials.cache_key
        behind_ops, ahead_ops = behind._fleet, ahead._fleet
        _, epoch = behind_ops.reserve(key, BudgetRequest(TOKEN_BUDGET, 1, 100))
        ask = BudgetRequest(TOKEN_BUDGET, 1, 100, epoch=epoch)
        assert behind_ops.reserve(key, ask) == (0, epoch)
        wait, _ = ahead_ops.reserve(key, ask)
        assert 0 < wait <= 60

    def test_a_429_cools_down_the_whole_fleet(self, fleet: ContractFleet) -> None:
        """After one process's 429, the others answer from the shared cool-down."""
        from eightyeightpay.plugins.sandbox import Fault

        body = b'{"status":"Error","code":429,"message":"Rate limit exceeded.","retry_after":30}'
        fleet.sandbox.inject(Fault.status(429, body=body))
        with pytest.raises(RateLimited) as first:
            fleet.process().get_token()
        assert not first.value.local
        with pytest.raises(RateLimited) as other:
            fleet.process().get_token()
        assert other.value.local and 25 < other.value.retry_after <= 30
        assert fleet.token_requests() == 1

    def test_an_api_429_cools_down_the_fleets_api_calls_and_not_its_token_requests(
        self, fleet: ContractFleet
    ) -> None:
        """After one process's API 429 the others send no API call until it ends.

        The store keeps it with ``cool_down`` and ``read`` under ``api_calls_key(key)``,
        apart from the token's cool-down under ``key``.
        """
        from eightyeightpay.errors import ApiRateLimited
        from eightyeightpay.fleet import api_calls_key
        from eightyeightpay.plugins.sandbox import DEFAULT_MERCHANT_ID, Fault

        balance = f"/api/balance?id={DEFAULT_MERCHANT_ID}"
        fleet.sandbox.inject(Fault.status(429, headers={"Retry-After": "30"}), path="/api/balance")
        with pytest.raises(ApiRateLimited) as first:
            fleet.process().request("POST", balance, deadline=0)
        assert not first.value.local
        seen = fleet.sandbox.stats()
        with pytest.raises(ApiRateLimited) as other:
            fleet.process().request("POST", balance, deadline=0)
        assert other.value.local and 25 < other.value.retry_after <= 30
        assert fleet.sandbox.stats() == seen  # nothing reached the server
        key = _key_of(fleet)
        ops = fleet.store().operations()
        assert ops.read(key)[2] == 0  # token requests are not held back
        assert 25 < ops.read(api_calls_key(key))[2] <= 30

    # ------------------------------------------------------------------ outage and rejoin

    def test_an_outage_degrades_without_errors_logs_once_and_the_fleet_rejoins(
        self,
        fleet: ContractFleet,
        store_outage: Outage,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """While the backend is down each process works alone; then they share again."""
        caplog.set_level(logging.WARNING, logger="eightyeightpay")
        with store_outage():
            a, b = fleet.process(), fleet.process()
            for manager in (a, b):
                for _ in range(20):
                    assert isinstance(manager.get_token(), Token)
            assert fleet.token_requests() == 2  # each process alone: one request each
            lines = [r for r in caplog.records if "store unavailable" in r.getMessage()]
            assert len(lines) == 2  # once per process, not per call
        c, d = fleet.process(), fleet.process()
        assert c.get_token() == d.get_token()
        assert fleet.token_requests() == 3

    # ------------------------------------------------------------------ encryption

    def test_with_an_encryption_key_nothing_of_the_token_is_stored_in_clear(
        self, fleet: ContractFleet
    ) -> None:
        """A store without the key reads ciphertext; one with another key reads nothing."""
        from cryptography.fernet import Fernet

        key = Fernet.generate_key()
        sealed = fleet.process(store=fleet.store(encryption_key=key))
        token = sealed.get_token()
        assert fleet.process(store=fleet.store(encryption_key=key)).get_token() == token
        raw, ttl, _ = fleet.store().operations().read(sealed.credentials.cache_key)
        assert raw is not None and ttl > 0
        text = raw if isinstance(raw, bytes) else encode_stored(raw)
        assert not isinstance(raw, StoredToken)
        for secret in (token.access_token, *token.access_token.split("."), token.session_id):
            assert secret.encode() not in text
        other_key = fleet.process(store=fleet.store(encryption_key=Fernet.generate_key()))
        assert other_key.get_token() != token  # undecryptable: ignored and replaced
        assert fleet.token_requests() == 2

    def test_a_token_the_api_rejected_is_not_adopted_again_from_the_fleet(
        self, fleet: ContractFleet
    ) -> None:
        """After a 401 a process asks for a new token and the fleet adopts that one."""
        from eightyeightpay.plugins.sandbox import DEFAULT_MERCHANT_ID, Fault

        a, b = fleet.process(), fleet.process()
        token = a.get_token()
        assert b.get_token() == token
        fleet.sandbox.inject(Fault.status(401), path="/api/balance")
        response = a.request("POST", f"/api/balance?id={DEFAULT_MERCHANT_ID}")
        assert response.status == 200  # replayed with a new token, not the rejected one again
        fresh = a.get_token()
        assert fresh != token and fleet.token_requests() == 2
        b.invalidate(token)
        assert b.get_token() == fresh and fleet.token_requests() == 2
