"""Concurrent deliveries against the real server with several workers: one restore, no more.

50 identical deliveries arrive at once at a functions-framework server with 4 worker
processes that share one state store; the emulator counts the restores it receives.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from handler.devtools.emulator import Emulator
from handler.store import open_store
from tests.conftest import AK, AUTH_TOKEN, SK
from tests.function_server import function_server

pytest_plugins = ["tests.redis_server"]

DELIVERIES = 50
HEADERS = {"Authorization": f"Bearer {AUTH_TOKEN}"}


def failure_event(event_id: str, execution: str = "exec-1") -> dict:
    return {
        "events": [
            {
                "specversion": "1.0",
                "id": event_id,
                "source": "HC.OBS",
                "type": "com.huaweicloud.obs.workflow.execution.failed",
                "data": {"graph_name": "graph-1", "execution_name": execution},
            }
        ]
    }


def deliver_all_at_once(url: str, bodies: list[dict]) -> list[tuple[int, str]]:
    """POST every body at the same moment (a barrier); return (status, outcome) pairs."""
    barrier = threading.Barrier(len(bodies), timeout=30)

    def one(body: dict) -> tuple[int, str]:
        with requests.Session() as session:
            barrier.wait()
            response = session.post(url, json=body, headers=HEADERS, timeout=60)
        return response.status_code, response.json()["results"][0]["outcome"]

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(one, bodies))


def redeliver_until_final(url: str, bodies: list[dict], rounds: int = 10) -> list[str]:
    """Deliver every body at once, again and again for those answered 503 (as the platform
    does, a bounded number of times); the final outcomes, once every body got one."""
    outcomes: list[str] = []
    for _ in range(rounds):
        answers = deliver_all_at_once(url, bodies)
        outcomes += [outcome for status, outcome in answers if status != 503]
        bodies = [body for body, (status, _) in zip(bodies, answers, strict=True) if status == 503]
        if not bodies:
            return outcomes
    raise AssertionError(f"{len(bodies)} deliveries still answered 503 after {rounds} rounds")


@pytest.fixture
def emulator():
    with Emulator(credentials={AK: SK}) as running:
        running.seed("graph-1", "exec-1", "FAILED")
        yield running


@pytest.fixture(params=["redis", "sqlite"])
def state_url(request, tmp_path):
    if request.param == "redis":
        return request.getfixturevalue("redis_url")
    return f"sqlite:///{tmp_path / 'shared-state.db'}"


def function_environment(emulator, state_url, **extra) -> dict[str, str]:
    return {
        "OBS_ENDPOINT": emulator.url,
        "OBS_ACCESS_KEY_ID": AK,
        "OBS_SECRET_ACCESS_KEY": SK,
        "RESTORE_AUTH_TOKEN": AUTH_TOKEN,
        "RESTORE_STATE_URL": state_url,
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def test_identical_concurrent_deliveries_restore_exactly_once(emulator, state_url):
    with function_server(function_environment(emulator, state_url), workers=4) as url:
        answers = deliver_all_at_once(url, [failure_event("evt-1")] * DELIVERIES)
        # Deliveries that found the first one still in flight answered 503: redeliver them.
        retried = [status for status, _ in answers if status == 503]
        redelivered = (
            deliver_all_at_once(url, [failure_event("evt-1")] * len(retried)) if retried else []
        )

    puts = [call for call in emulator.calls if call.method == "PUT"]
    assert len(puts) == 1
    assert emulator.state("graph-1", "exec-1") == "RUNNING"
    outcomes = [outcome for _, outcome in answers]
    assert outcomes.count("restored") == 1
    assert set(outcomes) <= {"restored", "duplicate"}
    assert {status for status, _ in answers} <= {200, 503}
    assert all(answer == (200, "duplicate") for answer in redelivered)


def test_the_budget_holds_across_worker_processes(httpserver, state_url):
    """Ten different failure events for one execution at once, a budget of 3, and an OBS that
    accepts every restore: exactly three restores reach it."""
    httpserver.expect_request("/v2/workflowexecutions/exec-1", method="PUT").respond_with_json(
        {
            "execution_urn": "urn:fgs:r:p:execution:graph-1:exec-1:d",
            "restored_at": "now",
            "execution_name": "exec-1",
        }
    )
    httpserver.expect_request("/v2/workflowexecutions/exec-1", method="GET").respond_with_json(
        {"execution_info": {"execution_name": "exec-1", "execution_state": "FAILED"}}
    )  # failed again whenever it is asked
    environment = {
        "OBS_ENDPOINT": httpserver.url_for("").rstrip("/"),
        "OBS_ACCESS_KEY_ID": AK,
        "OBS_SECRET_ACCESS_KEY": SK,
        "RESTORE_AUTH_TOKEN": AUTH_TOKEN,
        "RESTORE_STATE_URL": state_url,
        "RESTORE_MAX_RESTORES": "3",
        "LOG_LEVEL": "WARNING",
    }
    with function_server(environment, workers=4) as url:
        # An event that found the budget filled by restores still in flight answered 503.
        outcomes = redeliver_until_final(url, [failure_event(f"evt-{n}") for n in range(10)])
    assert sorted(outcomes) == ["budget_exhausted"] * 7 + ["restored"] * 3
    assert sum(request.method == "PUT" for request, _ in httpserver.log) == 3


def test_restores_in_flight_are_not_a_spent_budget(emulator, state_url):
    """Twelve failure events for one execution at once (three worker processes), while the
    service answers every call 503 after 0.3 s: the reservations in flight fill the budget of
    3 for a moment, but no restore happened, so no event may end ``budget_exhausted``. Each is
    retried (503, nothing recorded), and once the service recovers the redeliveries restore
    the execution once."""
    emulator.fail_next(100, 503)
    emulator.latency(0.3)
    bodies = [failure_event(f"evt-{n}") for n in range(12)]
    environment = function_environment(emulator, state_url, OBS_MAX_ATTEMPTS="1")
    with function_server(environment, workers=3) as url:
        answers = deliver_all_at_once(url, bodies)
        assert answers == [(503, "retryable_error")] * len(bodies)
        with open_store(state_url) as store:
            assert store.recent()["dedupe"] == []  # nothing recorded, every marker released
            assert store.budget_used("graph-1/exec-1", 86400) == 0

        emulator.clear_faults()
        outcomes = redeliver_until_final(url, bodies)
    assert outcomes.count("restored") == 1 and "budget_exhausted" not in outcomes
    assert emulator.state("graph-1", "exec-1") == "RUNNING"
