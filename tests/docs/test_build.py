"""The documentation builds, as ``.ci/docs`` builds it, without a single warning and offline."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import eightyeightpay

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs built into a temporary directory with the command of .ci/docs."""
    out = tmp_path_factory.mktemp("docs")
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-b", "html"]
    result = subprocess.run(
        [*command, "-d", str(out / "doctrees"), "docs", str(out / "html")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    return out / "html"


def test_the_docs_build_without_warnings(html: Path) -> None:
    assert (html / "reference.html").is_file()
    assert (html / "concepts.html").is_file()


def test_the_diagrams_are_pictures_in_the_page(html: Path) -> None:
    page = (html / "concepts.html").read_text(encoding="utf-8")
    pictures = re.findall(
        r'<div class="graphviz" role="img" aria-label="[^"]+"><svg\b.*?</svg>', page, re.S
    )
    assert len(pictures) == 3, "expected the three diagrams of concepts.md as inline <svg>"
    for picture in pictures:
        assert '<g id="graph0"' in picture and "<text" in picture  # drawn, not empty
    states, protocol, layers = pictures
    for text in (">FRESH", ">STALE", ">EXPIRED", "fresh_until passes"):
        assert f"{text}</text>" in states
    assert ">AcquireLock</text>" in protocol and ">Settled with RateLimited</text>" in protocol
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = contract["tool"]["importlinter"]["contracts"]
    (layered,) = (each for each in contracts if each["type"] == "layers")
    core = [name.strip() for entry in layered["layers"][2:] for name in re.split("[:|]", entry)]
    assert "ports" in core and "machine" in core
    for module in core:  # the picture is the contract of the code being documented
        assert f"{module}.py" in layers
    # Nothing is left as diagram source text, and nothing is fetched from the network.
    assert "stateDiagram" not in page and "digraph" not in page
    assert "mermaid" not in page.lower()
    assert not re.search(r'<script[^>]+src="https?:', page)


def test_the_reference_tables_every_public_name_with_its_summary(html: Path) -> None:
    page = (html / "reference.html").read_text(encoding="utf-8")
    start = page.index('<section id="public-names">')
    table = page[start : page.index("</table>", start)]
    rows = re.findall(r'<tr class="row-(?:odd|even)">(.*?)</tr>', table, re.S)
    assert len(rows) == len(eightyeightpay.__all__) + 1  # and the header
    for name, row in zip(eightyeightpay.__all__, rows[1:], strict=True):
        cells = re.findall(r"<td><p>(.*?)</p></td>", row, re.S)
        assert len(cells) == 3, row
        link, kind, summary = cells
        assert '<a class="reference internal" href="#eightyeightpay.' in link, link
        assert f'<span class="pre">{name}</span>' in link
        assert kind in ("class", "error", "function", "constant", "type", "protocol (a port)")
        assert len(summary) > 10 and "str(object=" not in summary, (name, summary)


def test_the_ci_script_runs_the_same_build() -> None:
    script = (ROOT / ".ci" / "docs").read_text(encoding="utf-8")
    assert "python -m sphinx -W --keep-going -n -b html docs docs/_build/html" in script
