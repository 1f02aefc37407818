"""A Celery app whose tasks charge, on the prefork pool (docs/frameworks.md, "Celery").

    celery -A tests.frameworks.apps.celery_app worker --pool prefork --concurrency 4

The broker and result backend come from ``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND``
(Celery reads both); 88Pay from ``EIGHTY_EIGHT_PAY_*``. With ``EIGHTY_EIGHT_PAY_REDIS_URL`` set,
every worker process of every host shares one token through Redis.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

from eightyeightpay import TokenManager
from tests.frameworks.apps.charges import CHARGES_PATH, pse_charge

app = Celery("payments")

# One manager per pool process, made in the process itself once it has started.
payments: TokenManager | None = None


@worker_process_init.connect
def open_payments(**_: Any) -> None:
    """Make this pool process's manager."""
    global payments
    store = "redis" if os.environ.get("EIGHTY_EIGHT_PAY_REDIS_URL") else "memory"
    payments = TokenManager.from_env(store=store)


@worker_process_shutdown.connect
def close_payments(**_: Any) -> None:
    """Close it when the pool process ends."""
    if payments is not None:
        payments.close()


@app.task(name="payments.charge")
def charge(amount: float) -> dict[str, Any]:
    """Create a charge of ``amount``.

    Not retried by Celery: a charge that may have reached 88Pay must be looked up before it
    is sent again (88Pay documents no idempotency key), and the library already retries what
    provably was not sent.
    """
    assert payments is not None, "worker_process_init did not run"
    answer = payments.request("POST", CHARGES_PATH, json=pse_charge(amount))
    if not answer.ok:
        raise RuntimeError(f"88Pay answered {answer.status}: {answer.message}")
    return {"charge": answer.data, "pid": os.getpid()}
