"""The store recipes of docs/stores.md, run as written: each ``# recipe: NAME`` block is
executed with the placeholders (names in capitals) the test supplies, and yields ``store``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

PAGE = Path(__file__).resolve().parent.parent / "docs" / "stores.md"


def recipe_source(name: str) -> str:
    """The code of the ``# recipe: name`` block of docs/stores.md."""
    text = PAGE.read_text(encoding="utf-8")
    found = re.search(rf"```python no-run\n# recipe: {re.escape(name)}\n(.*?)```", text, re.S)
    if found is None:
        raise LookupError(f"docs/stores.md has no '# recipe: {name}' block")
    return found.group(1)


def recipe_store(name: str, **placeholders: Any) -> Any:
    """Run the recipe with ``placeholders`` as its globals; returns the ``store`` it built."""
    scope: dict[str, Any] = dict(placeholders)
    exec(compile(recipe_source(name), str(PAGE), "exec"), scope)
    return scope["store"]
