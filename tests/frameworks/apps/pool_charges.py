"""multiprocessing: a pool of processes that charge (docs/frameworks.md, "multiprocessing").

    python -m tests.frameworks.apps.pool_charges --start-method spawn --charges 400 --out results.json

Each pool process makes its own manager in the pool's initializer, which works with every
start method (``fork``, ``forkserver``, ``spawn``): nothing but the amounts and the answers is
sent between processes. Configured from ``EIGHTY_EIGHT_PAY_*``; with
``EIGHTY_EIGHT_PAY_REDIS_URL`` set, every process of every host shares one token.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
from typing import Any

from eightyeightpay import EightyEightPayError, TokenManager
from tests.frameworks.apps.charges import CHARGES_PATH, pse_charge

PROCESSES = 4

payments: TokenManager | None = None
"""This pool process's manager, made by :func:`open_payments`."""


def open_payments() -> None:
    """The pool's initializer: runs once in each pool process, before its first charge."""
    global payments
    store = "redis" if os.environ.get("EIGHTY_EIGHT_PAY_REDIS_URL") else "memory"
    payments = TokenManager.from_env(store=store)


def use_payments(manager: TokenManager) -> None:
    """The other initializer: adopt a manager the parent made and passed to the pool.

    With ``fork`` the pool process inherits it as it is (its cached token too: a token is
    valid in any process); with ``spawn`` and ``forkserver`` it is pickled, and a manager
    built by ``from_env()`` pickles as "build again from the same environment variables",
    never as its key or token.
    """
    global payments
    payments = manager


def charge(amount: float) -> dict[str, Any]:
    """Charge ``amount`` in this pool process; the charge's data, or the error."""
    assert payments is not None, "the pool's initializer did not run"
    try:
        answer = payments.request("POST", CHARGES_PATH, json=pse_charge(amount))
    except EightyEightPayError as error:
        return {"error": str(error), "pid": os.getpid()}
    if not answer.ok:
        return {"error": f"88Pay answered {answer.status}: {answer.message}", "pid": os.getpid()}
    return {"charge": answer.data, "pid": os.getpid()}


def charge_all(start_method: str, amounts: list[int]) -> list[dict[str, Any]]:
    """Charge every amount on a pool of 4 processes started with ``start_method``."""
    context = multiprocessing.get_context(start_method)
    with context.Pool(PROCESSES, initializer=open_payments) as pool:
        return pool.map(charge, amounts, chunksize=1)


def charge_all_from_parent(start_method: str, amounts: list[int]) -> list[dict[str, Any]]:
    """The same with one manager made by the parent, which charges the first amount itself
    (so the manager holds a token and a kept-alive connection when the pool starts)."""
    global payments
    store = "redis" if os.environ.get("EIGHTY_EIGHT_PAY_REDIS_URL") else "memory"
    with TokenManager.from_env(store=store) as payments:
        first = charge(amounts[0])
        context = multiprocessing.get_context(start_method)
        with context.Pool(PROCESSES, initializer=use_payments, initargs=(payments,)) as pool:
            return [first, *pool.map(charge, amounts[1:], chunksize=1)]


def main() -> None:
    """Charge 1..N and write the answers as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--start-method", choices=["fork", "forkserver", "spawn"], required=True)
    parser.add_argument("--charges", type=int, default=400)
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--from-parent", action="store_true", help="one manager, made by the parent"
    )
    args = parser.parse_args()
    run = charge_all_from_parent if args.from_parent else charge_all
    answers = run(args.start_method, list(range(1, args.charges + 1)))
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump(answers, out)


if __name__ == "__main__":
    main()
