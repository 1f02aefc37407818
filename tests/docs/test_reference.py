"""docs/reference.md lists every public name: the list generated from ``eightyeightpay.__all__``."""

from __future__ import annotations

import eightyeightpay
from tests.docs import public_names


def test_the_reference_lists_the_current_public_names() -> None:
    page = public_names.PAGE.read_text(encoding="utf-8")
    assert public_names.BEGIN in page and public_names.END in page
    assert public_names.listed(page) == list(eightyeightpay.__all__), (
        "docs/reference.md is out of date with eightyeightpay.__all__: "
        "run `python -m tests.docs.public_names`"
    )
    assert public_names.page_with(page, public_names.render()) == page


def test_the_face_is_what_dir_shows_and_every_name_loads() -> None:
    assert len(set(eightyeightpay.__all__)) == len(eightyeightpay.__all__)
    assert set(eightyeightpay.__all__) <= set(dir(eightyeightpay))
    for name in eightyeightpay.__all__:
        assert getattr(eightyeightpay, name) is not None


def test_a_stale_page_is_detected() -> None:
    page = public_names.PAGE.read_text(encoding="utf-8")
    tampered = page.replace("   Sandbox\n", "", 1)
    assert tampered != page
    assert public_names.listed(tampered) != list(eightyeightpay.__all__)
