"""The fenced ``python`` blocks of the documentation, found with their line numbers.

A block whose info string is exactly ``python`` is run by tests/docs/test_examples.py; one
whose info string is ``python no-run`` needs real 88Pay credentials or network and is only
compiled. Both kinds are held to the public face by tests/docs/test_public_face.py.
"""

from __future__ import annotations

import ast
import re
import types
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
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

    def compiled(self) -> types.CodeType:
        """The block's code, numbered as in the Markdown file."""
        return compile(self.padded(), str(self.path), "exec")

    def padded(self) -> str:
        """The code preceded by blank lines, so that its line numbers are the file's."""
        return "\n" * (self.line - 1) + self.code

    def tree(self) -> ast.Module:
        """The block's syntax tree, with the file's line numbers."""
        return ast.parse(self.padded(), str(self.path))


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
