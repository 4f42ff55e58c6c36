"""The CloudEvent target, the FunctionGraph handler, and the real functions-framework server."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from handler.entry import RetryableDeliveryError
from tests.conftest import AK, AUTH_TOKEN, PATH, REQUEST, RESTORED, log_lines
from tests.function_server import function_server

ROOT = Path(__file__).resolve().parent.parent


class FunctionGraphContext:
    """A context offering the documented FunctionGraph methods."""

    def __init__(
        self,
        remaining_ms=30_000,
        agency=("AGENCYAK", "agency-secret", "agency-token"),
        request_id="fg-request-1",
    ):
        self._remaining_ms = remaining_ms
        self._agency = agency
        self._request_id = request_id

    def getRequestID(self):
        return self._request_id

    def getRemainingTimeInMilliSeconds(self):
        return self._remaining_ms

    def getSecurityAccessKey(self):
        return self._agency[0] if self._agency else ""

    def getSecuritySecretKey(self):
        return self._agency[1] if self._agency else ""

    def getSecurityToken(self):
        return self._agency[2] if self._agency else ""

    def getFunctionName(self):
        return "obs-workflow-restore"


def smn_trigger(payload: dict) -> dict:
    return {
        "record": [
            {
                "event_source": "smn",
                "event_version": "1.0",
                "event_subscription_urn": "urn:fss:cn-north-4:p:function:default:f",
                "smn": {
                    "topic_urn": "urn:smn:cn-north-4:p:workflow-failures",
                    "message_id": "a1b2c3",
                    "message": json.dumps(payload),
                    "subject": "workflow failed",
                    "type": "notification",
                    "timestamp": "2026-11-27T18:41:28Z",
                    "message_attributes": None,
                },
            }
        ]
    }


def test_handler_uses_the_agency_credentials_and_returns_the_result_document(
    httpserver, load_function, capsys
):
    httpserver.expect_request(PATH, method="PUT").respond_with_json(RESTORED)
    main = load_function()
    document = main.handler(smn_trigger(REQUEST), FunctionGraphContext())

    assert document["statusCode"] == 200 and document["summary"] == {"restored": 1}
    assert document["results"][0]["eventId"] == "smn:a1b2c3"
    request, _ = httpserver.log[0]
    assert request.headers["Authorization"].startswith("OBS AGENCYAK:")
    assert request.headers["x-obs-security-token"] == "agency-token"
    items = [line for line in log_lines(capsys.readouterr().out) if line["message"] != "started"]
    assert items[0]["invocationId"] == "fg-request-1"


def test_handler_falls_back_to_settings_credentials(httpserver, load_function):
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    main = load_function()
    document = main.handler(REQUEST, FunctionGraphContext(agency=None))
    assert document["summary"] == {"restored": 1}
    assert httpserver.log[0][0].headers["Authorization"].startswith(f"OBS {AK}:")


def test_handler_without_any_credentials_asks_for_a_retry(httpserver, load_function, function_env):
    del function_env["OBS_ACCESS_KEY_ID"], function_env["OBS_SECRET_ACCESS_KEY"]
    main = load_function()
    with pytest.raises(RetryableDeliveryError):
        main.handler(REQUEST, FunctionGraphContext(agency=None))
    assert httpserver.log == []


def test_remaining_time_bounds_the_retries(httpserver, load_function, function_env):
    function_env["OBS_MAX_ATTEMPTS"] = "10"
    httpserver.expect_request(PATH).respond_with_data("", status=503, headers={"Retry-After": "1"})
    main = load_function()
    started = time.monotonic()
    with pytest.raises(RetryableDeliveryError):
        main.handler(REQUEST, FunctionGraphContext(remaining_ms=1_500))
    assert time.monotonic() - started < 1.5
    assert len(httpserver.log) == 1


def test_api_gateway_trigger_gets_an_api_gateway_response(httpserver, load_function):
    httpserver.expect_request(PATH).respond_with_data("", status=502)
    main = load_function()
    event = {
        "body": json.dumps(REQUEST),
        "isBase64Encoded": False,
        "httpMethod": "POST",
        "path": "/restore",
        "headers": {"content-type": "application/json", "authorization": f"Bearer {AUTH_TOKEN}"},
        "queryStringParameters": {},
    }
    answer = main.handler(event, FunctionGraphContext())
    assert answer["statusCode"] == 503 and answer["headers"]["Retry-After"]
    assert json.loads(answer["body"])["summary"] == {"retryable_error": 1}


def apig_event(headers=None, query=None, method="POST") -> dict:
    return {
        "body": json.dumps(REQUEST),
        "isBase64Encoded": False,
        "httpMethod": method,
        "path": "/restore",
        "headers": {"content-type": "application/json", **(headers or {})},
        "queryStringParameters": query or {},
        "requestContext": {"sourceIp": "203.0.113.7"},
    }


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong"}, {"Authorization": f"Basic {AUTH_TOKEN}"}],
)
def test_an_api_gateway_event_without_the_token_is_refused(
    httpserver, load_function, capsys, headers
):
    answer = load_function().handler(apig_event(headers), FunctionGraphContext())
    assert answer["statusCode"] == 401
    assert answer["headers"]["WWW-Authenticate"].startswith("Bearer")
    assert json.loads(answer["body"])["error"]["code"] == "Unauthorized"
    assert httpserver.log == []
    (refusal,) = [
        line for line in log_lines(capsys.readouterr().out) if line["message"] == "call refused"
    ]
    assert refusal["caller"] == "203.0.113.7" and AUTH_TOKEN not in json.dumps(refusal)


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"Authorization": f"Bearer {AUTH_TOKEN}"}, {}),
        ({"AUTHORIZATION": f"bearer {AUTH_TOKEN}"}, {}),
        ({}, {"token": AUTH_TOKEN}),
        ({}, {"token": [AUTH_TOKEN]}),
    ],
)
def test_an_api_gateway_event_with_the_token_restores(httpserver, load_function, headers, query):
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    answer = load_function().handler(apig_event(headers, query), FunctionGraphContext())
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"])["summary"] == {"restored": 1}


@pytest.mark.parametrize(
    "event",
    [
        {"isBase64Encoded": False, "body": json.dumps(REQUEST)},
        {
            "isBase64Encoded": "true",
            "body": base64.b64encode(json.dumps(REQUEST).encode()).decode(),
        },
        {"httpMethod": "POST", "body": json.dumps(REQUEST)},
        json.dumps({"isBase64Encoded": False, "body": json.dumps(REQUEST)}),  # as text
    ],
    ids=["isBase64Encoded-only", "base64-flag-as-text", "httpMethod-only", "stringified"],
)
def test_every_event_the_intake_unwraps_as_api_gateway_needs_the_token(
    httpserver, load_function, event
):
    """Whatever makes the intake read an event as an API Gateway request makes the handler
    check its token: one predicate for both."""
    answer = load_function().handler(event, FunctionGraphContext())
    assert answer["statusCode"] in (400, 401)
    assert httpserver.log == []


def test_an_api_gateway_event_without_a_configured_token_is_forbidden(
    httpserver, load_function, function_env
):
    del function_env["RESTORE_AUTH_TOKEN"]
    answer = load_function().handler(apig_event(), FunctionGraphContext())
    assert answer["statusCode"] == 403
    assert httpserver.log == []


def test_an_api_gateway_probe_needs_no_token_and_other_methods_are_405(httpserver, load_function):
    main = load_function()
    health = main.handler(apig_event(method="GET"), FunctionGraphContext())
    assert health["statusCode"] == 200 and json.loads(health["body"])["status"] == "ok"
    bearer = {"Authorization": f"Bearer {AUTH_TOKEN}"}
    answer = main.handler(apig_event(bearer, method="DELETE"), FunctionGraphContext())
    assert answer["statusCode"] == 405 and answer["headers"]["Allow"]
    assert httpserver.log == []


def test_platform_trigger_events_need_no_token(httpserver, load_function):
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    answer = load_function().handler(smn_trigger(REQUEST), FunctionGraphContext())
    assert answer["summary"] == {"restored": 1}


def test_handler_rejects_unreadable_events_with_a_typed_result(httpserver, load_function):
    main = load_function()
    document = main.handler({"unexpected": "shape"}, FunctionGraphContext())
    assert document["statusCode"] == 400
    assert httpserver.log == []


def test_cloudevent_target_restores_and_asks_for_redelivery_on_transient_failure(
    httpserver, http_function
):
    httpserver.expect_ordered_request(PATH).respond_with_json(RESTORED)
    client = http_function("restore_cloudevent", "cloudevent")
    headers = {
        "ce-id": "evt-1",
        "ce-source": "HC.OBS",
        "ce-specversion": "1.0",
        "ce-type": "com.huaweicloud.obs.workflow.execution.failed",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {AUTH_TOKEN}",
    }
    assert client.post("/", data=json.dumps(REQUEST), headers=headers).status_code == 200
    assert len(httpserver.log) == 1

    httpserver.expect_request("/v2/workflowexecutions/exec-2").respond_with_data("", status=503)
    response = client.post(
        "/",
        data=json.dumps({**REQUEST, "executionName": "exec-2"}),
        headers={**headers, "ce-id": "evt-2"},
    )
    assert response.status_code == 503  # the platform delivers again
    assert response.headers["Retry-After"]
    assert response.get_json()["summary"] == {"retryable_error": 1}


CLOUDEVENT_HEADERS = {
    "ce-id": "evt-1",
    "ce-source": "HC.OBS",
    "ce-specversion": "1.0",
    "ce-type": "com.huaweicloud.obs.workflow.execution.failed",
    "Content-Type": "application/json",
}


@pytest.mark.parametrize(
    "auth", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {AUTH_TOKEN}"}]
)
def test_the_cloudevent_target_refuses_a_caller_without_the_token(
    httpserver, http_function, capsys, auth
):
    client = http_function("restore_cloudevent", "cloudevent")
    response = client.post("/", data=json.dumps(REQUEST), headers={**CLOUDEVENT_HEADERS, **auth})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["error"]["code"] == "Unauthorized"
    assert httpserver.log == []
    assert not [line for line in log_lines(capsys.readouterr().out) if line.get("outcome")]


def test_the_cloudevent_target_accepts_the_token_in_the_query(httpserver, http_function):
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    client = http_function("restore_cloudevent", "cloudevent")
    response = client.post(
        f"/?token={AUTH_TOKEN}", data=json.dumps(REQUEST), headers=CLOUDEVENT_HEADERS
    )
    assert response.status_code == 200 and len(httpserver.log) == 1


def test_the_cloudevent_target_answers_json_for_a_body_that_is_no_cloudevent(
    httpserver, http_function
):
    client = http_function("restore_cloudevent", "cloudevent")
    response = client.post(
        "/",
        data='{"not": "a cloudevent"}',
        headers={"Authorization": f"Bearer {AUTH_TOKEN}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "NotACloudEvent"
    assert AUTH_TOKEN not in response.get_data(as_text=True)  # the framework's page echoed it
    assert httpserver.log == []


STRUCTURED = {"Content-Type": "application/cloudevents+json"}
DEEP = "[" * 50_000 + "]" * 50_000


def structured(**changes) -> str:
    event = {"specversion": "1.0", "id": "evt-1", "source": "HC.OBS", "type": "t", "data": REQUEST}
    event.update(changes)
    return json.dumps({k: v for k, v in event.items() if v is not None})


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        (STRUCTURED, structured()[:-1] + ', "x": ' + DEEP + "}", 400, "TooDeep"),
        (CLOUDEVENT_HEADERS, DEEP, 400, "TooDeep"),
        (
            {"Content-Type": "application/cloudevents-batch+json"},
            json.dumps([json.loads(structured())]),
            415,
            "UnsupportedMediaType",
        ),
        (STRUCTURED, b"\xff" + structured().encode(), 400, "NotUTF8"),
        (STRUCTURED, structured()[:-3], 400, "NotJSON"),
        ({"Content-Type": "application/json"}, "[1]", 400, "NotACloudEvent"),
        ({"Content-Type": "application/json"}, '{"context": 5, "data": 1}', 400, "NotACloudEvent"),
        (STRUCTURED, structured(id=None), 400, "IncompleteCloudEvent"),
        ({k: v for k, v in CLOUDEVENT_HEADERS.items() if k != "ce-id"}, "{}", 400,
         "IncompleteCloudEvent"),
        (STRUCTURED, structured(specversion="9"), 400, "BadCloudEvent"),
        ({"Content-Type": "application/xml"}, "<event/>", 415, "UnsupportedMediaType"),
        (STRUCTURED, "x" * 300_000, 413, "BodyTooLarge"),
    ],
    ids=[
        "structured-deep", "binary-deep", "batch", "not-utf8", "truncated", "array",
        "background-event-shape", "no-id", "binary-without-ce-id", "bad-specversion", "xml",
        "too-large",
    ],
)  # fmt: skip
def test_the_cloudevent_target_answers_an_unreadable_event_with_a_typed_4xx(
    httpserver, http_function, capsys, headers, body, status, code
):
    client = http_function("restore_cloudevent", "cloudevent")
    auth = {"Authorization": f"Bearer {AUTH_TOKEN}"}
    response = client.post("/", data=body, headers={**headers, **auth})
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.get_json()["error"]["code"] == code
    assert httpserver.log == []
    lines = log_lines(capsys.readouterr().out)
    assert [line["errorCode"] for line in lines if line["message"] == "delivery rejected"] == [code]
    assert not [line for line in lines if line["level"] == "ERROR"]  # no traceback, no crash


@pytest.mark.parametrize("data", ["not a request", {"graphName": "../etc"}, [1, 2]])
def test_the_cloudevent_target_answers_400_with_the_results_when_every_item_is_rejected(
    httpserver, http_function, data
):
    client = http_function("restore_cloudevent", "cloudevent")
    auth = {"Authorization": f"Bearer {AUTH_TOKEN}"}
    response = client.post("/", data=structured(data=data), headers={**STRUCTURED, **auth})
    assert response.status_code == 400
    results = response.get_json()["results"]
    assert results and {result["outcome"] for result in results} == {"rejected"}
    assert httpserver.log == []


def test_the_cloudevent_target_answers_liveness_readiness_and_options_like_the_url(
    httpserver, http_function, function_env, tmp_path
):
    client = http_function("restore_cloudevent", "cloudevent")
    assert client.get("/").get_json()["status"] == "ok"
    assert client.head("/").status_code == 200
    assert client.options("/").status_code == 204
    for path in ("/ready", "/?ready=1"):
        response = client.get(path)
        assert (response.status_code, response.get_json()["status"]) == (200, "ready")
    assert client.put("/").status_code == 401  # not a probe: the caller check comes first
    assert httpserver.log == []


def test_the_cloudevent_target_is_unready_when_the_state_store_cannot_be_written(
    http_function, function_env, tmp_path
):
    from handler.store import open_store

    path = tmp_path / "ro.db"
    open_store(f"sqlite:///{path}").close()
    function_env["RESTORE_STATE_URL"] = f"sqlite:///{path}?mode=ro"
    client = http_function("restore_cloudevent", "cloudevent")
    assert client.get("/").status_code == 200
    response = client.get("/ready")
    assert (response.status_code, response.get_json()["status"]) == (503, "unready")
    assert str(tmp_path) not in response.get_data(as_text=True)


def test_the_functiongraph_path_imports_no_web_framework(function_env, httpserver):
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    function_env.apply()
    script = (
        "import json, sys\n"
        "import handler.main as m\n"
        "doc = m.handler({'graphName': 'graph-1', 'executionName': 'exec-1'}, None)\n"
        "web = ('flask', 'functions_framework', 'werkzeug')\n"
        "heavy = sorted(n for n in web if n in sys.modules)\n"
        "print(json.dumps({'summary': doc['summary'], 'heavy': heavy}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ},
        check=True,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"summary": {"restored": 1}, "heavy": []}


def test_the_real_functions_framework_server_serves_the_url(httpserver, function_env):
    """Exactly the documented command, from the repository root."""
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    with function_server(function_env) as url:
        response = requests.post(
            url, json=REQUEST, timeout=10, headers={"Authorization": f"Bearer {AUTH_TOKEN}"}
        )
    assert response.status_code == 200, response.text
    assert response.json()["summary"] == {"restored": 1}


def test_invalid_settings_stop_the_function_at_start_up_naming_the_variable(
    load_function, function_env
):
    from handler.settings import SettingsError

    function_env["RESTORE_MAX_RESTORES"] = "lots"
    with pytest.raises(SettingsError, match="RESTORE_MAX_RESTORES"):
        load_function()
