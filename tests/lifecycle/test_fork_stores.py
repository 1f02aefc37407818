"""Fleet stores in a forked child: their own memcached connections and fencing identity."""

from __future__ import annotations

import os

import pytest

from eightyeightpay import MemcachedStore, Policy, RedisStore
from eightyeightpay.plugins.process import PerProcessClient
from tests.lifecycle.forking import in_child
from tests.servers import MemcachedServer
from tests.support import CREDENTIALS, rng

KEY = CREDENTIALS.cache_key


def _local_port(client: PerProcessClient) -> int:
    (connection,) = client.client_pool.free
    return int(connection.sock.getsockname()[1])


def test_a_forked_child_builds_its_own_memcached_client_and_leaves_the_parents(
    memcached_server: MemcachedServer,
) -> None:
    store = MemcachedStore(memcached_server.address)
    operations = store.operations()
    operations.cool_down(KEY, 30.0)
    client = operations._client
    assert isinstance(client, PerProcessClient)
    parent_port = _local_port(client)

    def child() -> list[object]:
        read = operations.read(KEY)  # through the child's own connection
        return [read[2] > 0, _local_port(client), client._pid == os.getpid()]

    has_cooldown, child_port, renewed = in_child(child)
    assert has_cooldown and renewed
    assert child_port != parent_port  # the child never spoke on the parent's socket
    assert operations.read(KEY)[2] > 0  # the parent's connection survived the child's exit
    assert _local_port(client) == parent_port
    store.close()


@pytest.mark.parametrize("kind", ["redis", "memcached"])
def test_a_forked_child_fences_its_locks_with_a_new_identity(
    kind: str, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue(f"{kind}_server")
    store = RedisStore(server.url) if kind == "redis" else MemcachedStore(server.address)
    slot = store.slot(CREDENTIALS, Policy(), rng())
    parent = store.instance

    def child() -> list[str]:
        return [store.instance, slot.machine.instance]

    instance, in_machine = in_child(child)
    assert instance != parent and in_machine == instance
    assert store.instance == parent == slot.machine.instance
    store.close()
