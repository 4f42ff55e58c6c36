"""The local OBS workflow emulator, over real HTTP on loopback, with our client and the SDK."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import requests

from handler.client import RetrySchedule, WorkflowClient
from handler.client.obs_signing import Credentials, Signer, http_date
from handler.devtools.emulator import Call, Emulator, main
from handler.names import InvalidNameError

AK = "AK-emulator-test"
SK = "SK-emulator-test-secret-0123456789"
TOKEN = "TOKEN-emulator-temporary-0123456789"
GRAPH = "graph-1"
EXECUTION = "exec-1"
REGION, PROJECT, DOMAIN = "cn-north-4", "project0123", "domain0123"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def emu():
    emulator = Emulator({AK: SK}, region=REGION, project_id=PROJECT, domain_id=DOMAIN)
    emulator.seed(GRAPH, EXECUTION, "FAILED")
    with emulator:
        yield emulator


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_client(emu, sleeps):
    """Our client against the emulator; backoff sleeps are recorded, not slept."""
    clients = []

    def factory(**overrides) -> WorkflowClient:
        options = {
            "access_key_id": AK,
            "secret_access_key": SK,
            "server": emu.url,
            "timeout": (1.0, 2.0),
            "retry": RetrySchedule(max_attempts=3),
            "sleep": sleeps.append,
        }
        options.update(overrides)
        client = WorkflowClient(**options)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


@pytest.fixture
def make_sdk(emu):
    """The official SDK's client: a process-wide singleton, so re-initialised per use."""
    from obs import WorkflowClient as SdkClient

    clients = []

    def factory(**overrides):
        options = {"access_key_id": AK, "secret_access_key": SK, "server": emu.url}
        options.update(overrides)
        client = SdkClient(**options)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


def resource(execution=EXECUTION, graph=GRAPH) -> str:
    query = "" if graph is None else f"?x-workflow-graph-name={graph}"
    return f"/v2/workflowexecutions/{execution}{query}"


def signed_headers(method, path, *, date=None, ak=AK, sk=SK, token=None) -> dict[str, str]:
    date = http_date() if date is None else date
    headers = {"Date": date, "Content-Type": "application/json"}
    headers.update(Signer(Credentials(ak, sk, token)).sign(method, path, date, "application/json"))
    return headers


def raw(emu, method, path, headers=None, session=None) -> requests.Response:
    sender = session or requests
    return sender.request(method, emu.url + path, headers=headers or {}, timeout=5)


def assert_error(response, status, code):
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == code and body["message"]
    assert body["request_id"] == response.headers["X-Request-ID"]


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


# --- the API ------------------------------------------------------------------------------


def test_restore_failed_then_second_restore_conflicts(emu, make_client):
    client = make_client()
    first = client.restoreFailedWorkflowExecution(EXECUTION, GRAPH)

    assert (first.status, first.attempts) == (200, 1)
    assert first.requestId
    assert first.body.executionName == EXECUTION
    assert first.body.executionUrn == (
        f"urn:fgs:{REGION}:{PROJECT}:execution:{GRAPH}:{EXECUTION}:{DOMAIN}"
    )
    assert first.body.restoredAt.endswith("Z")
    assert emu.state(GRAPH, EXECUTION) == "RUNNING"

    second = client.restoreFailedWorkflowExecution(EXECUTION, GRAPH)
    assert (second.status, second.errorCode) == (409, "WF.ExecutionNotFailed")
    assert second.errorMessage == (
        "execution state is RUNNING; only FAILED executions can be restored"
    )
    assert second.requestId and second.requestId != first.requestId
    assert emu.restores(GRAPH, EXECUTION) == 1
    assert emu.calls == [
        Call("PUT", GRAPH, EXECUTION, 200),
        Call("PUT", GRAPH, EXECUTION, 409),
    ]


@pytest.mark.parametrize("state", ["SUCCESS", "RUNNING"])
def test_only_failed_executions_are_restored(emu, make_client, state):
    emu.seed(GRAPH, "other", state)
    result = make_client().restoreFailedWorkflowExecution("other", GRAPH)
    assert (result.status, result.errorCode) == (409, "WF.ExecutionNotFailed")
    assert state in result.errorMessage
    assert emu.state(GRAPH, "other") == state


def test_unknown_execution_is_404(emu, make_client):
    client = make_client()
    for call in (client.restoreFailedWorkflowExecution, client.getWorkflowExecution):
        result = call("nope", GRAPH)
        assert (result.status, result.errorCode) == (404, "WF.ExecutionNotFound")
    assert emu.state(GRAPH, "nope") is None and emu.restores(GRAPH, "nope") == 0


def test_get_returns_execution_info_with_the_state(emu, make_client):
    client = make_client()
    before = client.getWorkflowExecution(EXECUTION, GRAPH)
    assert before.status == 200
    assert before.body.executionInfo["execution_state"] == "FAILED"
    client.restoreFailedWorkflowExecution(EXECUTION, GRAPH)

    info = client.getWorkflowExecution(EXECUTION, GRAPH).body.executionInfo
    assert info == emu.execution_info(GRAPH, EXECUTION)
    assert info["execution_name"] == EXECUTION
    assert info["execution_state"] == "RUNNING"
    assert info["graph_urn"] == f"urn:fgs:{REGION}:{PROJECT}:graph:{GRAPH}"
    assert info["execution_urn"].endswith(f":execution:{GRAPH}:{EXECUTION}:{DOMAIN}")
    assert info["restore_count"] == 1
    assert info["started_at"] <= info["restored_at"]


def test_official_sdk_restores_queries_and_conflicts(emu, make_sdk):
    sdk = make_sdk()
    restored = sdk.restoreFailedWorkflowExecution(EXECUTION, GRAPH)
    assert restored.status == 200
    assert restored.body["executionName"] == EXECUTION
    assert sdk.restoreFailedWorkflowExecution(EXECUTION, GRAPH).status == 409
    queried = sdk.getWorkflowExecution(EXECUTION, GRAPH)
    assert queried.status == 200
    assert queried.body["executionInfo"]["execution_state"] == "RUNNING"
    assert sdk.getWorkflowExecution("nope", GRAPH).status == 404
    assert [call.status for call in emu.calls] == [200, 409, 200, 404]


def test_every_answer_is_json_with_a_request_id(emu):
    put = signed_headers("PUT", resource())
    answers = [
        raw(emu, "PUT", resource(), put),  # 200
        raw(emu, "PUT", resource(), put),  # 409
        raw(emu, "PUT", resource("nope"), signed_headers("PUT", resource("nope"))),  # 404
        raw(emu, "GET", resource()),  # 403
        raw(emu, "DELETE", resource()),  # 405
        raw(emu, "GET", "/v2/other"),  # 404
    ]
    assert [a.status_code for a in answers] == [200, 409, 404, 403, 405, 404]
    for answer in answers:
        assert answer.headers["Content-Type"] == "application/json"
        assert len(answer.headers["X-Request-ID"]) == 32
        assert isinstance(answer.json(), dict)
    assert answers[4].headers["Allow"] == "GET, PUT"
    assert len({a.headers["X-Request-ID"] for a in answers}) == len(answers)


def test_oversized_body_is_refused_and_the_connection_closed(emu):
    headers = signed_headers("PUT", resource())
    with requests.Session() as session:
        answer = session.put(emu.url + resource(), data=b"x" * 100_000, headers=headers, timeout=5)
        assert_error(answer, 413, "EntityTooLarge")
        assert answer.headers["Connection"] == "close"
        assert raw(emu, "PUT", resource(), headers, session).status_code == 200
    assert emu.connections_opened == 2


def test_small_body_is_read_and_the_connection_kept(emu):
    headers = {**signed_headers("GET", resource()), "Expect": "100-continue"}
    with requests.Session() as session:
        for _ in range(2):
            answer = session.get(emu.url + resource(), data=b"{}", headers=headers, timeout=5)
            assert answer.status_code == 200
    assert emu.connections_opened == 1


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("execution", "graph"),
    [("a.b", GRAPH), (EXECUTION, "a.b"), ("-lead", GRAPH), ("x" * 65, GRAPH), ("a%2Fb", GRAPH)],
)
def test_bad_names_are_400(emu, execution, graph):
    path = resource(execution, graph)
    answer = raw(emu, "PUT", path, signed_headers("PUT", path))
    assert_error(answer, 400, "WF.InvalidParameter")
    assert emu.restores(GRAPH, EXECUTION) == 0


def test_missing_graph_query_is_400(emu):
    path = resource(graph=None)
    answer = raw(emu, "PUT", path, signed_headers("PUT", path))
    assert_error(answer, 400, "WF.InvalidParameter")
    assert "x-workflow-graph-name" in answer.json()["message"]


def test_sdk_traversal_name_is_refused(emu, make_sdk):
    # The SDK puts names on the path unchecked; the emulator must not treat it as a resource.
    assert make_sdk().restoreFailedWorkflowExecution("ex ample", GRAPH).status == 400
    assert emu.calls[-1].status == 400


# --- authentication -----------------------------------------------------------------------


def test_wrong_secret_key_is_signature_mismatch(emu, make_client, make_sdk):
    result = make_client(secret_access_key="not-the-secret").restoreFailedWorkflowExecution(
        EXECUTION, GRAPH
    )
    assert (result.status, result.errorCode, result.attempts) == (403, "SignatureDoesNotMatch", 1)
    assert (
        make_sdk(secret_access_key="not-the-secret").getWorkflowExecution(EXECUTION, GRAPH).status
        == 403
    )
    assert emu.state(GRAPH, EXECUTION) == "FAILED"


def test_unknown_access_key(emu, make_client):
    result = make_client(access_key_id="AK-unknown").restoreFailedWorkflowExecution(
        EXECUTION, GRAPH
    )
    assert (result.status, result.errorCode) == (403, "InvalidAccessKeyId")


def test_missing_or_misapplied_signature(emu):
    assert_error(raw(emu, "PUT", resource(), {"Date": http_date()}), 403, "SignatureDoesNotMatch")
    # A signature made for another graph does not authorise this one.
    headers = signed_headers("PUT", resource(graph="graph-2"))
    assert_error(raw(emu, "PUT", resource(), headers), 403, "SignatureDoesNotMatch")
    # Nor for another method.
    assert_error(
        raw(emu, "PUT", resource(), signed_headers("GET", resource())), 403, "SignatureDoesNotMatch"
    )
    assert emu.state(GRAPH, EXECUTION) == "FAILED"


@pytest.mark.parametrize("offset", [-20 * 60, 20 * 60])
def test_skewed_date_is_refused(emu, offset):
    headers = signed_headers("PUT", resource(), date=http_date(time.time() + offset))
    assert_error(raw(emu, "PUT", resource(), headers), 403, "RequestTimeTooSkewed")
    assert emu.state(GRAPH, EXECUTION) == "FAILED"


def test_date_within_fifteen_minutes_is_accepted(emu):
    headers = signed_headers("PUT", resource(), date=http_date(time.time() - 10 * 60))
    assert raw(emu, "PUT", resource(), headers).status_code == 200


@pytest.mark.parametrize("date", ["", "yesterday", "Fri, 99 Foo 2026 99:99:99 GMT"])
def test_missing_or_unparsable_date_is_refused(emu, date):
    headers = signed_headers("PUT", resource(), date=date)
    if not date:
        del headers["Date"]
    assert_error(raw(emu, "PUT", resource(), headers), 403, "RequestTimeTooSkewed")


@pytest.mark.parametrize(
    ("token", "authorization"),
    [
        (None, "OBS AKEXAMPLE:/SyzOJXMM4yDsqu2Y28ZlFnksVc="),
        ("TOKEN", "OBS AKEXAMPLE:Cw03aNjRweQq1hM4T/GCAAF2gYg="),
    ],
)
def test_accepts_the_reference_vectors_of_the_official_sdk(token, authorization):
    """Signatures the SDK itself produced, checked without our signer on the sending side."""
    date = "Fri, 27 Nov 2026 18:41:28 GMT"
    pinned = parsedate_to_datetime(date).timestamp()
    emulator = Emulator({"AKEXAMPLE": "SKEXAMPLE"}, security_token=token, clock=lambda: pinned)
    emulator.seed(GRAPH, EXECUTION)
    headers = {"Date": date, "Content-Type": "application/json", "Authorization": authorization}
    if token:
        headers["x-obs-security-token"] = token
    with emulator:
        assert raw(emulator, "PUT", resource(), headers).status_code == 200
        headers["Authorization"] = authorization[:-2] + "A="
        assert_error(raw(emulator, "GET", resource(), headers), 403, "SignatureDoesNotMatch")


def test_security_token_is_required_and_checked(make_sdk):
    emulator = Emulator({AK: SK}, security_token=TOKEN)
    emulator.seed(GRAPH, EXECUTION)
    emulator.seed(GRAPH, "exec-2")
    with emulator:
        with WorkflowClient(AK, SK, server=emulator.url) as without:
            result = without.restoreFailedWorkflowExecution(EXECUTION, GRAPH)
        assert (result.status, result.errorCode) == (403, "InvalidSecurityToken")
        with WorkflowClient(AK, SK, "TOKEN-other", server=emulator.url) as other:
            result = other.restoreFailedWorkflowExecution(EXECUTION, GRAPH)
        assert (result.status, result.errorCode) == (403, "InvalidSecurityToken")
        assert emulator.state(GRAPH, EXECUTION) == "FAILED"

        with WorkflowClient(AK, SK, TOKEN, server=emulator.url) as right:
            assert right.restoreFailedWorkflowExecution(EXECUTION, GRAPH).status == 200
        from obs import WorkflowClient as SdkClient

        sdk = SdkClient(
            access_key_id=AK, secret_access_key=SK, security_token=TOKEN, server=emulator.url
        )
        try:
            assert sdk.restoreFailedWorkflowExecution("exec-2", GRAPH).status == 200
        finally:
            sdk.close()
    assert emulator.restores(GRAPH, EXECUTION) == emulator.restores(GRAPH, "exec-2") == 1


# --- faults -------------------------------------------------------------------------------


def test_fail_next_then_success_seen_through_retries(emu, make_client, sleeps):
    emu.fail_next(2, 503)
    result = make_client().restoreFailedWorkflowExecution(EXECUTION, GRAPH)
    assert (result.status, result.attempts) == (200, 3)
    assert [call.status for call in emu.calls] == [503, 503, 200]
    assert emu.restores(GRAPH, EXECUTION) == 1
    assert len(sleeps) == 2


def test_fail_next_retry_after_and_body(emu, make_client, sleeps):
    emu.fail_next(1, 429, retry_after=2, body={"code": "Throttled", "message": "slow down"})
    emu.fail_next(1, 500)
    result = make_client(retry=RetrySchedule(max_attempts=2)).restoreFailedWorkflowExecution(
        EXECUTION, GRAPH
    )
    assert (result.status, result.errorCode, result.attempts) == (500, "InternalError", 2)
    assert result.errorMessage.startswith("injected fault")
    assert sleeps[0] >= 2
    assert emu.state(GRAPH, EXECUTION) == "FAILED"  # faults come before any state change


def test_fail_next_is_thread_safe(emu):
    emu.fail_next(10, 503)
    headers = signed_headers("GET", resource())
    statuses: list[int] = []

    def worker():
        statuses.append(raw(emu, "GET", resource(), headers).status_code)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(statuses) == [200] * 6 + [503] * 10


def test_concurrent_restores_accept_exactly_one(emu):
    headers = signed_headers("PUT", resource())
    statuses: list[int] = []
    barrier = threading.Barrier(12)

    def worker():
        barrier.wait(5)
        statuses.append(raw(emu, "PUT", resource(), headers).status_code)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(statuses) == [200] + [409] * 11
    assert emu.restores(GRAPH, EXECUTION) == 1


@pytest.mark.parametrize("partial", [b"", b"HTTP/1.1 200 OK\r\nContent-Type: appl"])
def test_reset_is_a_transport_failure_that_may_have_applied(emu, make_client, partial):
    emu.reset_next(1, partial)
    client = make_client(retry=RetrySchedule(max_attempts=1))
    result = client.restoreFailedWorkflowExecution(EXECUTION, GRAPH)
    assert (result.status, result.errorCode, result.maybe_applied) == (0, "ConnectionError", True)
    assert emu.state(GRAPH, EXECUTION) == "FAILED"
    assert emu.calls == [Call("PUT", GRAPH, EXECUTION, 0)]
    assert client.restoreFailedWorkflowExecution(EXECUTION, GRAPH).status == 200


def test_reset_after_applying_loses_only_the_answer(emu, make_client):
    emu.reset_next(1, applied=True)
    client = make_client(retry=RetrySchedule(max_attempts=1))
    result = client.restoreFailedWorkflowExecution(EXECUTION, GRAPH)
    assert (result.status, result.maybe_applied) == (0, True)
    assert emu.state(GRAPH, EXECUTION) == "RUNNING"
    assert emu.restores(GRAPH, EXECUTION) == 1
    assert client.restoreFailedWorkflowExecution(EXECUTION, GRAPH).status == 409


def test_reset_seen_by_plain_requests_as_connection_error(emu):
    emu.reset_next(1)
    with pytest.raises(requests.ConnectionError):
        raw(emu, "GET", resource(), signed_headers("GET", resource()))


def test_latency_delays_answers_after_applying(emu, make_client):
    emu.latency(0.3)
    started = time.monotonic()
    assert make_client().getWorkflowExecution(EXECUTION, GRAPH).status == 200
    assert time.monotonic() - started >= 0.3

    impatient = make_client(timeout=(1.0, 0.1), retry=RetrySchedule(max_attempts=1))
    result = impatient.restoreFailedWorkflowExecution(EXECUTION, GRAPH)
    assert (result.status, result.errorCode, result.maybe_applied) == (0, "ReadTimeout", True)
    assert emu.state(GRAPH, EXECUTION) == "RUNNING"

    emu.latency(0)
    started = time.monotonic()
    assert make_client().getWorkflowExecution(EXECUTION, GRAPH).status == 200
    assert time.monotonic() - started < 0.25


def test_a_hold_keeps_one_matching_request_waiting_until_released(emu, make_client):
    hold = emu.hold_next(operation="restore")
    answers = []
    waiting = threading.Thread(
        target=lambda: answers.append(
            make_client().restoreFailedWorkflowExecution(EXECUTION, GRAPH).status
        )
    )
    waiting.start()
    try:
        assert hold.reached.wait(5)
        # Other requests pass (the server is threaded); the held one has not been carried out.
        assert make_client().getWorkflowExecution(EXECUTION, GRAPH).status == 200
        assert emu.state(GRAPH, EXECUTION) == "FAILED" and answers == []
    finally:
        hold.release()
        waiting.join(5)
    assert answers == [200] and emu.state(GRAPH, EXECUTION) == "RUNNING"
    # Taken once: the next restore is not held.
    assert make_client().restoreFailedWorkflowExecution(EXECUTION, GRAPH).status == 409


def test_garbage_bodies(emu, make_client):
    client = make_client(retry=RetrySchedule(max_attempts=1))
    emu.garbage_next(1)  # a proxy's HTML error page
    result = client.restoreFailedWorkflowExecution(EXECUTION, GRAPH)
    assert (result.status, result.errorCode) == (502, "HTTP502")
    assert "text/html" in result.errorMessage

    emu.garbage_next(1, body="<html>ok</html>", status=200)
    result = client.restoreFailedWorkflowExecution(EXECUTION, GRAPH)
    assert result.ok and result.body is None
    assert "not a JSON object" in result.errorMessage
    assert emu.state(GRAPH, EXECUTION) == "FAILED"


def test_truncated_body(emu, make_client):
    emu.garbage_next(
        1,
        body=b'{"execution_urn": "urn',
        status=200,
        content_type="application/json",
        declared_length=500,
    )
    client = make_client(retry=RetrySchedule(max_attempts=1))
    result = client.restoreFailedWorkflowExecution(EXECUTION, GRAPH)
    assert result.status == 200 and result.body is None
    assert "cut off" in result.errorMessage
    # The emulator closed that connection; the client reconnects for the next call.
    assert client.restoreFailedWorkflowExecution(EXECUTION, GRAPH).status == 200
    assert emu.connections_opened == 2


def test_redirect_is_answered_and_not_followed(emu, make_client):
    emu.redirect_next(1, "http://127.0.0.1:9/elsewhere")
    result = make_client().restoreFailedWorkflowExecution(EXECUTION, GRAPH)
    assert (result.status, result.errorCode) == (302, "Redirect")
    assert "elsewhere" in result.errorMessage
    assert emu.calls == [Call("PUT", GRAPH, EXECUTION, 302)]
    assert emu.state(GRAPH, EXECUTION) == "FAILED"


def test_faults_are_served_in_order_and_can_be_cleared(emu, make_client):
    emu.fail_next(1, 500)
    emu.redirect_next(1)
    emu.fail_next(3, 503)
    client = make_client(retry=RetrySchedule(max_attempts=1))
    assert client.getWorkflowExecution(EXECUTION, GRAPH).status == 500
    assert client.getWorkflowExecution(EXECUTION, GRAPH).status == 302
    emu.clear_faults()
    assert client.getWorkflowExecution(EXECUTION, GRAPH).status == 200


# --- background transitions ---------------------------------------------------------------


def test_background_transition_back_to_failed_lets_a_loop_be_watched(emu, make_client):
    emu.after_restore = ("FAILED", 0.15)
    client = make_client()
    for round_ in (1, 2):
        assert client.restoreFailedWorkflowExecution(EXECUTION, GRAPH).status == 200
        assert emu.state(GRAPH, EXECUTION) == "RUNNING"
        assert wait_for(lambda: emu.state(GRAPH, EXECUTION) == "FAILED")
        assert emu.restores(GRAPH, EXECUTION) == round_


def test_background_transition_to_success_and_reseed_wins(emu, make_client):
    emu.after_restore = ("SUCCESS", 0.1)
    emu.seed(GRAPH, "exec-2")
    client = make_client()
    assert client.restoreFailedWorkflowExecution(EXECUTION, GRAPH).status == 200
    assert client.restoreFailedWorkflowExecution("exec-2", GRAPH).status == 200
    emu.seed(GRAPH, "exec-2", "FAILED")  # overtakes the pending transition
    assert wait_for(lambda: emu.state(GRAPH, EXECUTION) == "SUCCESS")
    time.sleep(0.15)
    assert emu.state(GRAPH, "exec-2") == "FAILED"


def test_after_restore_is_validated():
    with pytest.raises(ValueError):
        Emulator({AK: SK}, after_restore=("RUNNING", 1))
    with pytest.raises(ValueError):
        Emulator({AK: SK}, after_restore=("FAILED", -1))
    with pytest.raises(ValueError):
        Emulator({AK: SK}, after_restore=("DONE", 1))


# --- connections --------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(emu):
    with requests.Session() as session:
        for _ in range(3):
            answer = raw(emu, "GET", resource(), signed_headers("GET", resource()), session)
            assert answer.status_code == 200
            assert "close" not in answer.headers.get("Connection", "")
    assert emu.connections_opened == 1
    assert len(emu.calls) == 3


def test_our_client_keeps_its_connection_alive(emu, make_client):
    client = make_client()
    client.restoreFailedWorkflowExecution(EXECUTION, GRAPH)
    for _ in range(5):
        client.getWorkflowExecution(EXECUTION, GRAPH)
    assert emu.connections_opened == 1


def test_connection_close_is_honoured(emu, make_sdk):
    headers = {**signed_headers("GET", resource()), "Connection": "close"}
    with requests.Session() as session:
        first = raw(emu, "GET", resource(), headers, session)
        second = raw(emu, "GET", resource(), headers, session)
    assert first.headers["Connection"] == "close" and second.status_code == 200
    assert emu.connections_opened == 2


def test_stop_drops_idle_keep_alive_connections_and_refuses_new_ones(make_client):
    emulator = Emulator({AK: SK}).start()
    url = emulator.url
    with requests.Session() as session:
        assert raw(emulator, "GET", resource(), {}, session).status_code == 403
        started = time.monotonic()
        emulator.stop()
        assert time.monotonic() - started < 2
        emulator.stop()  # idempotent
        with WorkflowClient(AK, SK, server=url, retry=RetrySchedule(max_attempts=1)) as client:
            result = client.getWorkflowExecution(EXECUTION, GRAPH)
    assert (result.status, result.maybe_applied) == (0, False)
    with pytest.raises(RuntimeError):
        _ = emulator.url


def test_start_twice_is_an_error():
    with Emulator({AK: SK}) as emulator, pytest.raises(RuntimeError):
        emulator.start()


# --- seeds --------------------------------------------------------------------------------


def test_seed_file(tmp_path):
    seed = {
        "credentials": {AK: SK},
        "security_token": None,
        "region": "ap-southeast-1",
        "project_id": "p1",
        "domain_id": "d1",
        "after_restore": {"state": "SUCCESS", "delay": 5},
        "executions": [
            {"graph": "g", "execution": "e1", "state": "FAILED"},
            {"graph": "g", "execution": "e2", "state": "SUCCESS"},
            {"graph": "g", "execution": "e3"},
        ],
    }
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(seed))
    emulator = Emulator.from_seed_file(path, credentials={"AK2": "SK2"})
    assert [emulator.state("g", e) for e in ("e1", "e2", "e3")] == ["FAILED", "SUCCESS", "FAILED"]
    assert emulator.after_restore == ("SUCCESS", 5.0)
    assert emulator.execution_info("g", "e1")["graph_urn"] == "urn:fgs:ap-southeast-1:p1:graph:g"
    with emulator, WorkflowClient("AK2", "SK2", server=emulator.url) as client:
        assert client.restoreFailedWorkflowExecution("e1", "g").status == 200
    assert emulator.state("g", "e1") == "RUNNING"  # stop() cancelled the pending transition


@pytest.mark.parametrize(
    ("seed", "error"),
    [
        ({"credentials": {AK: SK}, "executons": []}, ValueError),
        ({"credentials": {}}, ValueError),
        (
            {
                "credentials": {AK: SK},
                "executions": [{"graph": "g", "execution": "e", "state": "X"}],
            },
            ValueError,
        ),
        (
            {"credentials": {AK: SK}, "executions": [{"graph": "g", "execution": "a/b"}]},
            InvalidNameError,
        ),
        ({"credentials": {AK: SK}, "executions": ["g/e"]}, ValueError),
        ([], ValueError),
    ],
)
def test_bad_seeds_are_refused(seed, error):
    with pytest.raises(error):
        Emulator.from_seed(seed)


# --- command line -------------------------------------------------------------------------


def read_line(stream, timeout=10.0) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        assert selector.select(timeout), "no output in time"
    return stream.readline()


def test_cli_serves_until_sigterm(tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps(
            {
                "credentials": {"AK-seed": "SK-seed"},
                "executions": [
                    {"graph": GRAPH, "execution": EXECUTION, "state": "FAILED"},
                ],
            }
        )
    )
    command = [
        sys.executable,
        "-m",
        "handler.devtools.emulator",
        "--port",
        "0",
        "--seed",
        str(seed),
        "--execution",
        f"{GRAPH}/exec-2=FAILED",
        "--execution",
        f"{GRAPH}/exec-3=SUCCESS",
        "--access-key",
        AK,
        "--secret-key",
        SK,
        "--verbose",
    ]
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        url = read_line(process.stdout).strip()
        assert url.startswith("http://127.0.0.1:")
        with WorkflowClient(AK, SK, server=url) as client:
            assert client.restoreFailedWorkflowExecution("exec-2", GRAPH).status == 200
            assert client.restoreFailedWorkflowExecution("exec-3", GRAPH).status == 409
        with WorkflowClient("AK-seed", "SK-seed", server=url) as client:
            assert client.restoreFailedWorkflowExecution(EXECUTION, GRAPH).status == 200
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert out == "" and SK not in err and "SK-seed" not in err
    assert f"PUT {GRAPH}/exec-3 -> 409" in err


def test_cli_usage_errors_return_nonzero(capsys, tmp_path):
    assert main(["--port", "0", "--access-key", AK]) == 2
    assert main(["--port", "0"]) == 2  # no credentials at all
    assert main(["--port", "0", "--access-key", AK, "--secret-key", SK, "--execution", "nope"]) == 2
    assert main(["--port", "0", "--seed", str(tmp_path / "missing.json")]) == 2
    assert main(["--port", "x"]) == 2
    assert main(["--help"]) == 0
    captured = capsys.readouterr()
    assert "--execution" in captured.out and SK not in captured.out + captured.err


def test_cli_main_can_be_stopped_by_a_signal_in_process(capsys):
    """``main`` as a CLI wrapper calls it: SIGINT to our own process ends it cleanly."""
    timer = threading.Timer(0.5, lambda: signal.raise_signal(signal.SIGINT))
    timer.start()
    try:
        code = main(["--port", "0", "--access-key", AK, "--secret-key", SK, "--latency", "0"])
    finally:
        timer.cancel()
    assert code == 0
    assert capsys.readouterr().out.startswith("http://127.0.0.1:")


def test_cli_reads_the_secret_key_from_the_environment_not_the_command_line():
    command = [sys.executable, "-m", "handler.devtools.emulator", "--port", "0", "--access-key", AK]
    command += ["--execution", f"{GRAPH}/{EXECUTION}=FAILED"]
    environment = {**os.environ, "EMULATOR_SECRET_ACCESS_KEY": SK}
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=environment,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        url = read_line(process.stdout).strip()
        with open(f"/proc/{process.pid}/cmdline", "rb") as cmdline:  # what `ps` shows
            assert SK.encode() not in cmdline.read()
        with WorkflowClient(AK, SK, server=url) as client:
            assert client.restoreFailedWorkflowExecution(EXECUTION, GRAPH).status == 200
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0 and SK not in err


def test_cli_secret_key_flag_still_wins_and_the_key_is_required(capsys):
    assert main(["--port", "0", "--access-key", AK], environ={}) == 2
    assert "EMULATOR_SECRET_ACCESS_KEY" in capsys.readouterr().err
    timer = threading.Timer(0.5, lambda: signal.raise_signal(signal.SIGINT))
    timer.start()
    try:
        code = main(["--port", "0", "--access-key", AK], environ={"EMULATOR_SECRET_ACCESS_KEY": SK})
    finally:
        timer.cancel()
    assert code == 0 and capsys.readouterr().out.startswith("http://127.0.0.1:")


def test_cli_queues_the_faults_in_order():
    command = [sys.executable, "-m", "handler.devtools.emulator", "--port", "0", "--access-key", AK]
    command += ["--execution", f"{GRAPH}/{EXECUTION}=FAILED"]
    command += ["--fail-next", "2", "--fail-status", "429", "--retry-after", "3"]
    command += ["--reset-next", "1", "--garbage-next", "1", "--redirect-next", "1"]
    command += ["--redirect-location", "http://127.0.0.1:9/elsewhere"]
    environment = {**os.environ, "EMULATOR_SECRET_ACCESS_KEY": SK}
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=environment,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        url = read_line(process.stdout).strip()
        target = f"{url}/v2/workflowexecutions/{EXECUTION}?x-workflow-graph-name={GRAPH}"
        answers = []
        for _ in range(2):
            answer = requests.get(target, timeout=5)
            answers.append((answer.status_code, answer.headers.get("Retry-After")))
        with pytest.raises(requests.ConnectionError):
            requests.get(target, timeout=5)
        garbage = requests.get(target, timeout=5)
        answers.append((garbage.status_code, garbage.headers["Content-Type"]))
        redirect = requests.get(target, timeout=5, allow_redirects=False)
        answers.append((redirect.status_code, redirect.headers["Location"]))
        answers.append((requests.get(target, timeout=5).status_code, None))  # unsigned: 403
        assert answers == [
            (429, "3"),
            (429, "3"),
            (502, "text/html"),
            (302, "http://127.0.0.1:9/elsewhere"),
            (403, None),
        ]
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_cli_rejects_bad_fault_flags(capsys):
    base = ["--port", "0", "--access-key", AK, "--secret-key", SK]
    assert main([*base, "--fail-next", "1", "--fail-status", "42"]) == 2
    assert main([*base, "--reset-next", "-1"]) == 2
    assert main([*base, "--fail-next", "many"]) == 2
    assert SK not in capsys.readouterr().err
