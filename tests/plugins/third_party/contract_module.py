"""The third party's own test module: the shipped contract suite pointed at its store."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dict_token_store import DictBackend, DictStore  # type: ignore[import-not-found]

from eightyeightpay.adapters.store_contract import StoreContract


class TestDictStore(StoreContract):
    @pytest.fixture
    def backend(self) -> DictBackend:
        return DictBackend()

    @pytest.fixture
    def make_store(self, backend: DictBackend) -> Callable[..., Any]:
        return lambda **options: DictStore(backend, **options)

    @pytest.fixture
    def store_outage(self, backend: DictBackend) -> Any:
        @contextlib.contextmanager
        def outage() -> Iterator[None]:
            backend.up = False
            try:
                yield
            finally:
                backend.up = True

        return outage
