"""docs/concepts.md holds the diagram the core generates today (tests/docs/diagrams.py)."""

from __future__ import annotations

from eightyeightpay import Freshness
from eightyeightpay.machine import Decision, Effect
from tests.docs import diagrams


def test_the_concepts_page_holds_the_current_diagram() -> None:
    page = diagrams.PAGE.read_text(encoding="utf-8")
    assert diagrams.BEGIN in page and diagrams.END in page
    assert diagrams.page_with(page, diagrams.render()) == page, (
        "docs/concepts.md is out of date with the core: run `python -m tests.docs.diagrams`"
    )


def test_the_diagram_covers_every_state_decision_and_effect() -> None:
    generated = diagrams.render()
    for member in Freshness:
        assert f"| {member.name} |" in generated
    for decision in Decision.__args__:
        assert f"`{decision.__name__}`" in generated
    for effect in Effect.__args__:
        assert f"`{effect.__name__}`" in generated


def test_a_stale_page_is_detected() -> None:
    page = diagrams.PAGE.read_text(encoding="utf-8")
    tampered = page.replace("ServeAndRefresh", "ServeLater")
    assert diagrams.page_with(tampered, diagrams.render()) != tampered
