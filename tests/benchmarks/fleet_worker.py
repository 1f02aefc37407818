"""One process of the benchmark fleet (run by tests/benchmarks/fleet.py).

Prints ``ready``, waits for ``go`` on stdin, calls for ``--duration`` seconds every
``--interval`` seconds, then prints one JSON line: calls, failures, unusable tokens, sends.
``--store`` is ``redis`` (the fleet store), ``memory`` (per process) or ``reference``
(88Pay's reference pattern over urllib3, threads only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import urllib3

from eightyeightpay.adapters.async_manager import AsyncTokenManager, open_trio_token_manager
from eightyeightpay.adapters.sync import TokenManager
from eightyeightpay.plugins.memory import MemoryStore
from eightyeightpay.plugins.sandbox import DEFAULT_API_KEY, DEFAULT_MERCHANT_ID

from .baseline import ReferenceCache, urllib3_fetcher


class Recorder:
    """Counts what the callers of this process saw."""

    def __init__(self) -> None:
        self.calls = 0
        self.unusable = 0
        self.errors: Counter[str] = Counter()

    def saw(self, token: Any) -> None:
        self.calls += 1
        if token is not None and time.monotonic() >= token.usable_until:
            self.unusable += 1

    def failed(self, error: Exception) -> None:
        self.calls += 1
        self.errors[type(error).__name__] += 1

    def report(self, sent: int) -> str:
        return json.dumps(
            {
                "calls": self.calls,
                "errors": dict(self.errors),
                "unusable": self.unusable,
                "sent": sent,
            }
        )


def main() -> None:
    """Run one worker."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runtime", choices=["sync", "asyncio", "trio"], default="sync")
    parser.add_argument("--store", choices=["redis", "memory", "reference"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--redis", default="")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args()
    options: dict[str, Any] = {"base_url": args.url, "ca_bundle": args.ca}
    if args.store == "redis":
        from eightyeightpay.plugins.redis_store import RedisStore

        options["store"] = RedisStore(args.redis, timeout=0.2)
    else:
        options["store"] = MemoryStore()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    deadline = time.monotonic() + args.duration
    recorder = Recorder()

    if args.store == "reference":
        pool = urllib3.PoolManager(ca_certs=args.ca, retries=False)
        sends = [0]
        fetch = urllib3_fetcher(pool, args.url)

        def counted() -> dict[str, Any]:
            sends[0] += 1
            return fetch()

        cache = ReferenceCache(counted)
        while time.monotonic() < deadline:
            try:
                cache.get()
                recorder.saw(None)
            except Exception as error:
                recorder.failed(error)
            time.sleep(args.interval)
        print(recorder.report(sends[0]), flush=True)
        return

    if args.runtime == "sync":
        with TokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options) as manager:
            while time.monotonic() < deadline:
                try:
                    recorder.saw(manager.get_token())
                except Exception as error:
                    recorder.failed(error)
                time.sleep(args.interval)
            print(recorder.report(manager._slot.machine.sent), flush=True)
        return

    async def loop(manager: Any, sleep: Any) -> None:
        while time.monotonic() < deadline:
            try:
                recorder.saw(await manager.get_token())
            except Exception as error:
                recorder.failed(error)
            await sleep(args.interval)
        print(recorder.report(manager._slot.machine.sent), flush=True)

    if args.runtime == "asyncio":

        async def on_asyncio() -> None:
            async with AsyncTokenManager(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options) as m:
                await loop(m, asyncio.sleep)

        asyncio.run(on_asyncio())
    else:
        import trio

        async def on_trio() -> None:
            async with open_trio_token_manager(
                DEFAULT_API_KEY, DEFAULT_MERCHANT_ID, **options
            ) as m:
                await loop(m, trio.sleep)

        trio.run(on_trio)


if __name__ == "__main__":
    main()
