"""Sphinx configuration: the Markdown pages of docs/ (myst-parser) and an autodoc reference.

Build with ``bash .ci/docs`` (warnings are errors, nitpicky cross-references).
"""

from __future__ import annotations

import sys
from pathlib import Path

from docutils.nodes import Element
from pygments.lexers.special import TextLexer
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.highlighting import lexers

project = "eightyeightpay"
author = "eightyeightpay contributors"
copyright = "eightyeightpay contributors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
suppress_warnings: list[str] = []

# Markdown: heading anchors for links such as quickstart.md#configure.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# Mermaid diagrams (concepts.md) are shown as their source text by Sphinx; GitHub draws them.
lexers["mermaid"] = TextLexer()

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "alabaster"

# Nitpicky: every cross-reference must resolve. The build runs offline (no intersphinx), so
# names of the standard library and of third-party packages are not checked; nor are private
# helpers (a leading underscore), the two unexported ``Callable`` aliases of the drivers and
# the managers' undocumented common base.
nitpicky = True
nitpick_ignore_regex = [
    ("py:.*", r"(collections\.abc|contextlib|datetime|enum|typing|types|ssl|socket|pathlib)\..*"),
    ("py:.*", r"(httpx|requests|pluggy|cryptography|ec|attrs|trio|asyncio)\..*"),
    ("py:.*", r"(.*\.)?_\w+"),
    ("py:class", r"Clock|AnyManager|ManagerBase"),
]


def _resolve_by_short_name(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: Element
) -> Element | None:
    """Resolve ``Sandbox`` or ``...emulator.Account`` to the one documented object of that name.

    Annotations that only exist for type checkers (``if TYPE_CHECKING:`` imports) reach
    autodoc as bare names, and re-exported classes are documented where users import them.
    A name that matches no documented object, or several, stays unresolved (and warns).
    """
    if node.get("refdomain") != "py":
        return None
    target = str(node["reftarget"])
    short = target.rsplit(".", 1)[-1]
    domain = env.get_domain("py")
    matches = [
        name
        for name, entry in domain.objects.items()
        if name.rsplit(".", 1)[-1] == short
        and not entry.aliased  # the canonical entry of a re-exported class
        and entry.objtype in ("class", "data", "exception", "function")
    ]
    if len(matches) != 1:
        return None
    node["reftarget"] = matches[0]
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], matches[0], node, contnode
    )


HERE = Path(__file__).resolve().parent


def _draw_dashboard(app: Sphinx) -> None:
    """Draw observability.md's dashboard from a simulated run (docs/dashboard.py)."""
    sys.path.insert(0, str(HERE))
    try:
        import dashboard
    finally:
        sys.path.remove(str(HERE))
    dashboard.write(HERE / "_generated" / "dashboard.svg")


def setup(app: Sphinx) -> None:
    """Install the short-name resolver and draw the generated pictures."""
    app.connect("missing-reference", _resolve_by_short_name)
    app.connect("builder-inited", _draw_dashboard)
