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
    generated = diagrams.render() + diagrams.render_layers()
    assert "mermaid" not in generated
    assert generated.count("```{graphviz}\n:alt: ") == 3
    assert len(re.findall(r"^digraph \w+ \{$", generated, re.M)) == 3


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


def test_the_layers_picture_is_the_import_linter_contract() -> None:
    generated = diagrams.render_layers()
    layers = diagrams.layers()
    assert [layer.name for layer in layers[:2]] == ["adapters", "plugins"]
    core = [module for layer in layers[2:] for module in layer.modules]
    assert {"ports", "machine", "tokens", "errors"} <= set(core)
    for module in core:
        assert f"{module}.py" in generated
    assert "adapters -> plugins" in generated


def test_a_stale_page_is_detected() -> None:
    page = diagrams.PAGE.read_text(encoding="utf-8")
    for tampered in (
        page.replace("ServeAndRefresh", "ServeLater"),
        page.replace("ports.py", "port.py"),
    ):
        assert tampered != page
        assert diagrams.current_page(tampered) != tampered
