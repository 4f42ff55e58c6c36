"""Shared fixtures: a loopback OBS stand-in (pytest-httpserver) and clients pointed at it."""

from __future__ import annotations

import pytest

from handler.client import RetryPolicy, WorkflowClient

AK = "AKEXAMPLE"
SK = "SKEXAMPLE-secret-key-0123456789"
TOKEN = "TOKEN-temporary-0123456789"


class SleepRecorder:
    """Stands in for time.sleep so retry tests are instant and can assert the delays."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def make_client(httpserver, sleeps):
    """Build clients against the loopback server; closed at the end of the test."""
    clients = []

    def factory(**overrides) -> WorkflowClient:
        options = {
            "access_key_id": AK,
            "secret_access_key": SK,
            "server": httpserver.url_for("").rstrip("/"),
            "timeout": (1.0, 2.0),
            "retry": RetryPolicy(max_attempts=3),
            "sleep": sleeps,
        }
        options.update(overrides)
        client = WorkflowClient(**options)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()
