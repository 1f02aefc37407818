"""Views that charge: a sync one (threaded manager) and an async one (asyncio manager)."""

from __future__ import annotations

import json
import os
from typing import Any

from django.http import HttpRequest, JsonResponse

from eightyeightpay import ApiResponse, EightyEightPayError
from tests.frameworks.apps.charges import CHARGES_PATH, pse_charge

from .payments import async_payments, payments


def amount(request: HttpRequest) -> Any:
    """The amount the client posted."""
    return json.loads(request.body)["amount"]


def answer(charge: ApiResponse) -> JsonResponse:
    """The charge's data, or 502 with 88Pay's message."""
    if not charge.ok:
        return JsonResponse({"error": charge.message}, status=502)
    return JsonResponse({"charge": charge.data, "pid": os.getpid()})


def charge(request: HttpRequest) -> JsonResponse:
    """``POST /charges``: a sync view."""
    try:
        return answer(payments().request("POST", CHARGES_PATH, json=pse_charge(amount(request))))
    except EightyEightPayError as error:
        # Never sent twice by the library when it may have reached 88Pay: look it up first.
        return JsonResponse({"error": str(error)}, status=502)


async def charge_async(request: HttpRequest) -> JsonResponse:
    """``POST /charges/async``: an async view."""
    try:
        return answer(
            await async_payments().request("POST", CHARGES_PATH, json=pse_charge(amount(request)))
        )
    except EightyEightPayError as error:
        return JsonResponse({"error": str(error)}, status=502)


def healthz(request: HttpRequest) -> JsonResponse:
    """Answers without charging."""
    return JsonResponse({"pid": os.getpid()})
