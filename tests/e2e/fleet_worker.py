"""One process of a test fleet: a manager of a given runtime on a shared Redis store.

Run by tests/e2e/test_fleet_processes.py. Prints ``ready``, waits for ``go`` on stdin, then
either takes one token (``cold``), keeps calling for ``--duration`` seconds (``steady``), or
makes ``--calls`` balance calls that fail fast (``api``; ``--rounds`` times, printing ``ready``
and waiting for ``go`` again between rounds), and prints one JSON line with what it saw.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from typing import Any

from eightyeightpay import ApiRateLimited, EightyEightPayError, Policy
from eightyeightpay.adapters.async_manager import AsyncTokenManager, open_trio_token_manager
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.plugins.redis_store import RedisStore
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID
from tests.recipes import recipe_store
from tests.servers import SENTINEL_MASTER


class Recorder:
    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self.calls = 0
        self.errors: Counter[str] = Counter()
        self.unusable = 0
        self.sends: list[float] = []
        self.fingerprints: set[str] = set()
        self.rounds: list[Counter[str]] = []
        self.starts: list[float] = []  # when each API call was made (epoch seconds)
        self._sent = 0

    def saw(self, token: Any) -> None:
        # A token the server would refuse as the caller holds it: past its expiry on the
        # manager's own clock (CLOCK_BOOTTIME by default; time.monotonic is another clock).
        # The margin before expiry (10 s of 60; 1 s here, compressed) absorbs the moment between the
        # hand-out and this check on a loaded machine.
        self.calls += 1
        self.fingerprints.add(token.fingerprint)
        if self.manager.clock() >= token.expires_at:
            self.unusable += 1

    def failed(self, error: EightyEightPayError) -> None:
        self.calls += 1
        self.errors[type(error).__name__] += 1

    def answered(self, round_: int, error: EightyEightPayError | None) -> None:
        """One API call of round ``round_``: sent (None), refused here, or refused by 88Pay."""
        if error is None:
            outcome = "sent"
        elif isinstance(error, ApiRateLimited):
            outcome = "refused" if error.local else "429"
        else:
            self.failed(error)
            return
        self.calls += 1
        while len(self.rounds) <= round_:
            self.rounds.append(Counter())
        self.rounds[round_][outcome] += 1

    def watch_sends(self) -> None:
        sent = self.manager._slot.machine.sent
        while self._sent < sent:
            self._sent += 1
            self.sends.append(time.time())

    def report(self) -> str:
        return json.dumps(
            {
                "calls": self.calls,
                "errors": dict(self.errors),
                "unusable": self.unusable,
                "sends": self.sends,
                "fingerprints": sorted(self.fingerprints),
                "sent": self.manager._slot.machine.sent,
                "rounds": [dict(each) for each in self.rounds],
                "starts": self.starts,
            }
        )


def make_store(kind: str, where: str) -> RedisStore:
    """The store as docs/stores.md's recipes build it, for a plain Redis, a Cluster or Sentinel."""
    if kind == "url":
        return RedisStore(where, timeout=0.2)
    if kind == "cluster":
        host, port = where.removeprefix("redis://").split("/")[0].split(":")
        store: RedisStore = recipe_store("cluster", HOST=host, PORT=int(port))
        return store
    sentinels = [(host, int(port)) for host, port in (a.split(":") for a in where.split(","))]
    store = recipe_store("sentinel", SENTINELS=sentinels, MASTER_NAME=SENTINEL_MASTER)
    return store


def warm(read: Any) -> None:
    """The first store read, before "ready"; a store that is down (what a test may be
    about) is the manager's to find."""
    with contextlib.suppress(Exception):
        read()


async def awarm(read: Any) -> None:
    """:func:`warm` for an async store read."""
    with contextlib.suppress(Exception):
        await read


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runtime", choices=["sync", "asyncio", "trio"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--redis", required=True, help="URL, cluster seed URL, or sentinels")
    parser.add_argument("--store-kind", choices=["url", "cluster", "sentinel"], default="url")
    parser.add_argument("--mode", choices=["cold", "steady", "api"], default="cold")
    parser.add_argument("--calls", type=int, default=0, help="API calls per round (api)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of calls (api)")
    parser.add_argument("--deadline", type=float, default=0.0, help="each API call's (api)")
    parser.add_argument("--duration", type=float, default=0.0)
    parser.add_argument(
        "--token-deadline", type=float, default=None, help="each get_token()'s (steady)"
    )
    parser.add_argument("--compress", type=float, default=1.0, help="Policy.compressed factor")
    args = parser.parse_args()
    policy = Policy().compressed(args.compress)
    options: dict[str, Any] = {
        "base_url": args.url,
        "ca_bundle": args.ca,
        "store": make_store(args.store_kind, args.redis),
        "policy": policy,
    }
    started: list[float] = []

    def ready_for_go() -> bool:
        # The manager has read the store once before "ready" (a cluster client discovers
        # the nodes on first use), so that "go" starts every process's first get_token() at
        # once on a warm client, whatever the load on the machine while they started.
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return False
        started.append(time.monotonic())
        return True

    def finished() -> bool:
        return bool(args.mode == "cold" or time.monotonic() >= started[0] + args.duration)

    balance = f"/api/balance?id={DEFAULT_MERCHANT_ID}"

    def next_round(round_: int) -> bool:
        """Between rounds of API calls: say so, and wait for the next ``go``."""
        return round_ + 1 < args.rounds and ready_for_go()

    if args.runtime == "sync":
        with TokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options) as manager:
            assert manager._fleet is not None
            warm(lambda: manager._fleet.read(manager.credentials.cache_key))
            if not ready_for_go():
                return
            recorder = Recorder(manager)
            if args.mode == "api":
                manager.get_token()  # the fleet's token first: the rounds count API calls only
            for round_ in range(args.rounds if args.mode == "api" else 0):
                for _ in range(args.calls):
                    recorder.starts.append(time.time())
                    try:
                        manager.request("POST", balance, deadline=args.deadline)
                    except EightyEightPayError as error:
                        recorder.answered(round_, error)
                    else:
                        recorder.answered(round_, None)
                if not next_round(round_):
                    break
            while args.mode != "api":
                try:
                    recorder.saw(manager.get_token(args.token_deadline))
                except EightyEightPayError as error:
                    recorder.failed(error)
                recorder.watch_sends()
                if finished():
                    break
                time.sleep(0.02)
            print(recorder.report(), flush=True)
        return

    async def loop(manager: Any, sleep: Any) -> None:
        recorder = Recorder(manager)
        if args.mode == "api":
            await manager.get_token()
        for round_ in range(args.rounds if args.mode == "api" else 0):
            for _ in range(args.calls):
                recorder.starts.append(time.time())
                try:
                    await manager.request("POST", balance, deadline=args.deadline)
                except EightyEightPayError as error:
                    recorder.answered(round_, error)
                else:
                    recorder.answered(round_, None)
            if not next_round(round_):  # blocks the loop: nothing else runs here
                break
        while args.mode != "api":
            try:
                recorder.saw(await manager.get_token(args.token_deadline))
            except EightyEightPayError as error:
                recorder.failed(error)
            recorder.watch_sends()
            if finished():
                break
            await sleep(0.02)
        print(recorder.report(), flush=True)

    if args.runtime == "asyncio":

        async def on_asyncio() -> None:
            async with AsyncTokenManager(
                DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options
            ) as manager:
                assert manager._fleet is not None
                await awarm(manager._fleet.read(manager.credentials.cache_key))
                if await asyncio.to_thread(ready_for_go):
                    await loop(manager, asyncio.sleep)

        asyncio.run(on_asyncio())
    else:
        import trio

        async def on_trio() -> None:
            async with open_trio_token_manager(
                DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options
            ) as manager:
                assert manager._fleet is not None
                await awarm(manager._fleet.read(manager.credentials.cache_key))
                if await trio.to_thread.run_sync(ready_for_go):
                    await loop(manager, trio.sleep)

        trio.run(on_trio)


if __name__ == "__main__":
    main()
