"""A DWR execution restored end to end on the emulator, from every entry point.

``WORKFLOW_API=dwr`` changes the client and nothing else: the same deliveries that restore an
OBS execution restore a DWR one through the HTTP URL, the CloudEvent target, a FunctionGraph
SMN trigger, an API Gateway event and a timer's sweep.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from handler.devtools.emulator import DwrEmulator
from handler.intake import Item
from handler.invocation import Invocation
from handler.report import Reporter
from handler.runtime import Runtime
from handler.settings import Settings
from handler.store import open_store
from handler.store.memory import MemoryStore
from handler.sweep import SweepRequest
from tests.conftest import AK, AUTH_TOKEN, SK
from tests.test_entry_events import FunctionGraphContext, smn_trigger

PROJECT = "0123456789abcdef0123456789abcdef"
GRAPH, EXECUTION = "nightly-etl", "run-1"
REQUEST = {"graphName": GRAPH, "executionName": EXECUTION}
BEARER = {"Authorization": f"Bearer {AUTH_TOKEN}"}
WHY = "node transcode: input object not found"


@pytest.fixture
def dwr(function_env):
    """The DWR emulator with one failed execution; the function configured for DWR."""
    emulator = DwrEmulator({AK: SK}, project_id=PROJECT)
    emulator.seed(GRAPH, EXECUTION, "fail", error_message=WHY)
    with emulator:
        del function_env["OBS_ENDPOINT"]
        function_env.update(WORKFLOW_API="dwr", DWR_ENDPOINT=emulator.url, DWR_PROJECT_ID=PROJECT)
        yield emulator


def restored_once(emulator) -> bool:
    return (
        emulator.restores(GRAPH, EXECUTION) == 1 and emulator.state(GRAPH, EXECUTION) == "running"
    )


def test_through_the_http_url(dwr, http_function):
    response = http_function().post(
        "/", data=json.dumps(REQUEST), headers={**BEARER, "Content-Type": "application/json"}
    )
    assert response.status_code == 200
    (result,) = response.get_json()["results"]
    assert (result["outcome"], result["status"]) == ("restored", 200)
    assert result["executionUrn"] and restored_once(dwr)


def test_through_the_cloudevent_target(dwr, http_function):
    client = http_function("restore_cloudevent", "cloudevent")
    headers = {
        **BEARER,
        "ce-id": "evt-1",
        "ce-source": "monitoring",
        "ce-specversion": "1.0",
        "ce-type": "com.example.workflow.failed",
        "Content-Type": "application/json",
    }
    assert client.post("/", data=json.dumps(REQUEST), headers=headers).status_code == 200
    assert restored_once(dwr)


def test_through_a_functiongraph_smn_trigger(dwr, load_function):
    answer = load_function().handler(smn_trigger(REQUEST), FunctionGraphContext(agency=None))
    assert answer["summary"] == {"restored": 1} and restored_once(dwr)


def test_through_an_api_gateway_event(dwr, load_function):
    event = {
        "body": json.dumps(REQUEST),
        "isBase64Encoded": False,
        "httpMethod": "POST",
        "path": "/",
        "headers": {"content-type": "application/json", **BEARER},
        "queryStringParameters": {},
    }
    answer = load_function().handler(event, FunctionGraphContext(agency=None))
    assert answer["statusCode"] == 200 and restored_once(dwr)


def test_through_a_timer_sweep_with_the_failed_node_s_message(dwr, load_function):
    event = {"trigger_type": "TIMER", "trigger_name": "sweep", "user_event": ""}
    answer = load_function().handler(event, FunctionGraphContext(agency=None))
    (result,) = answer["results"]
    assert (result["outcome"], result["executionError"]) == ("restored", WHY)
    assert restored_once(dwr)


def test_a_redelivery_is_a_duplicate_on_dwr_too(dwr, load_function):
    main = load_function()
    event = smn_trigger(REQUEST)
    assert main.handler(event, FunctionGraphContext(agency=None))["summary"] == {"restored": 1}
    assert main.handler(event, FunctionGraphContext(agency=None))["summary"] == {"duplicate": 1}
    assert dwr.restores(GRAPH, EXECUTION) == 1


# --- odd answers to the query a restore rule needs -------------------------------------------

THROTTLED = "node extract: request throttled by the service (DLF.0429)"
THROTTLING_ONLY = json.dumps({"rules": [{"name": "throttling", "restore_on": ["throttl"]}]})


def unreadable_query_answer(emulator, kind: str) -> None:
    """Queue ONE odd answer for the next query: what a gateway or a proxy may answer."""
    query = emulator.faults_for(operation="query")
    if kind == "truncated-json-200":
        query.garbage_next(body=b'{"status": "fail", "node_exec', status=200, content_type=JSON)
    elif kind == "cut-off-body-200":  # the connection closes before the declared length
        query.garbage_next(
            body=b'{"status": "fa', status=200, content_type=JSON, declared_length=400
        )
    elif kind == "html-200":
        query.garbage_next(body=b"<html><body>Service portal</body></html>", status=200)
    else:
        query.redirect_next(location="https://login.example.invalid/", status=302)


JSON = "application/json"
ODD_QUERY_ANSWERS = ["truncated-json-200", "cut-off-body-200", "html-200", "redirect-302"]


@pytest.mark.parametrize("kind", ODD_QUERY_ANSWERS)
def test_an_unreadable_query_answer_is_retried_and_the_redelivery_restores(
    dwr, http_function, function_env, kind
):
    """One odd answer to the query a `restore_on` rule needs is "retry", never "no rule of the
    policy matches": nothing is recorded, the delivery answers 503, the redelivery restores."""
    dwr.seed(GRAPH, "run-2", "fail", error_message=THROTTLED)
    function_env["RESTORE_POLICY"] = THROTTLING_ONLY
    unreadable_query_answer(dwr, kind)
    client = http_function()
    delivery = {"eventId": "evt-odd", "graphName": GRAPH, "executionName": "run-2"}
    headers = {**BEARER, "Content-Type": "application/json"}

    first = client.post("/", data=json.dumps(delivery), headers=headers)
    (result,) = first.get_json()["results"]
    assert (first.status_code, result["outcome"]) == (503, "retryable_error")
    assert "could not be read" in result["reason"] and "no rule" not in result["reason"]
    assert dwr.restores(GRAPH, "run-2") == 0

    again = client.post("/", data=json.dumps(delivery), headers=headers)  # the redelivery
    (result,) = again.get_json()["results"]
    assert (again.status_code, result["outcome"], result["rule"]) == (200, "restored", "throttling")
    assert dwr.restores(GRAPH, "run-2") == 1


@pytest.mark.parametrize("kind", ["truncated-json-200", "redirect-302"])
def test_a_sweep_retries_a_failure_whose_query_answer_was_unreadable(
    dwr, load_function, function_env, kind
):
    """The same through the sweep: the failure stays unrecorded, the next sweep restores it."""
    dwr.seed(GRAPH, EXECUTION, "fail", error_message=THROTTLED)
    function_env["RESTORE_POLICY"] = THROTTLING_ONLY
    unreadable_query_answer(dwr, kind)
    main = load_function()
    timer = {"trigger_type": "TIMER", "trigger_name": "sweep", "user_event": ""}

    first = main.handler(timer, FunctionGraphContext(agency=None))
    assert first["sweep"]["outcomes"] == {"retryable_error": 1}
    assert "could not be read" in first["results"][0]["reason"]
    assert dwr.restores(GRAPH, EXECUTION) == 0

    later = main.handler(timer, FunctionGraphContext(agency=None))
    assert later["sweep"]["outcomes"] == {"restored": 1}
    assert restored_once(dwr)


# --- a restore whose answer was lost ----------------------------------------------------------


class TickingClock:
    """One wall clock for the emulator, the state store and the function, that moves on by
    10 ms at every reading: what happened later always reads later, whatever the machine's
    speed, so "stopped after the restore was sent" is decided by order, not by timing."""

    def __init__(self) -> None:
        self._now = time.time()
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self._now += 0.01
            return self._now


def test_a_lost_restore_of_an_execution_that_failed_again_at_once_counts_once():
    """The issue's case: every restore's answer is lost (`--reset-applied`) and the restored
    run fails again at once. The query after the lost answer shows a stop time after the
    restore was sent: the restore was applied, the event is `restored` (one unit), and the new
    failure is a new one - the sweep restores it under its own identity, with its own unit."""
    clock = TickingClock()
    emulator = DwrEmulator({AK: SK}, project_id=PROJECT, after_restore=("fail", 0.0), clock=clock)
    emulator.seed(GRAPH, EXECUTION, "fail", error_message=WHY, stopped_at=clock() - 60)
    emulator.faults_for(operation="restore").reset_next(5, applied=True)
    with emulator:
        settings = Settings(
            endpoint=emulator.url,
            workflow_api="dwr",
            project_id=PROJECT,
            access_key_id=AK,
            secret_access_key=SK,
            max_attempts=1,
        )
        store = MemoryStore(clock=clock)
        runtime = Runtime(settings, store, Reporter(logging.getLogger("lost-restore")), clock)
        item = Item("restore", "HC.OBS/evt-1", "cloudevent", GRAPH, EXECUTION)
        try:
            first, *redeliveries = [runtime.run([item], Invocation()) for _ in range(3)]
            (result,) = first.document()["results"]
            assert (result["outcome"], first.status) == ("restored", 200)
            assert "no answer to the restore, but it took effect" in result["reason"]
            assert "failed again at" in result["reason"]
            assert [d.document()["results"][0]["outcome"] for d in redeliveries] == [
                "duplicate",
                "duplicate",
            ]
            assert emulator.restores(GRAPH, EXECUTION) == 1
            assert store.budget_used(f"{GRAPH}/{EXECUTION}", 86400) == 1

            answer, _ = runtime.sweep(SweepRequest.from_settings(settings), Invocation())
            (found,) = answer.document()["results"]
            assert found["eventId"].startswith(f"sweep:{GRAPH}:{EXECUTION}:")  # its stop time
            assert found["outcome"] == "restored"
            assert emulator.restores(GRAPH, EXECUTION) == 2
            assert store.budget_used(f"{GRAPH}/{EXECUTION}", 86400) == 2
        finally:
            runtime.close()


def test_a_redelivery_learns_that_its_lost_restore_took_effect_and_sends_nothing(
    dwr, http_function, function_env
):
    """The restore's answer and the query after it are lost: 503, unit kept. The restored run
    fails; the redelivery's query shows it stopped after this event's restore was sent, so
    the event is `restored` without a second restore, and the new failure gets its own."""
    dwr.faults_for(operation="restore").reset_next(1, applied=True)
    dwr.faults_for(operation="query").fail_next(2, 503)  # OBS_MAX_ATTEMPTS is 2
    client = http_function()
    delivery = {"eventId": "evt-lost", "graphName": GRAPH, "executionName": EXECUTION}
    headers = {**BEARER, "Content-Type": "application/json"}

    first = client.post("/", data=json.dumps(delivery), headers=headers)
    (result,) = first.get_json()["results"]
    assert (first.status_code, result["outcome"]) == (503, "retryable_error")
    assert "may have been applied" in result["reason"]
    time.sleep(0.01)  # the restored run fails a moment after the restore (a bounded pause)
    dwr.seed(GRAPH, EXECUTION, "fail", error_message=WHY, stopped_at=time.time())

    again = client.post("/", data=json.dumps(delivery), headers=headers)
    (result,) = again.get_json()["results"]
    assert (again.status_code, result["outcome"]) == (200, "restored")
    assert "earlier restore got no answer, but it took effect" in result["reason"]
    assert dwr.restores(GRAPH, EXECUTION) == 1
    with open_store(function_env["RESTORE_STATE_URL"]) as store:
        assert store.budget_used(f"{GRAPH}/{EXECUTION}", 86400) == 1

    other = {"eventId": "evt-new-failure", "graphName": GRAPH, "executionName": EXECUTION}
    answer = client.post("/", data=json.dumps(other), headers=headers)  # the new failure's event
    (result,) = answer.get_json()["results"]
    assert (answer.status_code, result["outcome"]) == (200, "restored")
    assert dwr.restores(GRAPH, EXECUTION) == 2


def test_a_lost_restore_that_never_reached_the_execution_is_not_taken_as_applied(
    dwr, http_function
):
    """The connection is reset and the restore was NOT applied: the execution still shows the
    stop time it had before. Nothing says the restore took effect, so the redelivery asks and
    then restores (once)."""
    dwr.faults_for(operation="restore").reset_next(1)  # reset after sending, not carried out
    client = http_function()
    delivery = {"eventId": "evt-reset", "graphName": GRAPH, "executionName": EXECUTION}
    headers = {**BEARER, "Content-Type": "application/json"}

    first = client.post("/", data=json.dumps(delivery), headers=headers)
    (result,) = first.get_json()["results"]
    assert (first.status_code, result["outcome"]) == (503, "retryable_error")
    assert "still FAILED" in result["reason"] and dwr.restores(GRAPH, EXECUTION) == 0

    again = client.post("/", data=json.dumps(delivery), headers=headers)
    (result,) = again.get_json()["results"]
    assert (again.status_code, result["outcome"], result["reason"]) == (200, "restored", "")
    assert restored_once(dwr)
