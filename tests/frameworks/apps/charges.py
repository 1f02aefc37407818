"""The charge every recipe makes: your application's own payment logic goes here."""

from __future__ import annotations

from typing import Any

CHARGES_PATH = "/api/transactions/charges"
"""88Pay's endpoint that creates a charge."""


def pse_charge(amount: float) -> dict[str, Any]:
    """The body of a PSE (bank transfer) charge of ``amount`` Colombian pesos."""
    return {
        "flow": "PAYIN",
        "method_code": "PSE",
        "amount": amount,
        "currency": "COP",
        "country": "COL",
    }
