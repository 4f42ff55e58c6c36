"""Shared fixtures: a loopback OBS stand-in (pytest-httpserver) and clients pointed at it."""

from __future__ import annotations

import pytest

from handler.client import RetrySchedule, WorkflowClient
from tests.skip_summary import pytest_terminal_summary  # noqa: F401 - a pytest hook

AK = "AKEXAMPLE"
SK = "SKEXAMPLE-secret-key-0123456789"
TOKEN = "TOKEN-temporary-0123456789"

# The one execution most tests restore, the request naming it, and the service's answer.
PATH = "/v2/workflowexecutions/exec-1"
REQUEST = {"graphName": "graph-1", "executionName": "exec-1"}
RESTORED = {
    "execution_urn": "urn:fgs:r:p:execution:graph-1:exec-1:d",
    "restored_at": "2026-11-27T18:41:28Z",
    "execution_name": "exec-1",
}


def failed_again_when_asked(httpserver) -> None:
    """OBS accepts every restore of exec-1, and it is failed again whenever it is asked: the
    service a restore loop meets (a second restore is preceded by a query)."""
    httpserver.expect_request(PATH, method="PUT").respond_with_json(RESTORED)
    httpserver.expect_request(PATH, method="GET").respond_with_json(
        {"execution_info": {"execution_name": "exec-1", "execution_state": "FAILED"}}
    )


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
            "retry": RetrySchedule(max_attempts=3),
            "sleep": sleeps,
        }
        options.update(overrides)
        client = WorkflowClient(**options)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


# --- entry points -------------------------------------------------------------------------

MAIN_SOURCE = str(
    __import__("pathlib").Path(__file__).resolve().parent.parent / "handler" / "main.py"
)
AUTH_TOKEN = "auth-token-0123456789abcdef"


@pytest.fixture
def function_env(httpserver, tmp_path, monkeypatch):
    """A complete, valid environment for the function, pointed at the loopback OBS stand-in.

    Returned as a dict the test may change before it loads the function; ``apply()`` writes it
    into the process environment (undone after the test).
    """

    class Env(dict):
        def apply(self) -> None:
            for name in list(__import__("os").environ):
                if name.startswith(
                    ("OBS_", "RESTORE_", "K_SINK", "AccessKey", "SecretAccess", "FUNCTION_")
                ):
                    monkeypatch.delenv(name, raising=False)
            for name, value in self.items():
                monkeypatch.setenv(name, value)

    return Env(
        OBS_ENDPOINT=httpserver.url_for("").rstrip("/"),
        OBS_ACCESS_KEY_ID=AK,
        OBS_SECRET_ACCESS_KEY=SK,
        OBS_MAX_ATTEMPTS="2",
        OBS_READ_TIMEOUT="2",
        RESTORE_AUTH_TOKEN=AUTH_TOKEN,
        RESTORE_STATE_URL=f"sqlite:///{tmp_path / 'state.db'}",
        LOG_LEVEL="INFO",
        # Outage mode's default rate (60/m) is proved by tests/test_outage*.py; a test of
        # something else that restores hundreds at once must not be slowed by it.
        RESTORE_RATE_LIMIT="off",
    )


@pytest.fixture
def load_function(function_env):
    """The function as :mod:`handler.main` makes it - its settings read from ``function_env``
    (applied to the environment) - built afresh on each call and closed after the test."""
    from handler.entry import Function
    from handler.settings import load_settings

    built = []

    def loader() -> Function:
        function_env.apply()
        function = Function(load_settings())
        built.append(function)
        return function

    yield loader
    for function in built:
        function.close()


@pytest.fixture
def http_function(function_env):
    """The HTTP target served by functions-framework's own app, as a Flask test client."""
    from functions_framework import create_app

    apps = []

    def factory(target="restore", signature_type="http"):
        function_env.apply()
        app = create_app(target, MAIN_SOURCE, signature_type)
        apps.append(app)
        return app.test_client()

    yield factory
    import sys

    module = sys.modules.get("main")  # what functions-framework loaded: handler/main.py
    if module is not None:
        module.FUNCTION.close()


def log_lines(text: str) -> list[dict]:
    """Every stdout line parsed as JSON (a line that is not JSON fails the test)."""
    import json

    return [json.loads(line) for line in text.splitlines() if line.strip()]
