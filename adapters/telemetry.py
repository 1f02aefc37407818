"""OpenTelemetry spans and metrics for the managers: off unless the user turns them on.

``Telemetry(...)`` is passed to a manager as ``telemetry=``; without it no span or metric is
made and nothing of OpenTelemetry is imported. It needs ``opentelemetry-api`` only (the
``otel`` extra); the user brings the SDK, its exporters and, if they like, their own tracer
and meter providers (by default the global ones).

The spans follow OpenTelemetry's HTTP client semantic conventions: a ``CLIENT`` span per
token request and per API call, named after the HTTP method, with ``http.request.method``,
``server.address``, ``server.port``, ``url.full`` (query values redacted),
``http.response.status_code`` and ``error.type``. No attribute, metric label or span name
holds a token, session id or API key; the merchant id is added only with
``merchant_label=True``.

Hooks run at the effect boundaries of the slow path only (a flight's start, its sends,
store operations and end; an API call's sends). The cached path of ``get_token()`` is not
touched.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from eightyeightpay import __version__
from eightyeightpay.api import ApiPermit
from eightyeightpay.errors import ConfigurationError, EightyEightPayError
from eightyeightpay.fleet import AcquireLock, FleetEffect, LockResult, StoreFault
from eightyeightpay.http import HttpRequest, HttpResponse
from eightyeightpay.machine import Flight, SendTokenRequest, Settled
from eightyeightpay.stats import STORE_MODES, Stats, outcome_of

if TYPE_CHECKING:
    from .base import ManagerBase

__all__ = ["ApiCallTrace", "FlightTrace", "Observer", "Telemetry"]

INSTRUMENTATION = "eightyeightpay"
"""The instrumentation scope name of every tracer and meter."""


def _redacted(url: str) -> str:
    """``url`` with user info and every query value replaced by ``REDACTED``.

    ``?id=MCH-…`` becomes ``?id=REDACTED`` (keys kept), as the semantic conventions advise
    for ``url.full``: the merchant id is shown only where the user allowed it.
    """
    parts = urlsplit(url)
    _, at, host = parts.netloc.rpartition("@")
    netloc = f"REDACTED:REDACTED@{host}" if at else host
    names = (pair.split("=", 1)[0] for pair in parts.query.split("&") if pair)
    query = "&".join(f"{name}=REDACTED" for name in names)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _error_type(response: HttpResponse | None, error: BaseException | None) -> str | None:
    """The semantic conventions' ``error.type``: the status code, else the error's class."""
    if response is not None and response.status >= 400:
        return str(response.status)
    if error is not None:
        return type(error).__name__
    return None


class Telemetry:
    """OpenTelemetry traces and metrics for the managers it is given to.

    ``TokenManager(..., telemetry=Telemetry())`` turns them on for that manager; one
    ``Telemetry`` may serve many managers. ``tracer_provider`` and ``meter_provider`` default
    to OpenTelemetry's global providers. ``merchant_label=True`` adds the merchant id to
    metric labels and span attributes (``eightyeightpay.merchant_id``); it is off by default
    because it identifies a customer of 88Pay in your telemetry backend.

    Raises :class:`~eightyeightpay.errors.ConfigurationError` when ``opentelemetry-api`` is
    not installed (``pip install 'eightyeightpay[otel]'``).
    """

    def __init__(
        self,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        merchant_label: bool = False,
    ) -> None:
        try:
            from opentelemetry import metrics, trace
        except ImportError:
            raise ConfigurationError(
                "Telemetry needs the OpenTelemetry API: pip install 'eightyeightpay[otel]' "
                "(and an SDK with an exporter, e.g. opentelemetry-sdk)."
            ) from None
        self._trace = trace
        self.merchant_label = merchant_label
        """True when the merchant id is a metric label and span attribute."""
        self.tracer = trace.get_tracer(
            INSTRUMENTATION, __version__, tracer_provider=tracer_provider
        )
        """Where the spans go."""
        meter = metrics.get_meter(INSTRUMENTATION, __version__, meter_provider=meter_provider)
        self._requests = meter.create_counter(
            "eightyeightpay.token.requests",
            unit="{request}",
            description="Token requests sent to 88Pay, by outcome.",
        )
        self._duration = meter.create_histogram(
            "eightyeightpay.token.request.duration",
            unit="s",
            description="Duration of token requests sent to 88Pay, by outcome.",
        )
        self._observation = metrics.Observation
        meter.create_observable_counter(
            "eightyeightpay.token.waiters",
            callbacks=[self._observe_waiters],
            unit="{caller}",
            description="Callers that had no usable token and waited for a token request.",
        )
        meter.create_observable_gauge(
            "eightyeightpay.token.budget.remaining",
            callbacks=[self._observe_budget],
            unit="{request}",
            description="Token requests still allowed in the rolling minute and hour: the "
            "fleet's with a fleet store that can count them, else this process's.",
        )
        meter.create_observable_gauge(
            "eightyeightpay.store.mode",
            callbacks=[self._observe_store],
            description="1 for the store's current mode (local, healthy, degraded), else 0.",
        )
        self._lock = threading.Lock()
        self._watched: list[weakref.ReferenceType[ManagerBase]] = []

    def observer(self, manager: ManagerBase, store_name: str) -> Observer:
        """The observer a manager calls at its effect boundaries (the manager is watched)."""
        with self._lock:
            self._watched = [ref for ref in self._watched if ref() is not None]
            self._watched.append(weakref.ref(manager))
        return Observer(self, manager, store_name)

    # ------------------------------------------------------------------ observable metrics

    def _snapshots(self, *, fleet: bool = False) -> Iterator[tuple[Stats, dict[str, Any]]]:
        """The stats of each slot watched (once per slot, however many managers share it).

        ``fleet``: with the fleet's spend from a fleet store (the reader's thread blocks on
        one store round trip per slot; nothing else does).
        """
        with self._lock:
            managers = [ref() for ref in self._watched]
        seen: set[int] = set()
        for manager in managers:
            observer = None if manager is None else manager._observer
            if manager is None or observer is None or manager._closed:
                continue
            if id(manager._slot) not in seen:
                seen.add(id(manager._slot))
                yield manager.stats(fleet=fleet), observer.labels

    def _observe_waiters(self, options: Any) -> Iterable[Any]:
        totals: dict[tuple[tuple[str, Any], ...], int] = {}
        for stats, labels in self._snapshots():
            key = tuple(sorted(labels.items()))
            totals[key] = totals.get(key, 0) + stats.waited
        return [self._observation(value, dict(key)) for key, value in totals.items()]

    def _observe_budget(self, options: Any) -> Iterable[Any]:
        points = []
        for stats, labels in self._snapshots(fleet=True):
            scoped = {**labels, "eightyeightpay.budget.scope": stats.budget_scope}
            windows = (("minute", stats.minute_remaining), ("hour", stats.hour_remaining))
            for window, left in windows:
                points.append(self._observation(left, {**scoped, "eightyeightpay.window": window}))
        return points

    def _observe_store(self, options: Any) -> Iterable[Any]:
        points = []
        for stats, labels in self._snapshots():
            for mode in STORE_MODES:
                point = {**labels, "eightyeightpay.store.mode": mode}
                points.append(self._observation(int(stats.store_mode == mode), point))
        return points


class Observer:
    """One manager's hooks: opens the traces of its flights and API calls."""

    def __init__(self, telemetry: Telemetry, manager: ManagerBase, store_name: str) -> None:
        self.telemetry = telemetry
        """Where spans and metrics go."""
        parts = urlsplit(manager.credentials.base_url)
        self.server = {
            "server.address": parts.hostname or "",
            "server.port": parts.port or (443 if parts.scheme == "https" else 80),
        }
        """The semantic conventions' server attributes."""
        self.labels: dict[str, Any] = {"server.address": self.server["server.address"]}
        """Attributes of every metric point."""
        if telemetry.merchant_label:
            self.labels["eightyeightpay.merchant_id"] = manager.credentials.merchant_id
        self.store_name = store_name
        """The store's registered name (``memory``, ``redis``, ...)."""
        self.base_url = manager.credentials.base_url
        """Where API calls go (``url.full`` is this and the call's path, redacted)."""
        self._clock = manager._clock

    def flight(self, flight: Flight) -> FlightTrace:
        """The trace of one refresh."""
        return FlightTrace(self, flight)

    def api_call(self, method: str, path: str) -> ApiCallTrace:
        """The trace of one ``request(method, path)`` call."""
        return ApiCallTrace(self, method, path)

    def span(self, name: str, kind: str, parent: Any, attributes: dict[str, Any]) -> Any:
        """Start a span (``kind``: a ``SpanKind`` member name) under ``parent`` (None: current)."""
        trace = self.telemetry._trace
        context = None if parent is None else trace.set_span_in_context(parent)
        return self.telemetry.tracer.start_span(
            name, context=context, kind=trace.SpanKind[kind], attributes=attributes
        )

    def close(self, span: Any, error_type: str | None) -> None:
        """End ``span``; with ``error_type`` it is marked failed (semantic conventions).

        The status has no description: ``error.type`` and the status code say it all.
        """
        if error_type is not None:
            trace = self.telemetry._trace
            span.set_attribute("error.type", error_type)
            span.set_status(trace.Status(trace.StatusCode.ERROR))
        span.end()


class FlightTrace:
    """The spans and metrics of one refresh.

    A parent span, a span per store operation, the fleet lock wait, and a ``CLIENT`` span
    and metric points per token request.
    """

    def __init__(self, observer: Observer, flight: Flight) -> None:
        self._observer = observer
        self._flight = flight
        attributes: dict[str, Any] = {
            **observer.labels,
            "eightyeightpay.flight": flight.number,
            "eightyeightpay.background": flight.background,
        }
        self._span = observer.span("eightyeightpay.token.refresh", "INTERNAL", None, attributes)
        self._send: Any = None
        self._sent_at = 0.0
        self._lock_span: Any = None
        self._lock_started = 0.0
        self.lock_waited = 0.0
        """Seconds this flight waited for the fleet lock (manager's clock)."""

    def sending(self, effect: SendTokenRequest, attempt: int) -> None:
        """A token request is about to be sent; ``attempt`` counts failures in a row before it."""
        request = effect.request
        attributes: dict[str, Any] = {
            **self._observer.labels,
            **self._observer.server,
            "http.request.method": request.method,
            "url.full": _redacted(request.url),
            "eightyeightpay.flight": self._flight.number,
            "eightyeightpay.retry_attempt": attempt,
            "eightyeightpay.fleet_lock_waited": self.lock_waited,
        }
        if attempt:
            attributes["http.request.resend_count"] = attempt
        self._send = self._observer.span(request.method, "CLIENT", self._span, attributes)
        self._sent_at = self._observer._clock()

    def exchanged(
        self, response: HttpResponse | None, error: EightyEightPayError | None, outcome: str
    ) -> None:
        """The token request ended; ``outcome`` is the core's reading of it."""
        if self._send is None:
            return
        if response is not None:
            self._send.set_attribute("http.response.status_code", response.status)
        error_type = _error_type(response, error)
        if error_type is None and outcome != "ok":
            error_type = outcome
        self._sent(outcome, error_type)

    def _sent(self, outcome: str, error_type: str | None) -> None:
        """End the token request's span and count it, as stats() does."""
        span, self._send = self._send, None
        seconds = max(0.0, self._observer._clock() - self._sent_at)
        span.set_attribute("eightyeightpay.outcome", outcome)
        self._observer.close(span, error_type)
        labels = {**self._observer.labels, "eightyeightpay.outcome": outcome}
        telemetry = self._observer.telemetry
        telemetry._requests.add(1, labels)
        telemetry._duration.record(seconds, labels)

    def store_started(self, operation: str) -> Any:
        """A store operation starts; returns its span."""
        attributes = {
            "eightyeightpay.store.name": self._observer.store_name,
            "eightyeightpay.store.operation": operation,
        }
        name = f"eightyeightpay.store.{operation}"
        return self._observer.span(name, "CLIENT", self._span, attributes)

    def store_ended(self, span: Any, effect: FleetEffect, result: object, started: float) -> None:
        """A store operation ended with ``result``; a lock not taken opens the lock wait."""
        fault = isinstance(result, StoreFault)
        self._observer.close(span, "store_unavailable" if fault else None)
        if not isinstance(effect, AcquireLock):
            return
        if isinstance(result, LockResult) and not result.acquired:
            if self._lock_span is None:
                self._lock_started = started
                self._lock_span = self._observer.span(
                    "eightyeightpay.fleet_lock.wait",
                    "INTERNAL",
                    self._span,
                    {"eightyeightpay.store.name": self._observer.store_name},
                )
        else:
            self._end_lock_wait(acquired=isinstance(result, LockResult))

    def _end_lock_wait(self, *, acquired: bool) -> None:
        span, self._lock_span = self._lock_span, None
        if span is None:
            return
        self.lock_waited = max(0.0, self._observer._clock() - self._lock_started)
        span.set_attribute("eightyeightpay.fleet_lock.acquired", acquired)
        span.set_attribute("eightyeightpay.fleet_lock_waited", self.lock_waited)
        span.end()

    def finish(self, settled: Settled, store_mode: str) -> None:
        """The refresh ended (or was abandoned)."""
        self._end_lock_wait(acquired=False)
        if self._send is not None:  # interrupted while the request was out, or a plugin broke
            if settled.error is not None:
                self._sent(outcome_of(settled.error), type(settled.error).__name__)
            else:
                self._sent("abandoned", "cancelled")
        span = self._span
        span.set_attribute("eightyeightpay.store.mode", store_mode)
        if settled.error is not None:
            error_type: str | None = outcome_of(settled.error)
        elif settled.token is None:
            error_type = "cancelled"
        else:
            error_type = None
        self._observer.close(span, error_type)


class ApiCallTrace:
    """The spans of one ``request()`` call: a ``CLIENT`` span per send, and the governor's.

    A call the API governor holds back (the limits, this process's share of them, or an
    API 429's cool-down; a fleet store's or this process's) gets an ``INTERNAL`` span
    ``eightyeightpay.api_governor.wait`` from the first hold until the send is reserved or
    the call gives up, with an event per hold; the send's span then carries the seconds
    waited.
    """

    def __init__(self, observer: Observer, method: str, path: str) -> None:
        self._observer = observer
        self._method = method
        self._path = path  # checked by the core before the governor is asked
        self._sends = 0
        self._replayed = False
        self._hold: Any = None
        self._held_since = 0.0
        self._waited = 0.0

    def governed(self, permit: ApiPermit) -> None:
        """The API governor answered ``permit``: a hold (its wait) or the send reserved."""
        if permit.wait <= 0:
            self._end_hold(reserved=True)
            return
        if self._hold is None:
            self._held_since = permit.now
            attributes: dict[str, Any] = {
                **self._observer.labels,
                **self._observer.server,
                "http.request.method": self._method.upper(),
                "url.full": _redacted(f"{self._observer.base_url}{self._path}"),
            }
            name = "eightyeightpay.api_governor.wait"
            self._hold = self._observer.span(name, "INTERNAL", None, attributes)
        self._hold.add_event(
            "eightyeightpay.api_governor.held",
            {
                "eightyeightpay.api_governor.wait": permit.wait,
                "eightyeightpay.api_governor.cause": permit.cause,
                "eightyeightpay.budget.scope": permit.scope,
            },
        )
        self._hold.set_attribute("eightyeightpay.api_governor.cause", permit.cause)
        self._hold.set_attribute("eightyeightpay.budget.scope", permit.scope)

    def _end_hold(self, *, reserved: bool, error_type: str | None = None) -> None:
        span, self._hold = self._hold, None
        if span is None:
            return
        waited = max(0.0, self._observer._clock() - self._held_since)
        self._waited += waited
        span.set_attribute("eightyeightpay.api_governor.reserved", reserved)
        span.set_attribute("eightyeightpay.api_governor_waited", waited)
        self._observer.close(span, error_type)

    def sending(self, request: HttpRequest) -> Any:
        """A send of the call starts; returns its span."""
        attributes: dict[str, Any] = {
            **self._observer.labels,
            **self._observer.server,
            "http.request.method": request.method,
            "url.full": _redacted(request.url),
            "eightyeightpay.replayed_after_401": self._replayed,
            "eightyeightpay.api_governor_waited": self._waited,
        }
        if self._sends:
            attributes["http.request.resend_count"] = self._sends
        self._sends += 1
        self._waited = 0.0
        return self._observer.span(request.method, "CLIENT", None, attributes)

    def received(self, span: Any, result: HttpResponse | BaseException) -> None:
        """A send ended with a response or a transport error."""
        if isinstance(result, HttpResponse):
            span.set_attribute("http.response.status_code", result.status)
            self._observer.close(span, _error_type(result, None))
        else:
            self._observer.close(span, _error_type(None, result))

    def invalidated(self) -> None:
        """The API answered 401; the next send is the replay."""
        self._replayed = True

    def ended(self, error: BaseException) -> None:
        """The call raised ``error``: a hold still open ends unreserved, failed with it."""
        self._end_hold(reserved=False, error_type=type(error).__name__)
