"""Shared by the store tests: an injected clock and stores of every backend.

Time-dependent behaviour (marker expiry, retention, the budget's sliding window) uses the
injected clock. ``make_store`` needs ``redis_url``: a test module that uses it declares
``pytest_plugins = ["tests.redis_server"]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from handler.store import StateStore, open_store

BACKENDS = ["memory", "sqlite", "redis"]
START = 1_700_000_000.0
HOUR = 3600.0


class FakeClock:
    """A wall clock that only moves when told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS)
def make_store(request, tmp_path):
    """Open stores of one backend; SQLite and Redis stores made here share their data."""
    stores: list[StateStore] = []
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state' / 'store.db'}"
    else:
        url = request.getfixturevalue("redis_url")

    def factory(clock: Callable[[], float] = time.time) -> StateStore:
        store = open_store(url, clock=clock)
        stores.append(store)
        return store

    factory.kind = request.param
    yield factory
    for store in stores:
        store.close()


@pytest.fixture
def store(make_store, clock) -> StateStore:
    return make_store(clock)
