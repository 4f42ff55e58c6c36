"""The HTTP contract of the function URL, served by functions-framework's own app."""

from __future__ import annotations

import json

import pytest

from tests.conftest import AUTH_TOKEN, PATH, REQUEST, RESTORED, SK, log_lines

BEARER = {"Authorization": f"Bearer {AUTH_TOKEN}"}
RESULT_KEYS = {
    "eventId",
    "graphName",
    "executionName",
    "outcome",
    "status",
    "requestId",
    "executionUrn",
    "restoredAt",
    "errorCode",
    "errorMessage",
    "attempts",
    "reason",
}


def post(client, body=REQUEST, headers=BEARER, **kwargs):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(
        "/", data=data, headers={"Content-Type": "application/json", **headers}, **kwargs
    )


def test_a_failure_event_is_restored_and_answered_with_the_result_document(
    httpserver, http_function
):
    httpserver.expect_oneshot_request(PATH, method="PUT").respond_with_json(
        RESTORED, headers={"X-Request-ID": "rid-1"}
    )
    response = post(http_function())

    assert response.status_code == 200
    document = response.get_json()
    assert document["summary"] == {"restored": 1}
    (result,) = document["results"]
    assert set(result) == RESULT_KEYS
    assert result["outcome"] == "restored"
    assert (result["status"], result["requestId"], result["attempts"]) == (200, "rid-1", 1)
    assert result["executionUrn"] == RESTORED["execution_urn"]
    assert result["restoredAt"] == RESTORED["restored_at"]
    assert len(httpserver.log) == 1


def test_without_a_configured_token_every_request_is_refused(
    httpserver, http_function, function_env
):
    del function_env["RESTORE_AUTH_TOKEN"]
    response = post(http_function(), headers={})
    assert response.status_code == 403
    assert "RESTORE_AUTH_TOKEN" in response.get_json()["error"]["message"]
    assert httpserver.log == []


def test_allow_unauthenticated_opens_the_url(httpserver, http_function, function_env):
    del function_env["RESTORE_AUTH_TOKEN"]
    function_env["RESTORE_ALLOW_UNAUTHENTICATED"] = "true"
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    assert post(http_function(), headers={}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {AUTH_TOKEN}"},
        {"Authorization": "Bearer "},
    ],
)
def test_missing_or_wrong_tokens_get_401_and_nothing_is_parsed(httpserver, http_function, headers):
    response = post(http_function(), body=b"not even json", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert httpserver.log == []


def test_token_query_parameter_is_accepted(httpserver, http_function):
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    response = post(http_function(), headers={}, query_string={"token": AUTH_TOKEN})
    assert response.status_code == 200


def test_get_is_a_health_document_without_secrets(httpserver, http_function):
    response = http_function().get("/")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"
    text = response.get_data(as_text=True)
    assert AUTH_TOKEN not in text and SK not in text
    assert httpserver.log == []


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_other_methods_get_405(http_function, method):
    response = getattr(http_function(), method)("/", headers=BEARER)
    assert response.status_code == 405 and "POST" in response.headers["Allow"]


def test_nothing_readable_is_400_with_the_results_listed(httpserver, http_function):
    response = post(
        http_function(),
        body=[
            {"graphName": "graph-1", "executionName": "a/b"},
            {"graphName": "g", "executionName": ""},
        ],
    )
    assert response.status_code == 400
    document = response.get_json()
    assert document["summary"] == {"rejected": 2}
    assert "executionName" in document["results"][0]["reason"]
    assert httpserver.log == []


def test_one_bad_item_does_not_spoil_its_neighbours(httpserver, http_function):
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    response = post(
        http_function(), body=[REQUEST, {"graphName": "graph-1", "executionName": "../x"}]
    )
    assert response.status_code == 200
    assert response.get_json()["summary"] == {"restored": 1, "rejected": 1}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "NotJSON"),
        (b"\xff\xfe\x00", "application/json", 400, "NotUTF8"),
        (b"<x/>", "application/xml", 415, "UnsupportedMediaType"),
        (b"[" + b" " * (300 * 1024) + b"]", "application/json", 413, "BodyTooLarge"),
    ],
)
def test_unreadable_deliveries_get_a_typed_4xx(
    httpserver, http_function, capsys, body, content_type, status, code
):
    response = http_function().post(
        "/", data=body, headers={**BEARER, "Content-Type": content_type}
    )
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert httpserver.log == []
    (line,) = [line for line in log_lines(capsys.readouterr().out) if line["message"] != "started"]
    assert (line["outcome"], line["errorCode"]) == ("rejected", code)


def test_transient_obs_failure_answers_503_with_retry_after(httpserver, http_function):
    httpserver.expect_request(PATH).respond_with_data("busy", status=503)
    response = post(http_function())
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    (result,) = response.get_json()["results"]
    assert (result["outcome"], result["status"], result["attempts"]) == ("retryable_error", 503, 2)


def test_permanent_refusal_is_failed_and_answered_200(httpserver, http_function):
    httpserver.expect_request(PATH).respond_with_json(
        {"code": "WF.0404", "message": "no such execution"}, status=404
    )
    response = post(http_function())
    assert response.status_code == 200
    (result,) = response.get_json()["results"]
    assert (result["outcome"], result["errorCode"]) == ("failed", "WF.0404")


def test_dry_run_does_everything_but_the_put(httpserver, http_function, function_env):
    function_env["RESTORE_DRY_RUN"] = "true"
    response = post(http_function())
    assert response.status_code == 200
    assert response.get_json()["summary"] == {"dry_run": 1}
    assert httpserver.log == []


def test_allowlist_skips_other_graphs(httpserver, http_function, function_env):
    function_env["RESTORE_GRAPH_ALLOWLIST"] = "etl-*"
    response = post(http_function())
    (result,) = response.get_json()["results"]
    assert result["outcome"] == "skipped" and "RESTORE_GRAPH_ALLOWLIST" in result["reason"]
    assert httpserver.log == []


def test_one_json_log_line_per_item_and_a_startup_line(httpserver, http_function, capsys):
    httpserver.expect_request(PATH).respond_with_json(RESTORED, headers={"X-Request-ID": "r9"})
    post(
        http_function(),
        body=[REQUEST, {"graphName": "g", "executionName": "bad name"}],
        headers={**BEARER, "X-Request-ID": "inv-42"},
    )
    lines = log_lines(capsys.readouterr().out)
    startup = [line for line in lines if line["message"] == "started"]
    items = [line for line in lines if line["message"] != "started"]
    assert len(startup) == 1 and startup[0]["settings"]["authToken"] == "set"
    assert [line["outcome"] for line in items] == ["restored", "rejected"]
    for line in items:
        assert {
            "timestamp",
            "level",
            "message",
            "outcome",
            "graphName",
            "executionName",
            "eventId",
            "invocationId",
            "requestId",
            "attempts",
            "durationMs",
            "errorCode",
            "errorMessage",
            "reason",
        } <= set(line)
        assert line["invocationId"] == "inv-42"
    assert items[0]["requestId"] == "r9" and items[0]["level"] == "INFO"
    assert items[1]["level"] == "WARNING"


def test_no_secret_in_any_output(httpserver, http_function, function_env, capsys):
    function_env["OBS_SECURITY_TOKEN"] = "temporary-token-SECRET"
    httpserver.expect_request(PATH).respond_with_data("", status=403)
    response = post(http_function())
    captured = capsys.readouterr()
    text = response.get_data(as_text=True) + captured.out + captured.err
    for secret in (SK, "temporary-token-SECRET", AUTH_TOKEN):
        assert secret not in text


def test_result_cloudevent_goes_to_the_sink(httpserver, http_function, function_env):
    function_env["RESTORE_EVENT_SINK"] = httpserver.url_for("/sink")
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    httpserver.expect_request("/sink", method="POST").respond_with_data("", status=202)
    assert post(http_function()).status_code == 200
    (sink_request,) = [request for request, _ in httpserver.log if request.path == "/sink"]
    event = json.loads(sink_request.get_data())
    assert sink_request.headers["Content-Type"].startswith("application/cloudevents+json")
    assert event["type"] == "com.huaweicloud.obs.workflow.execution.restored"
    assert event["subject"] == "graph-1/exec-1" and event["specversion"] == "1.0"
    assert event["data"]["outcome"] == "restored"


def test_a_sink_failure_never_fails_the_restore(httpserver, http_function, function_env, capsys):
    function_env["RESTORE_EVENT_SINK"] = httpserver.url_for("/sink")
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    httpserver.expect_request("/sink").respond_with_data("down", status=500)
    response = post(http_function())
    assert response.status_code == 200
    assert response.get_json()["summary"] == {"restored": 1}
    items = [line for line in log_lines(capsys.readouterr().out) if line["message"] != "started"]
    assert len(items) == 1 and "500" in items[0]["sinkError"]


AGENCY_HEADERS = {
    "X-CFF-Security-Access-Key": "AGENCYAK",
    "X-CFF-Security-Secret-Key": "agency-secret-SECRET",
    "X-CFF-Security-Token": "agency-token-SECRET",
}


def test_functiongraph_http_keys_in_headers_are_used_when_enabled(
    httpserver, http_function, function_env, capsys
):
    function_env["RESTORE_CREDENTIALS_FROM_HEADERS"] = "true"
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    response = post(http_function(), headers={**BEARER, **AGENCY_HEADERS})
    assert response.status_code == 200
    request, _ = httpserver.log[0]
    assert request.headers["Authorization"].startswith("OBS AGENCYAK:")
    assert request.headers["x-obs-security-token"] == "agency-token-SECRET"
    assert "SECRET" not in capsys.readouterr().out + response.get_data(as_text=True)


def test_keys_in_headers_are_ignored_unless_enabled(httpserver, http_function):
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    post(http_function(), headers={**BEARER, **AGENCY_HEADERS})
    request, _ = httpserver.log[0]
    assert request.headers["Authorization"].startswith("OBS AKEXAMPLE:")
