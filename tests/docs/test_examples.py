"""Every fenced ``python`` block of ``docs/*.md`` runs as its own test case.

Each block runs in-process in a fresh module namespace. The code is compiled with the
Markdown file as its file name and padded so that its line numbers are the file's: a failure
points at the line of the block in the document. A block whose info string is exactly
``python no-run`` needs real 88Pay credentials or network; it is compiled, not run.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import attrs
import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
OPENING = re.compile(r"^(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
RUN = "python"
NO_RUN = "python no-run"


@attrs.frozen
class Example:
    """One fenced block: where it is, its info string and its code."""

    path: Path
    index: int
    line: int
    info: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.path.name}-{self.index}-line{self.line}"


def blocks(path: Path) -> list[Example]:
    """The ``python`` and ``python no-run`` blocks of one Markdown file, in order."""
    found: list[Example] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    number = 0
    while number < len(lines):
        opening = OPENING.match(lines[number])
        number += 1
        if opening is None:
            continue
        fence, info = opening.group("fence"), opening.group("info").strip()
        start = number  # 0-based index of the first code line
        while number < len(lines):
            closing = lines[number].strip()
            if closing.startswith(fence[0] * len(fence)) and not closing.strip(fence[0]):
                break
            number += 1
        if number >= len(lines):
            raise AssertionError(f"{path.name}:{start}: unclosed code fence")
        code = "\n".join(lines[start:number]) + "\n"
        number += 1
        if info in (RUN, NO_RUN):
            found.append(Example(path, len(found), start + 1, info, code))
    return found


def all_examples() -> list[Example]:
    """Every runnable or compile-only block of every page, page by page."""
    return [example for page in sorted(DOCS.glob("*.md")) for example in blocks(page)]


EXAMPLES = all_examples()


def compiled(example: Example) -> types.CodeType:
    """The block's code, numbered as in the Markdown file."""
    padded = "\n" * (example.line - 1) + example.code
    return compile(padded, str(example.path), "exec")


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.id for example in EXAMPLES])
def test_example(example: Example) -> None:
    code = compiled(example)
    if example.info == NO_RUN:
        # Needs real credentials or the network; compiling it still catches typos.
        return
    name = f"docs_example_{example.path.stem}_{example.index}"
    module = types.ModuleType(name)
    module.__file__ = str(example.path)
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    finally:
        del sys.modules[name]


def test_the_pages_have_examples() -> None:
    pages = {example.path.name for example in EXAMPLES}
    for page in ("quickstart.md", "concepts.md", "errors.md", "plugins.md", "security.md"):
        assert page in pages, f"docs/{page} has no python example"


def test_blocks_are_found_with_their_lines(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n```python\nx = 1\n```\n\n````text\n```python\nnot code\n```\n````\n"
        "```python no-run\ny = 2\n```\n```py\nz\n```\n",
        encoding="utf-8",
    )
    found = blocks(page)
    assert [(b.index, b.line, b.info, b.code) for b in found] == [
        (0, 4, RUN, "x = 1\n"),
        (1, 13, NO_RUN, "y = 2\n"),
    ]
    assert compiled(found[0]).co_filename == str(page)
