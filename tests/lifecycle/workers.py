"""Functions run in worker processes (importable by spawn and forkserver children)."""

from __future__ import annotations

import os
from typing import Any

from eightyeightpay import TokenManager

CHARGE = {"flow": "PAYIN", "method_code": "PSE", "currency": "COP", "country": "COL"}


def charge(manager: TokenManager, amount: int, answers: Any) -> None:
    """Make one charge of ``amount`` and put (pid, status, amount echoed) on ``answers``."""
    try:
        response = manager.request(
            "POST", "/api/transactions/charges", json={**CHARGE, "amount": amount}
        )
        answers.put((os.getpid(), response.status, response.data["amount"]))
    except Exception as error:  # reported to the parent, which fails the test
        answers.put((os.getpid(), type(error).__name__, str(error)))
    finally:
        manager.close()
