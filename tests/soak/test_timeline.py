"""The soak's classification of failed calls, on hand-made timelines (no soak is run)."""

from __future__ import annotations

from tests.soak.timeline import BIN, budget_spent_at, classify


def window(name: str, start: float, end: float, count: int = 1) -> tuple[tuple[str, int, int], int]:
    return (name, int(start / BIN), int(end / BIN)), count


def test_a_window_faulted_throughout_is_explained_by_the_fault() -> None:
    changes = [(5.0, True), (30.0, False)]
    verdict = classify([window("trio:ServerError", 10.0, 10.0, 50)], changes, [], 60.0, 10.0)
    assert verdict["totals"] == {"a_fault": 50, "a_and_b": 0, "b_budget": 0, "c_unexplained": 0}


def test_a_fault_that_ends_within_the_deadline_explains_nothing() -> None:
    changes = [(5.0, True), (15.0, False)]  # usable from 15 s: the caller of 10 s had until 20
    verdict = classify([window("threads:ServerError", 10.0, 10.2, 8)], changes, [], 60.0, 10.0)
    assert verdict["totals"]["c_unexplained"] == 8
    assert verdict["unexplained_by_second"] == {10: 8}


def test_a_spent_minute_budget_explains_a_refusal_until_a_send_leaves_it() -> None:
    sends = [float(s) for s in range(100, 110)]  # ten sends: the minute is full until 160 s
    inside = window("asyncio:RateLimited(local)", 140.0, 140.0, 5)
    across = window("asyncio:RateLimited(local)", 155.0, 155.0, 3)  # room from 160 s
    verdict = classify([inside, across], [], sends, 300.0, 10.0)
    assert verdict["totals"]["b_budget"] == 5
    assert verdict["totals"]["c_unexplained"] == 3


def test_faults_then_a_spent_budget_together_explain_a_window() -> None:
    sends = [float(s) for s in range(100, 110)]
    changes = [(150.0, True), (158.0, False)]  # faulted until 158, budget spent until 160
    verdict = classify(
        [window("trio:ConnectionLost", 149.0, 149.0), window("trio:X", 150.0, 150.0)],
        changes,
        sends,
        300.0,
        10.0,
    )
    assert verdict["totals"]["b_budget"] == 2
    assert verdict["totals"]["c_unexplained"] == 0


def test_the_hour_budget() -> None:
    sends = [float(s * 30) for s in range(100)]  # 100 sends by 2970 s
    assert budget_spent_at(sends, 2980.0, 10, 100)
    assert not budget_spent_at(sends, 3600.5, 10, 100)  # the first has left the hour
