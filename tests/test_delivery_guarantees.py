"""Delivery guarantees: each promise of the README's "Delivery guarantees" section is a test here.

Deliveries go through the real HTTP entry point (functions-framework's app); OBS is the
loopback pytest-httpserver; state lives in a real SQLite file (or Redis, where named).
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time

import pytest
from werkzeug import Response

from handler.store import open_store
from tests.conftest import AUTH_TOKEN, PATH, RESTORED, failed_again_when_asked, log_lines

pytest_plugins = ["tests.redis_server"]

SUBJECT = "graph-1/exec-1"
DAY = 86400.0


def event(event_id: str = "evt-1", execution: str = "exec-1") -> dict:
    """An EventGrid delivery of one workflow-failure CloudEvent."""
    return {
        "events": [
            {
                "specversion": "1.0",
                "id": event_id,
                "source": "HC.OBS",
                "type": "com.huaweicloud.obs.workflow.execution.failed",
                "datacontenttype": "application/json",
                "data": {
                    "graph_name": "graph-1",
                    "execution_name": execution,
                    "execution_state": "FAILED",
                },
            }
        ]
    }


def deliver(client, body):
    response = client.post(
        "/",
        data=json.dumps(body),
        headers={"Authorization": f"Bearer {AUTH_TOKEN}", "Content-Type": "application/json"},
    )
    return response.status_code, response.get_json()


def outcome(document) -> str:
    (result,) = document["results"]
    return result["outcome"]


def puts(httpserver) -> int:
    return sum(1 for request, _ in httpserver.log if request.method == "PUT")


def budget_used(function_env) -> int:
    with open_store(function_env["RESTORE_STATE_URL"]) as store:
        return store.budget_used(SUBJECT, DAY)


# --- nothing doubled --------------------------------------------------------------------------


def test_a_redelivered_event_never_restores_twice(httpserver, http_function):
    httpserver.expect_request(PATH).respond_with_json(RESTORED, headers={"X-Request-ID": "r1"})
    client = http_function()
    first = deliver(client, event())
    second = deliver(client, event())
    assert first[0] == second[0] == 200
    assert outcome(first[1]) == "restored"
    assert outcome(second[1]) == "duplicate"
    (again,) = second[1]["results"]
    assert "restored" in again["reason"] and again["requestId"] == "r1"
    assert again["executionUrn"] == RESTORED["execution_urn"]
    assert puts(httpserver) == 1


def test_a_redelivery_survives_a_restart_of_the_function(httpserver, http_function):
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    deliver(http_function(), event())
    assert outcome(deliver(http_function(), event())[1]) == "duplicate"  # a fresh instance
    assert puts(httpserver) == 1


def test_a_permanent_refusal_is_recorded_and_not_retried(httpserver, http_function, function_env):
    httpserver.expect_request(PATH).respond_with_json(
        {"code": "WF.0404", "message": "no such execution"}, status=404
    )
    client = http_function()
    status, document = deliver(client, event())
    assert (status, outcome(document)) == (200, "failed")
    status, document = deliver(client, event())
    assert (status, outcome(document)) == (200, "duplicate")
    (result,) = document["results"]
    assert (result["errorCode"], result["errorMessage"]) == ("WF.0404", "no such execution")
    assert puts(httpserver) == 1
    assert budget_used(function_env) == 0


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (403, "SignatureDoesNotMatch"),
        (403, "InvalidAccessKeyId"),
        (403, "AccessDenied"),
        (403, "RequestTimeTooSkewed"),
        (403, "InvalidToken"),
        (401, "Unauthorized"),
    ],
)
def test_a_credentials_refusal_is_not_recorded_and_the_redelivery_after_the_fix_restores(
    httpserver, http_function, function_env, capsys, status, code
):
    httpserver.expect_ordered_request(PATH).respond_with_data(
        f"<Error><Code>{code}</Code><Message>refused</Message></Error>",
        status=status,
        content_type="application/xml",
    )
    httpserver.expect_ordered_request(PATH).respond_with_json(RESTORED)  # after the fix
    client = http_function()

    status_code, document = deliver(client, event())
    (result,) = document["results"]
    assert (status_code, result["outcome"], result["errorCode"]) == (503, "retryable_error", code)
    assert "check" in result["reason"]
    (line,) = [line for line in log_lines(capsys.readouterr().out) if line.get("eventId")]
    assert line["level"] == "ERROR"
    assert budget_used(function_env) == 0

    assert deliver(client, event())[0] == 200
    assert puts(httpserver) == 2
    assert budget_used(function_env) == 1


def test_an_execution_that_is_not_failed_any_more_is_classified_honestly(
    httpserver, http_function, function_env
):
    httpserver.expect_request(PATH, method="PUT").respond_with_json(
        {"code": "WF.0409", "message": "execution is not failed"}, status=409
    )
    httpserver.expect_request(PATH, method="GET").respond_with_json(
        {"execution_info": {"execution_name": "exec-1", "execution_state": "RUNNING"}}
    )
    status, document = deliver(http_function(), event())
    (result,) = document["results"]
    assert (status, result["outcome"]) == (200, "skipped")
    assert "RUNNING" in result["reason"]
    assert budget_used(function_env) == 0


def test_a_409_for_an_execution_still_failed_is_a_failure(httpserver, http_function):
    httpserver.expect_request(PATH, method="PUT").respond_with_json(
        {"code": "WF.0409", "message": "conflict"}, status=409
    )
    httpserver.expect_request(PATH, method="GET").respond_with_json(
        {"execution_info": {"execution_state": "FAILED"}}
    )
    assert outcome(deliver(http_function(), event())[1]) == "failed"


# --- nothing lost -----------------------------------------------------------------------------


def test_an_id_reused_for_another_execution_is_handled_not_answered_with_the_first_outcome(
    httpserver, http_function
):
    """A sender that reuses an event id for another execution still gets that one restored,
    and both keep deduplicating their own redeliveries."""
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    restored_2 = {**RESTORED, "execution_name": "exec-2"}
    httpserver.expect_request("/v2/workflowexecutions/exec-2").respond_with_json(restored_2)
    client = http_function()
    assert outcome(deliver(client, event("evt-1"))[1]) == "restored"
    code, document = deliver(client, event("evt-1", execution="exec-2"))
    assert (code, outcome(document)) == (200, "restored")
    assert document["results"][0]["eventId"] == "ce:HC.OBS:evt-1"  # the sender's id, as sent
    assert outcome(deliver(client, event("evt-1", execution="exec-2"))[1]) == "duplicate"
    assert outcome(deliver(client, event("evt-1"))[1]) == "duplicate"
    assert [request.path for request, _ in httpserver.log if request.method == "PUT"] == [
        PATH,
        "/v2/workflowexecutions/exec-2",
    ]


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (500, {}),
        (502, {}),
        (503, {}),
        (504, {}),
        (429, {}),
        (503, {"Retry-After": "1"}),
        (429, {"Retry-After": "1"}),
    ],
)
def test_a_transient_answer_makes_the_platform_redeliver_and_the_redelivery_restores(
    httpserver, http_function, function_env, status, headers
):
    function_env["OBS_MAX_ATTEMPTS"] = "2" if headers else "1"
    httpserver.expect_ordered_request(PATH).respond_with_data(
        "busy", status=status, headers=headers
    )
    if headers:
        httpserver.expect_ordered_request(PATH).respond_with_data(
            "busy", status=status, headers=headers
        )
    httpserver.expect_ordered_request(PATH).respond_with_json(RESTORED)
    client = http_function()

    code, document = deliver(client, event())
    assert code == 503 and outcome(document) == "retryable_error"
    assert budget_used(function_env) == 0  # a definite transient answer uses no budget

    code, document = deliver(client, event())  # the platform's redelivery
    assert (code, outcome(document)) == (200, "restored")
    assert budget_used(function_env) == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_obs_is_retryable_and_uses_no_budget(http_function, function_env):
    function_env["OBS_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    function_env["OBS_MAX_ATTEMPTS"] = "1"
    code, document = deliver(http_function(), event())
    (result,) = document["results"]
    assert (code, result["outcome"], result["status"]) == (503, "retryable_error", 0)
    assert budget_used(function_env) == 0


def test_a_read_timeout_may_have_restored_so_it_uses_budget_but_is_redelivered(
    httpserver, http_function, function_env
):
    function_env["OBS_MAX_ATTEMPTS"] = "3"
    function_env["OBS_READ_TIMEOUT"] = "0.2"

    def slow(_request):
        time.sleep(0.5)
        return Response(json.dumps(RESTORED), content_type="application/json")

    httpserver.expect_request(PATH).respond_with_handler(slow)
    code, document = deliver(http_function(), event())
    assert (code, outcome(document)) == (503, "retryable_error")
    assert "may have been applied" in document["results"][0]["reason"]
    assert budget_used(function_env) == 1
    assert puts(httpserver) <= 1  # never re-sent blindly, whatever OBS_MAX_ATTEMPTS says
    time.sleep(1.0)  # let the loopback server finish the slow answers (bounded)
    assert puts(httpserver) == 1


@pytest.fixture
def threaded_obs():
    """A loopback OBS stand-in that answers a query while a slow restore is still running."""
    from pytest_httpserver import HTTPServer

    server = HTTPServer(threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


def test_an_unanswered_restore_is_confirmed_by_a_query_not_sent_again(
    threaded_obs, http_function, function_env
):
    function_env["OBS_ENDPOINT"] = threaded_obs.url_for("").rstrip("/")
    function_env["OBS_MAX_ATTEMPTS"] = "3"
    function_env["OBS_READ_TIMEOUT"] = "0.3"

    def slow(_request):
        time.sleep(0.6)
        return Response(json.dumps(RESTORED), content_type="application/json")

    threaded_obs.expect_request(PATH, method="PUT").respond_with_handler(slow)
    threaded_obs.expect_request(PATH, method="GET").respond_with_json(
        {"execution_info": {"execution_name": "exec-1", "execution_state": "RUNNING"}}
    )
    code, document = deliver(http_function(), event())
    (result,) = document["results"]
    assert (code, result["outcome"]) == (200, "restored")
    assert "RUNNING" in result["reason"]
    assert budget_used(function_env) == 1
    give_up = time.monotonic() + 3  # the slow PUT is logged when it finishes (bounded wait)
    while puts(threaded_obs) == 0 and time.monotonic() < give_up:
        time.sleep(0.05)
    assert puts(threaded_obs) == 1


def test_redeliveries_against_a_slow_service_never_exceed_the_budget(http_function, function_env):
    """The issue's case: answers slower than the read timeout, executions that fail again."""
    from handler.devtools.emulator import Emulator
    from tests.conftest import AK, SK

    emulator = Emulator({AK: SK}, after_restore=("FAILED", 0.05))
    emulator.seed("graph-1", "exec-1", "FAILED")
    with emulator:
        emulator.latency(0.5)
        function_env["OBS_ENDPOINT"] = emulator.url
        function_env.update(OBS_MAX_ATTEMPTS="4", OBS_READ_TIMEOUT="0.25")
        function_env["RESTORE_MAX_RESTORES"] = "2"
        client = http_function()
        outcomes = [outcome(deliver(client, event())[1]) for _ in range(6)]
        time.sleep(0.6)  # the last slow answers finish (bounded)
        # The first restore got no answer, nor did the query after it; every redelivery asks
        # again before sending, gets no answer either, and sends nothing.
        assert emulator.restores("graph-1", "exec-1") == 1
    assert outcomes == ["retryable_error"] * 6
    assert budget_used(function_env) == 1


def test_a_redelivery_after_an_unanswered_restore_asks_before_sending(
    threaded_obs, http_function, function_env
):
    """The restore and the query after it got no answer; the redelivery asks first, learns
    its own lost restore took effect (the execution runs), and sends nothing: restored."""
    function_env["OBS_ENDPOINT"] = threaded_obs.url_for("").rstrip("/")
    function_env.update(OBS_MAX_ATTEMPTS="1", OBS_READ_TIMEOUT="0.3")
    queries = []

    def slow_restore(_request):
        time.sleep(0.6)
        return Response(json.dumps(RESTORED), content_type="application/json")

    def query(_request):
        queries.append(1)
        if len(queries) == 1:
            time.sleep(0.6)  # the first query is lost too
        running = {"execution_info": {"execution_name": "exec-1", "execution_state": "RUNNING"}}
        return Response(json.dumps(running), content_type="application/json")

    threaded_obs.expect_request(PATH, method="PUT").respond_with_handler(slow_restore)
    threaded_obs.expect_request(PATH, method="GET").respond_with_handler(query)
    client = http_function()
    assert deliver(client, event())[0] == 503
    code, document = deliver(client, event())  # the platform's redelivery
    (result,) = document["results"]
    assert (code, result["outcome"]) == (200, "restored")
    assert (
        "restore got no answer, but it took effect: the execution is RUNNING now"
        in result["reason"]
    )
    give_up = time.monotonic() + 3  # slow answers are logged when they finish (bounded)
    while puts(threaded_obs) == 0 and time.monotonic() < give_up:
        time.sleep(0.05)
    assert puts(threaded_obs) == 1
    assert budget_used(function_env) == 1


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected"),
    [
        (200, "<html>ok</html>", "text/html", "restored"),
        (200, '{"execution_urn": "trunc', "application/json", "restored"),
        (500, "<html>Internal error</html>", "text/html", "retryable_error"),
        (502, "\x00\x01garbage", "application/octet-stream", "retryable_error"),
        (302, "", "text/plain", "failed"),
    ],
)
def test_odd_answers_end_in_a_clear_outcome(
    httpserver, http_function, function_env, status, body, content_type, expected
):
    function_env["OBS_MAX_ATTEMPTS"] = "1"
    headers = {"Location": "http://127.0.0.1:1/elsewhere"} if status == 302 else {}
    httpserver.expect_request(PATH).respond_with_data(
        body, status=status, content_type=content_type, headers=headers
    )
    code, document = deliver(http_function(), event())
    (result,) = document["results"]
    assert result["outcome"] == expected
    assert code == (503 if expected == "retryable_error" else 200)
    if expected != "restored":
        assert result["errorMessage"]
    assert puts(httpserver) == 1


# --- loops stop -------------------------------------------------------------------------------


def test_the_restore_budget_stops_a_restore_loop(httpserver, http_function, function_env, capsys):
    function_env["RESTORE_MAX_RESTORES"] = "2"
    failed_again_when_asked(httpserver)
    client = http_function()
    outcomes = [outcome(deliver(client, event(f"evt-{n}"))[1]) for n in range(4)]
    assert outcomes == ["restored", "restored", "budget_exhausted", "budget_exhausted"]
    assert puts(httpserver) == 2
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    exhausted = [line for line in lines if line.get("outcome") == "budget_exhausted"]
    assert len(exhausted) == 2 and all(line["level"] == "ERROR" for line in exhausted)


def test_refused_restores_do_not_use_the_budget(httpserver, http_function, function_env):
    function_env["RESTORE_MAX_RESTORES"] = "1"
    httpserver.expect_ordered_request(PATH).respond_with_json({"code": "X"}, status=404)
    httpserver.expect_ordered_request(PATH).respond_with_json(RESTORED)
    client = http_function()
    assert outcome(deliver(client, event("evt-a"))[1]) == "failed"
    assert outcome(deliver(client, event("evt-b"))[1]) == "restored"


def test_the_budget_holds_under_concurrency(httpserver, http_function, function_env):
    """Twelve events for one execution at once, a budget of 3: three restore. An event that
    finds the budget filled by restores still in flight is retried (503), and its redelivery,
    once those are settled, ends ``budget_exhausted``."""
    function_env["RESTORE_MAX_RESTORES"] = "3"
    failed_again_when_asked(httpserver)
    client = http_function()
    final: list[str] = []
    lock = threading.Lock()

    def one(n: int) -> None:
        for _ in range(20):  # the platform redelivers a 503, a bounded number of times
            code, document = deliver(client, event(f"evt-{n}"))
            if code != 503:
                break
            assert outcome(document) == "retryable_error"
            assert document["results"][0]["errorCode"] == "BudgetInFlight"
        with lock:
            final.append(outcome(document))

    threads = [threading.Thread(target=one, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(final) == ["budget_exhausted"] * 9 + ["restored"] * 3
    assert puts(httpserver) == 3


# --- the store down: fail closed --------------------------------------------------------------


def test_a_locked_sqlite_store_fails_closed(httpserver, http_function, function_env, tmp_path):
    path = tmp_path / "locked.db"
    function_env["RESTORE_STATE_URL"] = f"sqlite:///{path}?busy_timeout=0.2"
    client = http_function()
    client.get("/")
    open_store(function_env["RESTORE_STATE_URL"]).close()  # create the schema
    holder = sqlite3.connect(path, timeout=0.1)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        code, document = deliver(client, event())
    finally:
        holder.rollback()
        holder.close()
    (result,) = document["results"]
    assert (code, result["outcome"], result["errorCode"]) == (
        503,
        "retryable_error",
        "StoreUnavailable",
    )
    assert httpserver.log == []


def test_a_read_only_sqlite_store_fails_closed(httpserver, http_function, function_env, tmp_path):
    path = tmp_path / "ro.db"
    open_store(f"sqlite:///{path}").close()
    function_env["RESTORE_STATE_URL"] = f"sqlite:///{path}?mode=ro"
    code, document = deliver(http_function(), event())
    assert (code, outcome(document)) == (503, "retryable_error")
    assert httpserver.log == []


def test_redis_down_at_start_fails_closed(httpserver, http_function, function_env):
    function_env["RESTORE_STATE_URL"] = f"redis://127.0.0.1:{free_port()}/0?socket_timeout=0.5"
    code, document = deliver(http_function(), event())
    assert (code, outcome(document)) == (503, "retryable_error")
    assert httpserver.log == []


def test_redis_down_mid_run_fails_closed_and_recovers(
    httpserver, http_function, function_env, redis_server_factory
):
    server = redis_server_factory()
    function_env["RESTORE_STATE_URL"] = server.url + "?socket_timeout=0.5"
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    client = http_function()
    assert outcome(deliver(client, event("evt-1"))[1]) == "restored"
    server.kill()
    code, document = deliver(client, event("evt-2"))
    assert (code, outcome(document)) == (503, "retryable_error")
    assert puts(httpserver) == 1
    server.start()  # same port (and, without persistence, empty): the store reconnects itself
    assert outcome(deliver(client, event("evt-2"))[1]) == "restored"
    assert outcome(deliver(client, event("evt-2"))[1]) == "duplicate"
    assert puts(httpserver) == 2


def test_a_restore_never_outlives_its_in_progress_marker(httpserver, http_function, function_env):
    """Retries stop before RESTORE_CLAIM_TTL, so no redelivery can claim the item mid-call."""
    function_env.update(RESTORE_CLAIM_TTL="2s", OBS_MAX_ATTEMPTS="10")
    httpserver.expect_request(PATH).respond_with_data("", status=503, headers={"Retry-After": "1"})
    started = time.monotonic()
    code, document = deliver(http_function(), event())
    assert code == 503 and time.monotonic() - started < 2.0
    assert document["results"][0]["attempts"] < 10


def test_an_event_in_flight_elsewhere_is_redelivered_not_lost(
    httpserver, http_function, function_env
):
    """Another invocation holds the marker (and may die): answer 503 until it expires."""
    httpserver.expect_request(PATH).respond_with_json(RESTORED)
    client = http_function()
    with open_store(function_env["RESTORE_STATE_URL"]) as store:
        assert store.claim("ce:HC.OBS:evt-1", 0.5).acquired  # the other, doomed invocation
    code, document = deliver(client, event())
    assert (code, outcome(document)) == (503, "duplicate")
    assert puts(httpserver) == 0
    time.sleep(0.6)  # the marker expires: the dead invocation's event is taken over
    code, document = deliver(client, event())
    assert (code, outcome(document)) == (200, "restored")
