"""The DWR v3 client, against a loopback DWR stand-in (pytest-httpserver)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import pytest
from werkzeug import Response

from handler.client import DwrClient, ExecutionPage, ExecutionSummary, RestoreBody, RetrySchedule
from handler.client import ExecutionInfo as DwrExecutionInfo
from handler.client import dwr as dwr_module
from handler.client import normalise_state as normalise_status
from handler.client.dwr_signing import DwrSigner
from handler.client.obs_signing import Credentials
from handler.names import InvalidNameError
from tests.conftest import AK, SK, TOKEN

PROJECT = "0123456789abcdef0123456789abcdef"
EXECUTION_PATH = f"/v3/{PROJECT}/workflows/graph-1/workflowexecution/exec-1"
RESTORE_PATH = EXECUTION_PATH + "/retry"
LIST_PATH = f"/v3/{PROJECT}/workflowexecutions"
RESTORED = {
    "execution_urn": "urn:dwr:cn-south-1:p:execution:graph-1:exec-1",
    "restored_at": "2026-11-27T18:41:28Z",
    "execution_name": "exec-1",
}
FAILED_EXECUTION = {
    "workflow_id": "wf-1",
    "workflow_urn": "urn:dwr:cn-south-1:p:graph:graph-1",
    "execution_id": "exec-1",
    "status": "fail",
    "begin_time": "2026-11-27T18:00:00Z",
    "node_execution_details": [
        {"status": "success", "error_message": "", "begin_time": 1, "end_time": 2},
        {"status": "fail", "error_message": "image decode failed: bad header", "end_time": 3},
        {"status": "fail", "error_message": None},
        "not a node",
        {"status": "fail", "error_message": "second failure"},
    ],
}


@pytest.fixture
def make_client(httpserver, sleeps):
    """DWR clients against the loopback server; closed at the end of the test."""
    clients = []

    def factory(**overrides) -> DwrClient:
        options = {
            "access_key_id": AK,
            "secret_access_key": SK,
            "project_id": PROJECT,
            "server": httpserver.url_for("").rstrip("/"),
            "timeout": (1.0, 2.0),
            "retry": RetrySchedule(max_attempts=3),
            "sleep": sleeps,
        }
        options.update(overrides)
        client = DwrClient(**options)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


def assert_signed(request, token=None):
    """The request carries a valid SDK-HMAC-SHA256 signature over the headers it names."""
    authorization = request.headers["Authorization"]
    names = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "x-sdk-date", "x-project-id", "content-type"} <= set(names)
    assert ("x-security-token" in names) == bool(token)
    expected = DwrSigner(Credentials(AK, SK, token)).authorization(
        request.method,
        request.path,
        dict(parse_qsl(request.query_string.decode(), keep_blank_values=True)),
        {name: request.headers[name] for name in names},
        request.get_data(),
    )
    assert authorization == expected


def wait_for_log(httpserver, count):
    """Let the single-threaded server finish slow answers so they cannot leak into the next
    test's log (bounded wait)."""
    give_up = time.monotonic() + 5
    while len(httpserver.log) < count and time.monotonic() < give_up:
        time.sleep(0.05)


# --- happy paths ----------------------------------------------------------------------------


def test_restore_sends_the_documented_request_and_parses_the_answer(httpserver, make_client):
    httpserver.expect_oneshot_request(RESTORE_PATH, method="POST").respond_with_json(
        RESTORED, headers={"X-Request-Id": "req-1"}
    )
    result = make_client().restoreFailedWorkflowExecution("exec-1", "graph-1")

    assert (result.status, result.ok, result.attempts, result.requestId) == (200, True, 1, "req-1")
    assert result.body == RestoreBody(RESTORED["execution_urn"], RESTORED["restored_at"], "exec-1")
    assert result.errorCode is None and result.errorMessage is None
    request, _ = httpserver.log[0]
    assert request.get_data() == b"" and request.query_string == b""
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Content-Length"] == "0"
    assert request.headers["X-Project-Id"] == PROJECT
    assert request.headers["Host"] == httpserver.url_for("").split("://")[1].rstrip("/")
    assert "X-Security-Token" not in request.headers
    assert_signed(request)


def test_temporary_credentials_sign_the_security_token(httpserver, make_client):
    httpserver.expect_oneshot_request(RESTORE_PATH, method="POST").respond_with_json(RESTORED)
    make_client(security_token=TOKEN).restoreFailedWorkflowExecution("exec-1", "graph-1")
    request, _ = httpserver.log[0]
    assert request.headers["X-Security-Token"] == TOKEN
    assert_signed(request, TOKEN)


def test_query_gives_the_state_in_obs_terms_and_the_failed_nodes_messages(httpserver, make_client):
    httpserver.expect_oneshot_request(EXECUTION_PATH, method="GET").respond_with_json(
        FAILED_EXECUTION
    )
    result = make_client().getWorkflowExecution("exec-1", "graph-1")

    assert result.ok and isinstance(result.body, DwrExecutionInfo)
    info = result.body
    # What the pipeline reads for the OBS answer works unchanged.
    assert str(info.executionInfo.get("execution_state")).upper() == "FAILED"
    assert info.executionState == "FAILED" and info.status == "fail"
    assert info.errorMessages == ("image decode failed: bad header", "second failure")
    assert info.executionInfo["workflow_urn"] == FAILED_EXECUTION["workflow_urn"]
    request, _ = httpserver.log[0]
    assert request.get_data() == b"" and "Content-Length" not in request.headers
    assert_signed(request)


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("fail", "FAILED"),
        ("success", "SUCCESS"),
        ("running", "RUNNING"),
        ("timeout", "TIMEOUT"),
        ("cancel", "CANCELED"),
        ("FAILED", "FAILED"),
        ("paused", "PAUSED"),
        (None, None),
        ("", None),
    ],
)
def test_statuses_are_normalised(httpserver, make_client, status, state):
    httpserver.expect_request(EXECUTION_PATH).respond_with_json({"status": status})
    info = make_client().getWorkflowExecution("exec-1", "graph-1").body
    assert (info.executionInfo["execution_state"], info.errorMessages) == (state, ())
    assert normalise_status(status) == state


def test_an_obs_shaped_state_is_kept_when_there_is_no_status(httpserver, make_client):
    httpserver.expect_request(EXECUTION_PATH).respond_with_json({"execution_state": "running"})
    info = make_client().getWorkflowExecution("exec-1", "graph-1").body
    assert (info.executionState, info.status) == ("RUNNING", None)


def test_query_tolerates_a_malformed_node_list(httpserver, make_client):
    httpserver.expect_request(EXECUTION_PATH).respond_with_json(
        {"status": "fail", "node_execution_details": {"not": "a list"}}
    )
    info = make_client().getWorkflowExecution("exec-1", "graph-1").body
    assert (info.executionState, info.errorMessages) == ("FAILED", ())


def epoch(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    ("answer", "stopped"),
    [
        # The nodes' epoch milliseconds are more precise than the execution's whole seconds.
        (
            {
                "end_time": "2026-11-27T18:00:05Z",
                "node_execution_details": [
                    {"end_time": 1795802404250},
                    {"end_time": 1795802405750},
                    {"end_time": None},
                ],
            },
            1795802405.75,
        ),
        ({"end_time": "2026-11-27T18:00:05Z"}, epoch("2026-11-27T18:00:05Z")),
        (
            {"end_time": None, "last_update_time": "2026-11-27T18:00:09Z"},
            epoch("2026-11-27T18:00:09Z"),
        ),
        ({"end_time": "2026-13-27T18:00:05Z"}, None),  # the right shape, but no date
        ({"end_time": "yesterday", "node_execution_details": [{"end_time": True}]}, None),
        ({"node_execution_details": [{"end_time": 99999999999999999999}]}, None),
        ({}, None),
    ],
)
def test_query_says_when_the_execution_stopped_never_later_than_it_did(
    httpserver, make_client, answer, stopped
):
    """The stop time tells a restored run that failed again from the failure the restore was
    for; an odd or missing time is unknown, never a guess."""
    httpserver.expect_request(EXECUTION_PATH).respond_with_json({"status": "fail", **answer})
    info = make_client().getWorkflowExecution("exec-1", "graph-1").body
    assert info.stoppedAt == stopped


PAGE = {
    "count": 3,
    "is_truncated": True,
    "next_offset": 3,
    "executions": [
        {
            "graph_urn": "urn:g",
            "execution_urn": "urn:e1",
            "execution_name": "e1",
            "execution_type": "NORMAL",
            "execution_state": "fail",
            "started_at": "2026-11-27T18:00:00Z",
            "stopped_at": "2026-11-27T18:01:00Z",
        },
        {"execution_name": "e2", "execution_state": "success"},
        "junk",
    ],
}


def test_list_sends_the_filters_and_parses_the_page(httpserver, make_client):
    httpserver.expect_oneshot_request(LIST_PATH, method="GET").respond_with_json(PAGE)
    result = make_client().listWorkflowExecution(
        "graph-1",
        status="fail",
        start_time="2026-11-20T00:00:00Z",
        # 20:00 at UTC+2 is 18:00 UTC; the service takes UTC.
        end_time=datetime(2026, 11, 27, 20, 0, tzinfo=timezone(timedelta(hours=2))),
        limit=2,
        offset=1,
    )

    request, _ = httpserver.log[0]
    assert request.query_string.decode() == (
        "end_time=2026-11-27T18%3A00%3A00Z&graph_name=graph-1&limit=2&offset=1"
        "&start_time=2026-11-20T00%3A00%3A00Z&status=fail"
    )
    assert_signed(request)
    page = result.body
    assert isinstance(page, ExecutionPage)
    assert (page.count, page.is_truncated, page.next_offset) == (3, True, 3)
    assert page.executions[0] == ExecutionSummary(
        execution_name="e1",
        execution_urn="urn:e1",
        graph_urn="urn:g",
        execution_type="NORMAL",
        execution_state="fail",
        started_at="2026-11-27T18:00:00Z",
        stopped_at="2026-11-27T18:01:00Z",
    )
    assert [item.state for item in page.executions] == ["FAILED", "SUCCESS"]


def test_list_without_options_sends_only_the_graph_and_naive_times_are_utc(httpserver, make_client):
    httpserver.expect_request(LIST_PATH).respond_with_json({"executions": []})
    client = make_client()
    page = client.listWorkflowExecution("graph-1").body
    client.listWorkflowExecution("graph-1", start_time=datetime(2026, 11, 20, 1, 2, 3))
    assert page == ExecutionPage(executions=(), count=None, is_truncated=False, next_offset=None)
    queries = [request.query_string.decode() for request, _ in httpserver.log]
    assert queries == [
        "graph_name=graph-1",
        "graph_name=graph-1&start_time=2026-11-20T01%3A02%3A03Z",
    ]


def test_paging_follows_next_offset_until_the_last_page(httpserver, make_client):
    names = [f"e{number}" for number in range(5)]

    def pages(request):
        offset = int(request.args.get("offset", "1"))
        limit = int(request.args["limit"])
        chunk = names[offset - 1 : offset - 1 + limit]
        more = offset - 1 + limit < len(names)
        return Response(
            json.dumps(
                {
                    "count": len(names),
                    "is_truncated": more,
                    "next_offset": offset + limit if more else None,
                    "executions": [{"execution_name": name} for name in chunk],
                }
            ),
            content_type="application/json",
        )

    httpserver.expect_request(LIST_PATH).respond_with_handler(pages)
    client = make_client()
    seen, offset = [], None
    for _ in range(10):  # bounded: 3 pages expected
        page = client.listWorkflowExecution("graph-1", limit=2, offset=offset).body
        seen += [item.execution_name for item in page.executions]
        if not page.is_truncated:
            break
        offset = page.next_offset
    assert seen == names
    assert [request.args.get("offset") for request, _ in httpserver.log] == [None, "3", "5"]


# --- bad input is refused before any I/O -----------------------------------------------------

BAD_NAMES = ["a/b", "..", "a?b", "a&b", "a b", "a\nb", "名字", "", "x" * 65, "-lead", "a%2Fb", None]
OPERATIONS = {
    "restore": lambda client, execution, graph: client.restoreFailedWorkflowExecution(
        execution, graph
    ),
    "query": lambda client, execution, graph: client.getWorkflowExecution(execution, graph),
    "list": lambda client, execution, graph: client.listWorkflowExecution(graph),
}


@pytest.mark.parametrize("bad", BAD_NAMES)
@pytest.mark.parametrize(
    ("operation", "field"),
    [
        ("restore", "executionName"),
        ("restore", "graphName"),
        ("query", "executionName"),
        ("query", "graphName"),
        ("list", "graphName"),
    ],
)
def test_bad_names_raise_before_any_io(httpserver, make_client, bad, operation, field):
    names = {"executionName": "exec-1", "graphName": "graph-1", field: bad}
    with pytest.raises(InvalidNameError) as error:
        OPERATIONS[operation](make_client(), names["executionName"], names["graphName"])
    assert error.value.field == field and field in str(error.value)
    assert httpserver.log == []


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("status", "FAILED", "status"),
        ("status", "failed", "status"),
        ("status", ["fail"], "status"),
        ("limit", 0, "limit"),
        ("limit", 201, "limit"),
        ("limit", True, "limit"),
        ("limit", "50", "limit"),
        ("offset", -1, "offset"),
        ("offset", 1.5, "offset"),
        ("offset", 1001, "offset"),  # DWR documents 1-1000 and refuses more
        ("start_time", "2026-11-20 00:00:00", "start_time"),
        ("start_time", "yesterday", "start_time"),
        ("end_time", "2026-11-20T00:00:00+08:00", "end_time"),
        ("end_time", 1795804888, "end_time"),
    ],
)
def test_bad_list_options_raise_before_any_io(httpserver, make_client, option, value, fragment):
    with pytest.raises(ValueError, match=fragment):
        make_client().listWorkflowExecution("graph-1", **{option: value})
    assert httpserver.log == []


@pytest.mark.parametrize("bad", ["", None, "a/b", "../x", "p?q", "x" * 65, "项目"])
def test_bad_project_ids_are_refused_at_construction(httpserver, bad):
    with pytest.raises(ValueError, match="project_id"):
        DwrClient(AK, SK, bad, httpserver.url_for(""))


@pytest.mark.parametrize("missing", ["access_key_id", "secret_access_key"])
def test_credentials_are_required(httpserver, make_client, missing):
    with pytest.raises(ValueError, match="required"):
        make_client(**{missing: ""})


# --- errors, retries and what is never re-sent ------------------------------------------------


def test_dwr_error_bodies_are_parsed(httpserver, make_client):
    httpserver.expect_request(RESTORE_PATH).respond_with_json(
        {"error_code": "DWR.0409", "error_msg": "execution is not failed", "request_id": "rid-b"},
        status=409,
    )
    result = make_client().restoreFailedWorkflowExecution("exec-1", "graph-1")
    assert (result.status, result.errorCode, result.errorMessage) == (
        409,
        "DWR.0409",
        "execution is not failed",
    )
    assert (result.requestId, result.attempts, result.retryable, result.body) == (
        "rid-b",
        1,
        False,
        None,
    )


def test_the_request_id_header_wins_over_the_body(httpserver, make_client):
    httpserver.expect_request(EXECUTION_PATH).respond_with_json(
        {"error_code": "DWR.0404", "error_msg": "no such execution", "request_id": "rid-body"},
        status=404,
        headers={"X-Request-Id": "rid-header"},
    )
    result = make_client().getWorkflowExecution("exec-1", "graph-1")
    assert (result.status, result.errorCode, result.requestId) == (404, "DWR.0404", "rid-header")


@pytest.mark.parametrize(
    ("status", "body", "content_type", "fragment"),
    [
        (200, "<html>ok</html>", "text/html", "not a JSON object"),
        (200, "[1, 2]", "application/json", "not a JSON object"),
        (400, "\x00\xff garbage {", "application/octet-stream", "application/octet-stream"),
        (400, "", "application/json", "empty body"),
    ],
)
def test_garbage_bodies_give_a_clear_message(
    httpserver, make_client, status, body, content_type, fragment
):
    httpserver.expect_request(EXECUTION_PATH).respond_with_data(
        body, status=status, content_type=content_type
    )
    result = make_client().getWorkflowExecution("exec-1", "graph-1")
    assert result.status == status and result.body is None and fragment in result.errorMessage


def test_5xx_is_retried_and_every_try_is_freshly_signed(
    httpserver, make_client, sleeps, monkeypatch
):
    dates = iter(f"20261127T1841{second:02d}Z" for second in range(10, 60))
    monkeypatch.setattr(dwr_module, "sdk_date", lambda: next(dates))
    httpserver.expect_ordered_request(RESTORE_PATH).respond_with_data("busy", status=503)
    httpserver.expect_ordered_request(RESTORE_PATH).respond_with_json(
        {"error_code": "DWR.5000", "error_msg": "internal"}, status=500
    )
    httpserver.expect_ordered_request(RESTORE_PATH).respond_with_json(RESTORED)

    result = make_client().restoreFailedWorkflowExecution("exec-1", "graph-1")

    assert (result.status, result.attempts) == (200, 3)
    seen = [request for request, _ in httpserver.log]
    assert len({request.headers["X-Sdk-Date"] for request in seen}) == 3
    for request in seen:
        assert_signed(request)
    assert len(sleeps.delays) == 2 and all(0 <= delay <= 5.0 for delay in sleeps.delays)


def test_retries_stop_at_max_attempts(httpserver, make_client, sleeps):
    httpserver.expect_request(LIST_PATH).respond_with_data("down", status=502)
    result = make_client(retry=RetrySchedule(max_attempts=4)).listWorkflowExecution("graph-1")
    assert (result.status, result.attempts, result.retryable) == (502, 4, True)
    assert len(httpserver.log) == 4 and len(sleeps.delays) == 3


def test_429_honours_retry_after(httpserver, make_client, sleeps):
    httpserver.expect_ordered_request(RESTORE_PATH).respond_with_json(
        {"error_code": "APIGW.0308", "error_msg": "throttled"},
        status=429,
        headers={"Retry-After": "2"},
    )
    httpserver.expect_ordered_request(RESTORE_PATH).respond_with_json(RESTORED)
    result = make_client().restoreFailedWorkflowExecution("exec-1", "graph-1")
    assert (result.status, result.attempts) == (200, 2)
    assert sleeps.delays[0] >= 2.0


def test_retry_after_beyond_the_limit_hands_back_instead_of_sleeping(
    httpserver, make_client, sleeps
):
    httpserver.expect_request(EXECUTION_PATH).respond_with_data(
        "", status=503, headers={"Retry-After": "3600"}
    )
    result = make_client().getWorkflowExecution("exec-1", "graph-1")
    assert (result.status, result.attempts, sleeps.delays) == (503, 1, [])


def test_redirects_are_returned_not_followed(httpserver, make_client):
    httpserver.expect_request(RESTORE_PATH).respond_with_data(
        "", status=307, headers={"Location": httpserver.url_for("/elsewhere")}
    )
    httpserver.expect_request("/elsewhere").respond_with_json(RESTORED)
    result = make_client().restoreFailedWorkflowExecution("exec-1", "graph-1")
    assert (result.status, result.errorCode, result.attempts) == (307, "Redirect", 1)
    assert [request.path for request, _ in httpserver.log] == [RESTORE_PATH]


def slow_answer(_request):
    time.sleep(0.6)
    return Response("{}", content_type="application/json")


def test_a_restore_that_may_have_been_applied_is_sent_exactly_once(httpserver, make_client, sleeps):
    httpserver.expect_request(RESTORE_PATH).respond_with_handler(slow_answer)
    client = make_client(timeout=(1.0, 0.2), retry=RetrySchedule(max_attempts=3))
    result = client.restoreFailedWorkflowExecution("exec-1", "graph-1")
    assert (result.status, result.errorCode, result.attempts) == (0, "ReadTimeout", 1)
    assert result.maybe_applied and sleeps.delays == []
    wait_for_log(httpserver, 2)  # a wrongful second send would show up here
    assert len(httpserver.log) == 1


def test_a_query_with_no_answer_is_retried(httpserver, make_client):
    httpserver.expect_request(EXECUTION_PATH).respond_with_handler(slow_answer)
    client = make_client(timeout=(1.0, 0.2), retry=RetrySchedule(max_attempts=2))
    result = client.getWorkflowExecution("exec-1", "graph-1")
    assert (result.status, result.errorCode, result.attempts) == (0, "ReadTimeout", 2)
    wait_for_log(httpserver, 2)
    assert len(httpserver.log) == 2


class HangUpServer:
    """Accepts connections, reads the request, and closes without answering: the request was
    sent, so the service may have acted on it. Counts connections; stops by itself."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.2)
        self.connections = 0
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        give_up = time.monotonic() + 10
        while not self._stop.is_set() and time.monotonic() < give_up:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                continue
            with connection:
                self.connections += 1
                connection.settimeout(1.0)
                with contextlib.suppress(OSError):
                    connection.recv(65536)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.listener.close()


@pytest.fixture
def hang_up_server():
    server = HangUpServer()
    yield server
    server.close()


def test_a_reset_after_sending_is_not_resent_for_a_restore_but_is_for_a_query(
    make_client, hang_up_server, sleeps
):
    client = make_client(server=hang_up_server.url, retry=RetrySchedule(max_attempts=3))
    restore = client.restoreFailedWorkflowExecution("exec-1", "graph-1")
    assert (restore.status, restore.errorCode, restore.attempts) == (0, "ConnectionError", 1)
    assert restore.maybe_applied and hang_up_server.connections == 1

    query = client.getWorkflowExecution("exec-1", "graph-1")
    assert (query.status, query.attempts) == (0, 3)
    assert hang_up_server.connections == 4


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_connection_refused_is_retried_even_for_a_restore(make_client, sleeps):
    client = make_client(server=f"http://127.0.0.1:{free_port()}")
    result = client.restoreFailedWorkflowExecution("exec-1", "graph-1")
    assert (result.status, result.errorCode, result.attempts) == (0, "ConnectionError", 3)
    assert not result.maybe_applied and len(sleeps.delays) == 2


def test_an_expired_deadline_sends_nothing(httpserver, make_client):
    result = make_client().restoreFailedWorkflowExecution(
        "exec-1", "graph-1", deadline=time.monotonic() - 1
    )
    assert (result.status, result.reason, result.maybe_applied) == (0, "DeadlineExceeded", False)
    assert httpserver.log == []


# --- one keep-alive connection, secrets, conveniences ------------------------------------------


def test_calls_share_one_keep_alive_connection():
    connections = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            connections.append(self.client_address)

        def do_POST(self):
            self._answer(b'{"execution_urn": "u"}')

        def do_GET(self):
            self._answer(b'{"status": "fail"}')

        def _answer(self, body):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with DwrClient(AK, SK, PROJECT, f"http://127.0.0.1:{server.server_port}") as client:
            for _ in range(3):
                assert client.restoreFailedWorkflowExecution("exec-1", "graph-1").ok
                assert client.getWorkflowExecution("exec-1", "graph-1").ok
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)
    assert len(connections) == 1


def test_secrets_never_appear_in_reprs_or_results(httpserver, make_client):
    httpserver.expect_request(RESTORE_PATH).respond_with_data("", status=403)
    client = make_client(security_token=TOKEN)
    result = client.restoreFailedWorkflowExecution("exec-1", "graph-1")
    refused = make_client(server=f"http://127.0.0.1:{free_port()}", security_token=TOKEN)
    transport = refused.restoreFailedWorkflowExecution("exec-1", "graph-1")
    with pytest.raises(InvalidNameError) as bad_name:
        client.getWorkflowExecution("a/b", "graph-1")
    text = " ".join(map(repr, (client, refused, result, transport, bad_name.value)))
    text += str(result) + str(bad_name.value)
    for secret in (SK, TOKEN, AK):
        assert secret not in text
    assert PROJECT in repr(client)


def test_the_context_manager_and_one_sdk_name_per_operation(httpserver):
    httpserver.expect_request(RESTORE_PATH).respond_with_json(RESTORED)
    httpserver.expect_request(EXECUTION_PATH).respond_with_json({"status": "success"})
    httpserver.expect_request(LIST_PATH).respond_with_json({"executions": []})
    with DwrClient(AK, SK, PROJECT, httpserver.url_for("").rstrip("/")) as client:
        assert client.restoreFailedWorkflowExecution("exec-1", "graph-1").ok
        assert client.getWorkflowExecution("exec-1", "graph-1").body.executionState == "SUCCESS"
        assert client.listWorkflowExecution("graph-1").ok
        assert not hasattr(client, "restore_failed_workflow_execution")  # no second name
