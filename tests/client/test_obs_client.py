"""The shared OBS workflow client, against a loopback OBS stand-in (pytest-httpserver)."""

from __future__ import annotations

import socket
import time

import pytest
from werkzeug import Response

from handler.client import RestoreBody, RetrySchedule, WorkflowClient
from handler.client import obs as client_module
from handler.client.obs_signing import Credentials, Signer
from handler.endpoint import normalise_endpoint
from handler.names import InvalidNameError
from tests.conftest import AK, PATH, RESTORED, SK, TOKEN

QUERY = {"x-workflow-graph-name": "graph-1"}


def assert_signed(request, token=None):
    """The request carries a valid V2 signature for its own Date header."""
    signer = Signer(Credentials(AK, SK, token))
    resource = f"{request.path}?{request.query_string.decode()}"
    expected = signer.sign(request.method, resource, request.headers["Date"], "application/json")
    assert request.headers["Authorization"] == expected["Authorization"]


def test_restore_sends_the_documented_request_and_parses_the_answer(httpserver, make_client):
    httpserver.expect_oneshot_request(PATH, method="PUT", query_string=QUERY).respond_with_json(
        RESTORED, headers={"X-Request-ID": "req-1"}
    )
    result = make_client().restoreFailedWorkflowExecution("exec-1", "graph-1")

    assert (result.status, result.ok, result.attempts, result.requestId) == (200, True, 1, "req-1")
    assert result.body == RestoreBody(RESTORED["execution_urn"], RESTORED["restored_at"], "exec-1")
    assert result.errorCode is None and result.errorMessage is None
    request, _ = httpserver.log[0]
    assert request.get_data() == b""
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Content-Length"] == "0"
    assert "x-obs-security-token" not in request.headers
    assert_signed(request)


def test_temporary_credentials_sign_the_security_token(httpserver, make_client):
    httpserver.expect_oneshot_request(PATH, method="PUT").respond_with_json(RESTORED)
    make_client(security_token=TOKEN).restoreFailedWorkflowExecution("exec-1", "graph-1")
    request, _ = httpserver.log[0]
    assert request.headers["x-obs-security-token"] == TOKEN
    assert_signed(request, TOKEN)


def test_get_workflow_execution_returns_execution_info(httpserver, make_client):
    info = {"execution_name": "exec-1", "execution_state": "FAILED", "graph_urn": "urn:g"}
    httpserver.expect_oneshot_request(PATH, method="GET", query_string=QUERY).respond_with_json(
        {"execution_info": info}
    )
    result = make_client().getWorkflowExecution("exec-1", "graph-1")
    assert result.ok and result.body.executionInfo == info
    assert_signed(httpserver.log[0][0])


def test_requests_match_the_official_sdk_on_the_wire(httpserver, make_client):
    """Same method, path, query, body and signed headers; the signature agrees byte for byte."""
    from obs import WorkflowClient as SdkClient

    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    sdk = SdkClient(
        access_key_id=AK,
        secret_access_key=SK,
        security_token=TOKEN,
        server=httpserver.url_for("").rstrip("/"),
    )
    try:
        assert sdk.restoreFailedWorkflowExecution("exec-1", "graph-1").status == 200
    finally:
        sdk.close()
    make_client(security_token=TOKEN).restoreFailedWorkflowExecution("exec-1", "graph-1")
    theirs, ours = (request for request, _ in httpserver.log)

    assert (ours.method, ours.full_path, ours.get_data()) == (
        theirs.method,
        theirs.full_path,
        theirs.get_data(),
    )
    for name in ("Content-Type", "Content-Length", "x-obs-security-token"):
        assert ours.headers[name] == theirs.headers[name]
    resource = f"{theirs.path}?{theirs.query_string.decode()}"
    ours_for_their_date = Signer(Credentials(AK, SK, TOKEN)).sign(
        "PUT", resource, theirs.headers["Date"], "application/json"
    )
    assert ours_for_their_date["Authorization"] == theirs.headers["Authorization"]


BAD_NAMES = [
    "a/b",
    "..",
    "a?b",
    "a&b",
    "a b",
    "a\nb",
    "a\x00b",
    "名字",
    "",
    "x" * 65,
    "-lead",
    "_lead",
    "a%2Fb",
    "a.b",
    None,
    7,
]


@pytest.mark.parametrize("bad", BAD_NAMES)
@pytest.mark.parametrize("field", ["executionName", "graphName"])
def test_bad_names_raise_before_any_io(httpserver, make_client, bad, field):
    names = {"executionName": "exec-1", "graphName": "graph-1", field: bad}
    with pytest.raises(InvalidNameError) as error:
        make_client().restoreFailedWorkflowExecution(names["executionName"], names["graphName"])
    assert isinstance(error.value, ValueError)
    assert error.value.field == field and field in str(error.value)
    assert httpserver.log == []


def test_longest_valid_names_are_accepted(httpserver, make_client):
    httpserver.expect_request(f"/v2/workflowexecutions/{'e' * 64}").respond_with_json(RESTORED)
    assert make_client().restoreFailedWorkflowExecution("e" * 64, "G" * 64).ok


@pytest.mark.parametrize(
    ("body", "content_type", "code", "message", "request_id"),
    [
        (
            '{"code":"WF.0409","message":"not failed","request_id":"rid-json"}',
            "application/json",
            "WF.0409",
            "not failed",
            "rid-json",
        ),
        (
            '{"code":"WF.0409","message":"m"}',
            "application/json; charset=utf-8",
            "WF.0409",
            "m",
            None,
        ),
        (
            '{"error_code":"APIG.0101","error_msg":"no route"}',
            "application/json",
            "APIG.0101",
            "no route",
            None,
        ),
        (
            "<?xml version='1.0'?><Error><Code>NoSuchKey</Code><Message>gone</Message>"
            "<RequestId>rid-xml</RequestId><HostId>host</HostId><Resource>/r</Resource></Error>",
            "application/xml",
            "NoSuchKey",
            "gone",
            "rid-xml",
        ),
    ],
)
def test_error_bodies_are_parsed(
    httpserver, make_client, body, content_type, code, message, request_id
):
    httpserver.expect_request(PATH).respond_with_data(body, status=409, content_type=content_type)
    result = make_client().restoreFailedWorkflowExecution("exec-1", "graph-1")
    assert (result.status, result.errorCode, result.errorMessage) == (409, code, message)
    assert result.requestId == request_id
    assert result.attempts == 1 and not result.retryable and result.body is None


def test_xml_error_fields_fill_host_and_resource(httpserver, make_client):
    httpserver.expect_request(PATH).respond_with_data(
        "<Error><Code>AccessDenied</Code><Message>no</Message><HostId>h1</HostId>"
        "<Resource>/v2</Resource></Error>",
        status=403,
        content_type="application/xml",
    )
    result = make_client().restoreFailedWorkflowExecution("exec-1", "graph-1")
    assert (result.hostId, result.resource) == ("h1", "/v2")


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [
        ("", "application/json", "empty body"),
        ("<html><body>Bad gateway</body></html>", "text/html", "text/html"),
        ("\x00\xff garbage {", "application/octet-stream", "application/octet-stream"),
        ('{"code": "trunc', "application/json", "application/json"),
        ("<Error><Code>unclosed", "application/xml", "application/xml"),
    ],
)
def test_unparsable_error_bodies_give_a_clear_message(
    httpserver, make_client, body, content_type, fragment
):
    httpserver.expect_request(PATH).respond_with_data(body, status=400, content_type=content_type)
    result = make_client().restoreFailedWorkflowExecution("exec-1", "graph-1")
    assert result.status == 400 and result.errorCode == "HTTP400"
    assert fragment in result.errorMessage


def test_success_with_a_non_json_body_keeps_the_status_and_says_why(httpserver, make_client):
    httpserver.expect_request(PATH).respond_with_data("<html>ok</html>", content_type="text/html")
    result = make_client().restoreFailedWorkflowExecution("exec-1", "graph-1")
    assert result.ok and result.body is None and "not a JSON object" in result.errorMessage


def test_request_id_falls_back_to_x_obs_request_id(httpserver, make_client):
    httpserver.expect_request(PATH).respond_with_json(RESTORED, headers={"x-obs-request-id": "o1"})
    assert make_client().restoreFailedWorkflowExecution("exec-1", "graph-1").requestId == "o1"


def test_5xx_is_retried_and_every_try_is_freshly_signed(
    httpserver, make_client, sleeps, monkeypatch
):
    dates = iter(f"Fri, 27 Nov 2026 18:41:{second:02d} GMT" for second in range(10, 60))
    monkeypatch.setattr(client_module, "http_date", lambda: next(dates))
    httpserver.expect_ordered_request(PATH).respond_with_data("busy", status=503)
    httpserver.expect_ordered_request(PATH).respond_with_data("busy", status=502)
    httpserver.expect_ordered_request(PATH).respond_with_json(RESTORED)

    result = make_client().restoreFailedWorkflowExecution("exec-1", "graph-1")

    assert (result.status, result.attempts) == (200, 3)
    requests_seen = [request for request, _ in httpserver.log]
    assert len({request.headers["Date"] for request in requests_seen}) == 3
    for request in requests_seen:
        assert_signed(request)
    assert len(sleeps.delays) == 2
    assert all(0 <= delay <= 5.0 for delay in sleeps.delays)


def test_retries_stop_at_max_attempts_and_report_them(httpserver, make_client, sleeps):
    httpserver.expect_request(PATH).respond_with_data("down", status=500)
    result = make_client(retry=RetrySchedule(max_attempts=4)).restoreFailedWorkflowExecution(
        "exec-1", "graph-1"
    )
    assert (result.status, result.attempts, result.retryable) == (500, 4, True)
    assert len(httpserver.log) == 4 and len(sleeps.delays) == 3


def test_429_honours_retry_after(httpserver, make_client, sleeps):
    httpserver.expect_ordered_request(PATH).respond_with_data(
        "slow down", status=429, headers={"Retry-After": "2"}
    )
    httpserver.expect_ordered_request(PATH).respond_with_json(RESTORED)
    result = make_client().restoreFailedWorkflowExecution("exec-1", "graph-1")
    assert (result.status, result.attempts) == (200, 2)
    assert sleeps.delays[0] >= 2.0


def test_retry_after_beyond_the_limit_hands_back_instead_of_sleeping(
    httpserver, make_client, sleeps
):
    httpserver.expect_request(PATH).respond_with_data(
        "", status=503, headers={"Retry-After": "3600"}
    )
    result = make_client().restoreFailedWorkflowExecution("exec-1", "graph-1")
    assert (result.status, result.attempts, sleeps.delays) == (503, 1, [])


def test_deadline_is_never_passed(httpserver, make_client, sleeps):
    httpserver.expect_request(PATH).respond_with_data("", status=503, headers={"Retry-After": "2"})
    deadline = time.monotonic() + 1.0
    result = make_client().restoreFailedWorkflowExecution("exec-1", "graph-1", deadline=deadline)
    assert (result.status, result.attempts, sleeps.delays) == (503, 1, [])


def test_an_expired_deadline_sends_nothing(httpserver, make_client):
    result = make_client().restoreFailedWorkflowExecution(
        "exec-1", "graph-1", deadline=time.monotonic() - 1
    )
    assert result.status == 0 and result.reason == "DeadlineExceeded" and not result.maybe_applied
    assert httpserver.log == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_connection_refused_is_retried_then_reported_as_not_applied(make_client, sleeps):
    client = make_client(server=f"http://127.0.0.1:{free_port()}")
    result = client.restoreFailedWorkflowExecution("exec-1", "graph-1")
    assert (result.status, result.errorCode, result.attempts) == (0, "ConnectionError", 3)
    assert result.retryable and not result.maybe_applied
    assert len(sleeps.delays) == 2


def slow_answer(httpserver, seconds: float) -> None:
    def slow(_request):
        time.sleep(seconds)
        return Response("{}", content_type="application/json")

    httpserver.expect_request(PATH).respond_with_handler(slow)


def wait_for_log(httpserver, count: int) -> None:
    """Let the single-threaded server finish its slow answers so they cannot leak into the
    next test's log (bounded wait)."""
    give_up = time.monotonic() + 5
    while len(httpserver.log) < count and time.monotonic() < give_up:
        time.sleep(0.05)


def test_a_restore_that_timed_out_after_sending_is_never_sent_again(httpserver, make_client):
    slow_answer(httpserver, 0.6)
    client = make_client(timeout=(1.0, 0.2), retry=RetrySchedule(max_attempts=3))
    result = client.restoreFailedWorkflowExecution("exec-1", "graph-1")
    assert (result.status, result.errorCode, result.attempts) == (0, "ReadTimeout", 1)
    assert result.maybe_applied and result.retryable
    wait_for_log(httpserver, 1)
    assert len(httpserver.log) == 1


def test_a_query_that_timed_out_is_retried(httpserver, make_client):
    slow_answer(httpserver, 0.6)
    client = make_client(timeout=(1.0, 0.2), retry=RetrySchedule(max_attempts=2))
    result = client.getWorkflowExecution("exec-1", "graph-1")
    assert (result.status, result.errorCode, result.attempts) == (0, "ReadTimeout", 2)
    wait_for_log(httpserver, 2)
    assert [request.method for request, _ in httpserver.log] == ["GET", "GET"]


def test_redirects_are_returned_not_followed(httpserver, make_client):
    httpserver.expect_request(PATH).respond_with_data(
        "", status=307, headers={"Location": httpserver.url_for("/elsewhere")}
    )
    httpserver.expect_request("/elsewhere").respond_with_json(RESTORED)
    result = make_client().restoreFailedWorkflowExecution("exec-1", "graph-1")
    assert (result.status, result.errorCode, result.attempts) == (307, "Redirect", 1)
    assert [request.path for request, _ in httpserver.log] == [PATH]


def test_instances_are_independent(httpserver, make_client):
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    first = make_client()
    second = make_client(access_key_id="OTHERAK", secret_access_key="other-secret")
    first.restoreFailedWorkflowExecution("exec-1", "graph-1")
    second.restoreFailedWorkflowExecution("exec-1", "graph-1")
    first.restoreFailedWorkflowExecution("exec-1", "graph-1")
    keys = [request.headers["Authorization"].split(":")[0] for request, _ in httpserver.log]
    assert keys == [f"OBS {AK}", "OBS OTHERAK", f"OBS {AK}"]


def test_the_context_manager_and_one_sdk_name_per_operation(httpserver):
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    with WorkflowClient(AK, SK, server=httpserver.url_for("").rstrip("/")) as client:
        assert client.restoreFailedWorkflowExecution("exec-1", "graph-1").ok
        assert not hasattr(client, "restore_failed_workflow_execution")  # no second name


def test_secrets_never_appear_in_reprs_or_results(httpserver, make_client):
    httpserver.expect_request(PATH).respond_with_data("", status=403)
    client = make_client(security_token=TOKEN)
    result = client.restoreFailedWorkflowExecution("exec-1", "graph-1")
    refused = make_client(server=f"http://127.0.0.1:{free_port()}", security_token=TOKEN)
    transport = refused.restoreFailedWorkflowExecution("exec-1", "graph-1")
    text = " ".join(map(repr, (client, refused, result, transport))) + str(result)
    for secret in (SK, TOKEN):
        assert secret not in text
    assert f"OBS {AK}" not in text


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("obs.cn-north-4.myhuaweicloud.com", "https://obs.cn-north-4.myhuaweicloud.com"),
        ("https://obs.example.com/", "https://obs.example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ],
)
def test_endpoints_are_normalised(given, expected):
    assert normalise_endpoint(given) == expected


@pytest.mark.parametrize("bad", ["", "ftp://host", "https://host/path", "https://u:p@host"])
def test_bad_endpoints_are_refused_without_echoing_credentials(bad):
    with pytest.raises(ValueError) as error:
        normalise_endpoint(bad)
    assert ":p@" not in str(error.value)
