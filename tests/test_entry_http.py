"""The HTTP contract of the function URL, served by functions-framework's own app."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import (
    AUTH_TOKEN,
    PATH,
    REQUEST,
    RESTORED,
    SK,
    failed_again_when_asked,
    log_lines,
)

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
    "rule",
    "executionError",
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
    assert result["rule"] == "default"  # no policy: the one default rule decided
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
    flush_sink()
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
    flush_sink()
    lines = [line for line in log_lines(capsys.readouterr().out) if line["message"] != "started"]
    assert [line["message"] for line in lines] == ["restore restored", "sink event not delivered"]
    assert lines[1]["eventId"] == lines[0]["eventId"] and "500" in lines[1]["sinkError"]


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: a connection to it is refused at once."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_sink_error_line_shows_neither_the_sinks_userinfo_nor_its_query(
    httpserver, http_function, function_env, capsys, closed_port
):
    function_env["RESTORE_EVENT_SINK"] = (
        f"http://hook:pw-SECRET@127.0.0.1:{closed_port}/hook?sig=sig-SECRET&code=code-SECRET"
    )
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    assert post(http_function()).status_code == 200
    flush_sink()
    captured = capsys.readouterr()
    (line,) = [line for line in log_lines(captured.out) if line.get("sinkError")]
    assert line["sinkError"].startswith("ConnectionError")
    assert "/hook?***" in line["sinkError"]  # still says where it went, without the secrets
    for secret in ("pw-SECRET", "sig-SECRET", "code-SECRET", "sig=", "code="):
        assert secret not in captured.out + captured.err


def flush_sink() -> None:
    """Wait (bounded) until the served function's queued sink events are sent."""
    import sys

    assert sys.modules["main"].FUNCTION.runtime.flush_events(5.0)


@pytest.fixture
def silent_sink():
    """A sink that accepts connections and never answers."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    listener.close()


def test_a_sink_that_never_answers_delays_no_outcome(
    httpserver, http_function, function_env, silent_sink, capsys
):
    function_env["RESTORE_EVENT_SINK"] = silent_sink
    function_env["RESTORE_CLAIM_TTL"] = "4s"  # each delivery must finish within ~3 s
    for index in range(4):
        httpserver.expect_request(f"/v2/workflowexecutions/exec-{index}").respond_with_json(
            RESTORED
        )
    requests_ = [{"graphName": "graph-1", "executionName": f"exec-{i}"} for i in range(4)]
    response = post(http_function(), requests_)
    assert response.status_code == 200
    assert response.get_json()["summary"] == {"restored": 4}
    assert len(httpserver.log) == 4


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


# --- probes, refusals and unexpected errors ---------------------------------------------------


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
def test_head_and_options_need_no_token(httpserver, http_function, method):
    response = http_function().open("/", method=method)
    assert response.status_code in (200, 204)
    if method == "OPTIONS":
        assert "POST" in response.headers["Allow"]
    assert httpserver.log == []


@pytest.mark.parametrize(
    ("headers", "method", "status"),
    [({}, "POST", 401), ({"Authorization": "Bearer wrong"}, "POST", 401), (BEARER, "PUT", 405)],
)
def test_every_refusal_leaves_a_log_line_without_the_token(
    httpserver, http_function, capsys, headers, method, status
):
    response = http_function().open(
        "/", method=method, data="{}", headers={"Content-Type": "application/json", **headers}
    )
    assert response.status_code == status
    (line,) = [line for line in log_lines(capsys.readouterr().out) if line["message"] != "started"]
    assert (line["message"], line["status"], line["caller"]) == (
        "call refused",
        status,
        "127.0.0.1",
    )
    assert AUTH_TOKEN not in json.dumps(line) and "wrong" not in json.dumps(line)


def test_an_unexpected_exception_is_a_json_500_and_a_log_line(
    httpserver, http_function, capsys, monkeypatch
):
    client = http_function()
    from handler import intake

    def broken(*_args):
        raise RuntimeError("a bug outside every stage")

    monkeypatch.setattr(intake, "from_http", broken)
    response = post(client)
    assert response.status_code == 500
    assert response.get_json()["error"]["code"] == "InternalError"
    assert "bug outside" not in response.get_data(as_text=True)
    (line,) = [line for line in log_lines(capsys.readouterr().out) if line["level"] == "ERROR"]
    assert "a bug outside every stage" in line["exception"]


# --- identity of requests without an envelope ---------------------------------------------------


def test_a_plain_request_may_carry_its_own_id_and_is_deduplicated_by_it(httpserver, http_function):
    failed_again_when_asked(httpserver)
    client = http_function()
    first = post(client, {**REQUEST, "eventId": "ticket-42"}).get_json()["results"][0]
    again = post(client, {**REQUEST, "eventId": "ticket-42"}).get_json()["results"][0]
    other = post(client, {**REQUEST, "eventId": "ticket-43"}).get_json()["results"][0]
    assert first["eventId"] == "request:ticket-42"
    assert (first["outcome"], again["outcome"], other["outcome"]) == (
        "restored",
        "duplicate",
        "restored",
    )


def test_a_plain_request_without_an_id_is_remembered_only_for_the_plain_window(
    httpserver, http_function, function_env
):
    function_env["RESTORE_PLAIN_DEDUPE_WINDOW"] = "1s"
    failed_again_when_asked(httpserver)
    client = http_function()
    assert post(client).get_json()["results"][0]["outcome"] == "restored"
    assert post(client).get_json()["results"][0]["outcome"] == "duplicate"
    time.sleep(1.2)  # the execution failed again later: the same request restores again
    assert post(client).get_json()["results"][0]["outcome"] == "restored"
    assert [request.method for request, _ in httpserver.log] == ["PUT", "GET", "PUT"]


def test_a_binary_cloudevent_missing_a_required_header_is_rejected_by_name(
    httpserver, http_function
):
    headers = {**BEARER, "ce-id": "evt-1", "ce-source": "HC.OBS", "ce-specversion": "1.0"}
    response = post(http_function(), headers=headers)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "IncompleteCloudEvent" and "ce-type" in error["message"]
    assert httpserver.log == []


@pytest.mark.parametrize("path", ["/ready", "/?ready=1"])
def test_readiness_is_200_when_the_state_store_can_be_written(httpserver, http_function, path):
    response = http_function().get(path)
    assert response.status_code == 200 and response.get_json()["status"] == "ready"


def test_readiness_is_503_when_the_state_store_cannot_be_written(
    httpserver, http_function, function_env, tmp_path
):
    from handler.store import open_store

    path = tmp_path / "ro.db"
    open_store(f"sqlite:///{path}").close()
    function_env["RESTORE_STATE_URL"] = f"sqlite:///{path}?mode=ro"
    client = http_function()
    assert client.get("/").status_code == 200  # liveness: the process is fine
    response = client.get("/ready")
    assert response.status_code == 503
    document = response.get_json()
    assert document["status"] == "unready" and str(tmp_path) not in json.dumps(document)
