"""The soak's timeline: what happened each second, and why each failed call failed.

The soak (``tests/soak/run.py``) records, on one monotonic clock counted from its start:

- every call's outcome by second (served, or the error's type) and, for each failed call,
  the window its deadline gave it (the call's start to start + ``Policy.deadline``);
- every token request the emulator received: when, which injected fault it took (if any)
  and how it was answered;
- every change of the emulator's fault queue: injections and faults taken, with the number
  of faults then waiting for the token endpoint and whether the next token request would
  fail (the first of them is not a latency fault, which still answers);
- the library's own view once a second: each manager's ``stats()`` (minute and hour spent,
  cool-down, failures in a row, token left, store mode).

:func:`classify` then sorts the failed calls:

- ``a_fault``: the token endpoint would have failed any token request sent at any moment of
  the caller's deadline window (a failing injected fault waited at its head throughout);
- ``a_and_b``: that, and the budget (below) was spent throughout the window as well;
- ``b_budget``: not ``a_fault``, and at every moment of the window either 88Pay's 10 a
  minute or 100 an hour were already spent by the token requests sent before (counted at
  the emulator, which sees every send of the three managers), or a failing fault waited
  (``b_budget`` holds the windows that were only partly faulted);
- ``c_unexplained``: at some moment of the window the endpoint would have answered and the
  budget allowed a send, yet the call failed.

Time is binned in tenths of a second; a window is explained only when every bin it touches
is (conservative: a bin counts as usable if any instant in it is).
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from eightyeightpay.plugins.sandbox import Fault, Sandbox
from eightyeightpay.plugins.sandbox.emulator import TOKEN_PATH, FaultKind

BIN = 0.1
"""Seconds per bin of the classification."""


CLASSES = ("a_fault", "a_and_b", "b_budget", "c_unexplained")
"""The classes of a failed call, in the order the report lists them (see the module doc)."""


def _token_bound(path: str | None) -> bool:
    return path is None or path == TOKEN_PATH


class RecordingSandbox(Sandbox):
    """The emulator, logging its token requests and its fault queue on the soak's clock."""

    def __init__(self, clock: Any, labels: dict[int, str]) -> None:
        super().__init__()
        self._clock_of_soak = clock
        self._labels = labels
        self._taken = threading.local()
        self.token_log: list[dict[str, Any]] = []
        self.fault_log: list[dict[str, Any]] = []

    def _label(self, fault: Fault) -> str:
        return self._labels.get(id(fault), fault.kind.value)

    def _queue_state(self) -> tuple[int, bool]:
        # Called with the lock held.
        waiting = [q for q in self._faults if _token_bound(q.path)]
        pending = sum(q.remaining for q in waiting)
        head_fails = bool(waiting) and waiting[0].fault.kind is not FaultKind.LATENCY
        return pending, head_fails

    def inject(self, fault: Fault, *, path: str | None = TOKEN_PATH, times: int = 1) -> None:
        super().inject(fault, path=path, times=times)
        with self._lock:
            pending, head_fails = self._queue_state()
            self.fault_log.append(
                {
                    "t": self._clock_of_soak(),
                    "event": "inject",
                    "fault": self._label(fault),
                    "path": path or "any",
                    "token_pending": pending,
                    "token_head_fails": head_fails,
                }
            )

    def _take_fault(self, path: str | None, kind: FaultKind | None = None) -> Fault | None:
        fault = super()._take_fault(path, kind)
        if fault is not None:
            self._taken.fault = fault
            pending, head_fails = self._queue_state()
            self.fault_log.append(
                {
                    "t": self._clock_of_soak(),
                    "event": "taken",
                    "fault": self._label(fault),
                    "by": "token" if path == TOKEN_PATH else "api",
                    "token_pending": pending,
                    "token_head_fails": head_fails,
                }
            )
        return fault

    def pending_token_faults(self) -> int:
        """Faults waiting that the next token requests would take."""
        with self._lock:
            return self._queue_state()[0]

    def handle(self, request: Any, now: float) -> Any:
        self._taken.fault = None
        at = self._clock_of_soak()
        reply = super().handle(request, now)
        if request.path.split("?")[0] == TOKEN_PATH:
            fault = self._taken.fault
            status = None if reply.response is None else reply.response.status
            answer = reply.connection_fault.value if reply.connection_fault else str(status)
            with self._lock:
                self.token_log.append(
                    {
                        "t": round(at, 3),
                        "fault": None if fault is None else self._label(fault),
                        "answer": answer,
                        "ok": status == 200 and (fault is None or fault.kind is FaultKind.LATENCY),
                    }
                )
        return reply


class Recorder:
    """Per-second outcomes and each failed call's window, thread-safe, on one clock."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.served: Counter[tuple[int, str]] = Counter()
        self.errors: Counter[tuple[int, str]] = Counter()
        self.windows: Counter[tuple[str, int, int]] = Counter()
        self.stats: list[dict[str, Any]] = []
        self.redis_down: list[list[float]] = []

    def clock(self) -> float:
        """Seconds since the soak started."""
        return time.monotonic() - self.started

    def ok(self, runtime: str, now: float) -> None:
        """A call of ``runtime`` served at monotonic ``now``."""
        with self.lock:
            self.served[int(now - self.started), runtime] += 1

    def failed(self, runtime: str, error: BaseException, began: float, now: float) -> None:
        """A call of ``runtime`` that began at monotonic ``began`` failed at ``now``."""
        name = f"{runtime}:{type(error).__name__}"
        if getattr(error, "local", False):
            name += "(local)"
        with self.lock:
            self.errors[int(now - self.started), name] += 1
            self.windows[
                name, int((began - self.started) / BIN), int((now - self.started) / BIN)
            ] += 1


def _step_bins(changes: Sequence[tuple[float, bool]], bins: int) -> list[bool]:
    """For each bin, whether the state (False before the first change) held True throughout."""
    out = [False] * bins
    state, index = False, 0
    for b in range(bins):
        start, end = b * BIN, (b + 1) * BIN
        while index < len(changes) and changes[index][0] <= start:
            state = changes[index][1]
            index += 1
        held = state
        probe = index
        while probe < len(changes) and changes[probe][0] < end:
            held = held and changes[probe][1]
            probe += 1
        out[b] = held
    return out


def budget_spent_at(sends: Sequence[float], t: float, per_minute: int, per_hour: int) -> bool:
    """Whether the sends at ``sends`` (sorted) left no room for one more at ``t``."""
    right = bisect.bisect_right(sends, t)
    minute = right - bisect.bisect_right(sends, t - 60.0)
    hour = right - bisect.bisect_right(sends, t - 3600.0)
    return minute >= per_minute or hour >= per_hour


def classify(
    windows: Iterable[tuple[tuple[str, int, int], int]],
    fault_changes: Sequence[tuple[float, bool]],
    sends: Sequence[float],
    seconds: float,
    deadline: float,
    per_minute: int = 10,
    per_hour: int = 100,
) -> dict[str, Any]:
    """Sort failed calls into ``a_fault``, ``b_budget`` and ``c_unexplained`` (module doc).

    ``windows``: ((error name, start bin, end bin), count) pairs; ``fault_changes``: (time,
    whether a token request sent then would fail) at each change of the fault queue;
    ``sends``: sorted times of the token requests the emulator received; ``seconds``: the
    run's length; ``deadline``: the callers' deadline in seconds.
    """
    bins = math.ceil(seconds / BIN) + math.ceil(deadline / BIN) + 2
    faulted = _step_bins(fault_changes, bins)
    spent = [
        budget_spent_at(sends, b * BIN, per_minute, per_hour)
        and budget_spent_at(sends, (b + 1) * BIN - 1e-6, per_minute, per_hour)
        for b in range(bins)
    ]
    fault_prefix, spent_prefix, either_prefix = [0], [0], [0]
    for b in range(bins):
        fault_prefix.append(fault_prefix[-1] + faulted[b])
        spent_prefix.append(spent_prefix[-1] + spent[b])
        either_prefix.append(either_prefix[-1] + (faulted[b] or spent[b]))
    span = math.ceil(deadline / BIN)
    classes: dict[str, Counter[str]] = {k: Counter() for k in CLASSES}
    unexplained: Counter[int] = Counter()
    for (name, first, _last), count in windows:
        end = min(first + span, bins)
        whole = end - first
        all_faulted = fault_prefix[end] - fault_prefix[first] == whole
        all_spent = spent_prefix[end] - spent_prefix[first] == whole
        if all_faulted and all_spent:
            classes["a_and_b"][name] += count
        elif all_faulted:
            classes["a_fault"][name] += count
        elif either_prefix[end] - either_prefix[first] == whole:
            classes["b_budget"][name] += count
        else:
            classes["c_unexplained"][name] += count
            unexplained[int(first * BIN)] += count
    return {
        "classes": {k: dict(v) for k, v in classes.items()},
        "totals": {k: sum(v.values()) for k, v in classes.items()},
        "unexplained_by_second": dict(sorted(unexplained.items())),
        "endpoint_failing_seconds": round(sum(faulted[: math.ceil(seconds / BIN)]) * BIN, 1),
        "budget_spent_seconds": round(sum(spent[: math.ceil(seconds / BIN)]) * BIN, 1),
    }


def _spent_by_faulted(log: Sequence[dict[str, Any]], t: float, span: float) -> tuple[int, int]:
    """(token requests, faulted ones) the emulator received in the ``span`` s before ``t``."""
    inside = [r for r in log if t - span < r["t"] <= t]
    return len(inside), sum(1 for r in inside if not r["ok"])


def explain(recorder: Recorder, sandbox: RecordingSandbox, seconds: float) -> dict[str, Any]:
    """The report's ``why`` section: shares, failing time, the classification, the budget."""
    from eightyeightpay import Policy

    policy = Policy()
    token_log = sorted(sandbox.token_log, key=lambda r: r["t"])
    sends = [r["t"] for r in token_log]
    changes = [(e["t"], e["token_head_fails"]) for e in sandbox.fault_log]
    token_windows = [(k, n) for k, n in recorder.windows.items() if ":Api" not in k[0]]
    api_errors = sum(n for k, n in recorder.windows.items() if ":Api" in k[0])
    api_in_outage = sum(
        n
        for (name, first, _), n in recorder.windows.items()
        if ":Api" in name and any(a <= first * BIN <= b for a, b in recorder.redis_down)
    )
    verdict = classify(token_windows, changes, sends, seconds, policy.deadline)
    served = sum(recorder.served.values())
    errors = sum(recorder.errors.values())
    failing = {t for t, _ in recorder.errors}
    by_runtime: dict[str, int] = {}
    for runtime in sorted({name.split(":")[0] for _, name in recorder.errors}):
        by_runtime[runtime] = len(
            {t for t, name in recorder.errors if name.startswith(runtime + ":")}
        )
    faulted = [r for r in token_log if not r["ok"]]
    token_injected = [e for e in sandbox.fault_log if e["event"] == "inject" and e["path"] != "any"]
    any_injected = [e for e in sandbox.fault_log if e["event"] == "inject" and e["path"] == "any"]
    exhausted: dict[str, Any] | None = None
    for r in token_log:
        if budget_spent_at(sends, r["t"] + 1e-6, policy.per_minute, policy.per_hour):
            hour, hour_faulted = _spent_by_faulted(token_log, r["t"] + 1e-6, 3600.0)
            if hour >= policy.per_hour:
                exhausted = {"t": r["t"], "hour_sends": hour, "of_them_faulted": hour_faulted}
                break
    minute_full = 0
    for r in token_log:
        if _spent_by_faulted(token_log, r["t"] + 1e-6, 60.0)[0] >= policy.per_minute:
            minute_full += 1
    unexplained = verdict["unexplained_by_second"]
    in_outage = sum(
        n
        for t, n in unexplained.items()
        if any(a - policy.deadline <= t <= b for a, b in recorder.redis_down)
    )
    hours = seconds / 3600.0
    return {
        "calls": served + errors,
        "errors": errors,
        "share_of_calls_in_error_percent": round(100.0 * errors / max(1, served + errors), 3),
        "failing_seconds": len(failing),
        "failing_seconds_by_runtime": by_runtime,
        "run_seconds": round(seconds, 1),
        "classification": verdict["classes"],
        "classified_totals": verdict["totals"],
        "api_path_errors": api_errors,
        "api_path_errors_starting_while_redis_was_down": api_in_outage,
        "unexplained_by_start_second": {str(k): v for k, v in unexplained.items()},
        "unexplained_starting_within_a_redis_outage_or_deadline_before": in_outage,
        "endpoint_failing_seconds": verdict["endpoint_failing_seconds"],
        "budget_spent_seconds": verdict["budget_spent_seconds"],
        "token_requests_at_emulator": len(token_log),
        "token_requests_faulted": len(faulted),
        "token_requests_by_fault": dict(Counter(r["fault"] or "none" for r in token_log)),
        "token_requests_per_hour_pace": round(len(token_log) / hours, 1),
        "token_path_faults_injected": len(token_injected),
        "token_path_faults_per_hour": round(len(token_injected) / hours, 1),
        "any_path_faults_injected": len(any_injected),
        "token_faults_pending_at_end": sandbox.pending_token_faults(),
        "budget_absorbable_faults_per_hour": policy.per_hour - policy.max_hourly_cost,
        "hour_budget_first_spent": exhausted,
        "token_requests_sent_with_minute_budget_then_full": minute_full,
        "redis_down": recorder.redis_down,
    }


def timeline(recorder: Recorder, sandbox: RecordingSandbox) -> dict[str, Any]:
    """The per-second record behind :func:`explain` (written next to the report)."""
    seconds: dict[int, dict[str, dict[str, int]]] = {}
    for (t, name), n in recorder.served.items():
        seconds.setdefault(t, {"served": {}, "errors": {}})["served"][name] = n
    for (t, name), n in recorder.errors.items():
        seconds.setdefault(t, {"served": {}, "errors": {}})["errors"][name] = n
    return {
        "per_second": [{"t": t, **seconds[t]} for t in sorted(seconds)],
        "token_requests": sandbox.token_log,
        "fault_queue": sandbox.fault_log,
        "library_stats": recorder.stats,
        "redis_down": recorder.redis_down,
        "error_windows": [
            [name, round(first * BIN, 1), round(last * BIN, 1), n]
            for (name, first, last), n in sorted(recorder.windows.items(), key=lambda i: i[0][1])
        ],
    }


def summary(report: dict[str, Any]) -> str:
    """A few lines for people, from the report."""
    why = report["why"]
    totals = why["classified_totals"]
    first = why["hour_budget_first_spent"]
    spent = (
        "never"
        if first is None
        else f"at {first['t']:.0f} s ({first['of_them_faulted']} of its "
        f"{first['hour_sends']} requests faulted)"
    )
    return "\n".join(
        [
            f"calls {why['calls']:,}, in error {why['errors']:,} "
            f"({why['share_of_calls_in_error_percent']} %); failing seconds "
            f"{why['failing_seconds']} of {why['run_seconds']:.0f}",
            f"why: a fault longer than the deadline {totals['a_fault']:,}; that and a spent "
            f"budget {totals['a_and_b']:,}; the budget {totals['b_budget']:,}; unexplained "
            f"{totals['c_unexplained']:,}; "
            f"API-path errors {why['api_path_errors']}",
            f"token requests {why['token_requests_at_emulator']} "
            f"({why['token_requests_faulted']} faulted; "
            f"{why['token_requests_per_hour_pace']}/h pace); token-path faults injected "
            f"{why['token_path_faults_injected']} ({why['token_path_faults_per_hour']}/h; the "
            f"budget absorbs {why['budget_absorbable_faults_per_hour']:.0f}/h); "
            f"still pending at the end {why['token_faults_pending_at_end']}",
            f"endpoint failing {why['endpoint_failing_seconds']} s, budget spent "
            f"{why['budget_spent_seconds']} s; hour budget first spent {spent}",
        ]
    )
