"""docs/store-plugin.md owns the fleet-store contract: its table names every operation of the
port (core/ports.py's ``FleetOperations``) with the port's own parameters, and no other page
restates an operation's signature (they link to the table instead)."""

from __future__ import annotations

import inspect
import re

from eightyeightpay.ports import AsyncFleetOperations, FleetOperations
from tests.docs.examples import DOCS

PAGE = DOCS / "store-plugin.md"
ROW = re.compile(r"^\| `(?P<name>\w+)\((?P<params>[^)]*)\)` \|", re.MULTILINE)


def _operations(port: type) -> dict[str, list[str]]:
    return {
        name: list(inspect.signature(method).parameters)[1:]  # without self
        for name, method in vars(port).items()
        if inspect.isfunction(method) and not name.startswith("_")
    }


def test_the_contract_table_is_the_ports_operations_with_their_parameters() -> None:
    table = {
        row.group("name"): [part.strip() for part in row.group("params").split(",")]
        for row in ROW.finditer(PAGE.read_text(encoding="utf-8"))
    }
    assert table == _operations(FleetOperations)
    assert _operations(AsyncFleetOperations) == _operations(FleetOperations)


def test_no_other_page_restates_an_operations_signature() -> None:
    signatures = [f"`{name}(key" for name in _operations(FleetOperations)]
    for page in sorted(DOCS.glob("*.md")):
        if page == PAGE:
            continue
        text = page.read_text(encoding="utf-8")
        assert not [shown for shown in signatures if shown in text], page.name
