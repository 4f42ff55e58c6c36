"""A DWR execution restored end to end on the emulator, from every entry point.

``WORKFLOW_API=dwr`` changes the client and nothing else: the same deliveries that restore an
OBS execution restore a DWR one through the HTTP URL, the CloudEvent target, a FunctionGraph
SMN trigger, an API Gateway event and a timer's sweep.
"""

from __future__ import annotations

import json

import pytest

from handler.devtools.emulator import DwrEmulator
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


def test_through_a_functiongraph_smn_trigger(dwr, load_main):
    answer = load_main().handler(smn_trigger(REQUEST), FunctionGraphContext(agency=None))
    assert answer["summary"] == {"restored": 1} and restored_once(dwr)


def test_through_an_api_gateway_event(dwr, load_main):
    event = {
        "body": json.dumps(REQUEST),
        "isBase64Encoded": False,
        "httpMethod": "POST",
        "path": "/",
        "headers": {"content-type": "application/json", **BEARER},
        "queryStringParameters": {},
    }
    answer = load_main().handler(event, FunctionGraphContext(agency=None))
    assert answer["statusCode"] == 200 and restored_once(dwr)


def test_through_a_timer_sweep_with_the_failed_node_s_message(dwr, load_main):
    event = {"trigger_type": "TIMER", "trigger_name": "sweep", "user_event": ""}
    answer = load_main().handler(event, FunctionGraphContext(agency=None))
    (result,) = answer["results"]
    assert (result["outcome"], result["executionError"]) == ("restored", WHY)
    assert restored_once(dwr)


def test_a_redelivery_is_a_duplicate_on_dwr_too(dwr, load_main):
    main = load_main()
    event = smn_trigger(REQUEST)
    assert main.handler(event, FunctionGraphContext(agency=None))["summary"] == {"restored": 1}
    assert main.handler(event, FunctionGraphContext(agency=None))["summary"] == {"duplicate": 1}
    assert dwr.restores(GRAPH, EXECUTION) == 1
