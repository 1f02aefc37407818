"""docs/concepts.md holds the diagrams the code generates today (tests/docs/diagrams.py)."""

from __future__ import annotations

import re

from eightyeightpay import Freshness
from eightyeightpay.machine import Decision, Effect
from tests.docs import diagrams


def test_the_concepts_page_holds_the_current_diagrams() -> None:
    page = diagrams.PAGE.read_text(encoding="utf-8")
    for region in diagrams.REGIONS:
        assert diagrams.begin(region) in page
    assert diagrams.current_page(page) == page, (
        "docs/concepts.md is out of date with the code: run `python -m tests.docs.diagrams`"
    )


def test_the_diagrams_are_graphviz_blocks_not_mermaid() -> None:
    generated = diagrams.render()
    assert "mermaid" not in generated
    assert generated.count("```{graphviz}\n:alt: ") == 2
    assert len(re.findall(r"^digraph \w+ \{$", generated, re.M)) == 2


def test_the_diagram_covers_every_state_decision_and_effect() -> None:
    generated = diagrams.render()
    for member in Freshness:
        assert f"| {member.name} |" in generated
        assert f"    {member.name} -> {member.name} [label=" in generated
    for decision in Decision.__args__:
        assert f"`{decision.__name__}`" in generated
    for effect in Effect.__args__:
        assert f"`{effect.__name__}`" in generated
        assert f'[label="{effect.__name__}\\n' in generated


def test_a_stale_page_is_detected() -> None:
    page = diagrams.PAGE.read_text(encoding="utf-8")
    tampered = page.replace("ServeAndRefresh", "ServeLater")
    assert tampered != page
    assert diagrams.current_page(tampered) != tampered
