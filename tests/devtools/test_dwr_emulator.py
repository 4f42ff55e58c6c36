"""The emulator serving the DWR v3 API: our DwrClient and the official DWR SDK against it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

from handler.client import DwrClient, RetrySchedule
from handler.client.dwr_signing import DwrSigner, sdk_date
from handler.credentials import Credentials
from handler.devtools.emulator import DwrEmulator

AK = "AK-dwr-emulator-test"
SK = "SK-dwr-emulator-test-secret-0123456789"
TOKEN = "TOKEN-dwr-temporary-0123456789"
PROJECT = "0123456789abcdef0123456789abcdef"
GRAPH, EXECUTION = "graph-1", "exec-1"
WHY = "transcode-videos: ffmpeg exited with status 1"
REPO = Path(__file__).resolve().parents[2]


class Clock:
    """A clock the test moves: executions seeded at different times, skew checks."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def emu():
    emulator = DwrEmulator({AK: SK}, project_id=PROJECT)
    emulator.seed(GRAPH, EXECUTION, "fail", error_message=WHY)
    with emulator:
        yield emulator


@pytest.fixture
def make_client(emu):
    clients = []

    def factory(**overrides) -> DwrClient:
        options = {
            "access_key_id": AK,
            "secret_access_key": SK,
            "project_id": PROJECT,
            "server": emu.url,
            "timeout": (1.0, 2.0),
            "retry": RetrySchedule(max_attempts=2),
            "sleep": lambda _seconds: None,
        }
        options.update(overrides)
        client = DwrClient(**options)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


def official_sdk(url: str, token: str | None = None, project: str = PROJECT):
    """The official DWR client, kept offline: an http:// endpoint and an explicit project id."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkdwr.v3 import DwrClient as SdkDwrClient

    credentials = BasicCredentials(AK, SK, project)
    if token:
        credentials = credentials.with_security_token(token)
    return SdkDwrClient.new_builder().with_credentials(credentials).with_endpoints([url]).build()


def signed_get(emu, path: str, query: dict[str, str], *, date: str | None = None, project=PROJECT):
    """A raw GET signed with our signer: for answers no client would let us ask for."""
    host = emu.url.split("://")[1]
    headers = {"Host": host, "X-Sdk-Date": date or sdk_date(), "X-Project-Id": project}
    headers.update(DwrSigner(Credentials(AK, SK)).sign("GET", path, query, headers))
    return requests.get(emu.url + path, params=query, headers=headers, timeout=5)


def assert_dwr_error(response, status, code):
    assert response.status_code == status
    body = response.json()
    assert body["error_code"] == code and body["error_msg"]
    assert body["request_id"] == response.headers["X-Request-Id"]


# --- our client ---------------------------------------------------------------------------


def test_our_client_restores_then_the_second_restore_is_refused(emu, make_client):
    client = make_client()
    first = client.restoreFailedWorkflowExecution(EXECUTION, GRAPH)
    assert (first.status, first.body.executionName) == (200, EXECUTION)
    assert first.body.executionUrn.endswith(f":{GRAPH}:{EXECUTION}:emulator-domain")
    assert emu.state(GRAPH, EXECUTION) == "running" and emu.restores(GRAPH, EXECUTION) == 1

    second = client.restoreFailedWorkflowExecution(EXECUTION, GRAPH)
    assert (second.status, second.errorCode) == (409, "DWR.ExecutionNotFailed")
    assert second.errorMessage and second.requestId
    missing = client.restoreFailedWorkflowExecution("nope", GRAPH)
    assert (missing.status, missing.errorCode) == (404, "DWR.ExecutionNotFound")


def test_restored_at_is_the_emulator_clock_of_the_last_accepted_restore(make_client):
    clock = Clock(time.time())  # pinned near now: the request dates are checked against it
    emulator = DwrEmulator({AK: SK}, project_id=PROJECT, clock=clock)
    emulator.seed(GRAPH, EXECUTION, "fail")
    with emulator:
        client = make_client(server=emulator.url)
        assert emulator.restored_at(GRAPH, EXECUTION) is None
        restored = clock.now = clock.now + 1.25
        assert client.restoreFailedWorkflowExecution(EXECUTION, GRAPH).status == 200
        clock.now += 3.0  # a refused restore (still running) leaves the moment alone
        assert client.restoreFailedWorkflowExecution(EXECUTION, GRAPH).status == 409
        assert emulator.restored_at(GRAPH, EXECUTION) == restored
        emulator.seed(GRAPH, EXECUTION, "fail")  # it fails again and is restored again
        again = clock.now = clock.now + 2.0
        assert client.restoreFailedWorkflowExecution(EXECUTION, GRAPH).status == 200
        assert emulator.restored_at(GRAPH, EXECUTION) == again
        assert emulator.restored_at(GRAPH, "never-seeded") is None


def test_our_client_queries_the_status_and_the_failed_nodes_message(emu, make_client):
    emu.seed(GRAPH, "ok-1", "success")
    client = make_client()
    failed = client.getWorkflowExecution(EXECUTION, GRAPH).body
    assert (failed.status, failed.executionState, failed.errorMessages) == (
        "fail",
        "FAILED",
        (WHY,),
    )
    node = failed.executionInfo["node_execution_details"][0]
    assert node["status"] == "fail" and isinstance(node["begin_time"], int)
    succeeded = client.getWorkflowExecution("ok-1", GRAPH).body
    assert (succeeded.status, succeeded.errorMessages) == ("success", ())
    assert succeeded.executionInfo["last_update_time"].endswith("Z")


def test_the_query_answer_names_the_graph_by_the_documented_workflow_urn(emu, make_client):
    """DWR documents workflow_urn as urn:fss:<region>:<project>:workflow:<package>:<name>:<version>
    (package ``default``, version ``latest``); the intake reads that answer as a request."""
    from handler.intake import from_event

    info = make_client().getWorkflowExecution(EXECUTION, GRAPH).body.executionInfo
    assert info["workflow_urn"] == f"urn:fss:cn-north-4:{PROJECT}:workflow:default:{GRAPH}:latest"
    request = {key: info[key] for key in ("workflow_urn", "execution_name", "status")}
    (item,) = from_event(request)
    assert (item.verdict, item.graph_name, item.execution_name) == ("restore", GRAPH, EXECUTION)


def test_every_status_word_is_served_and_others_are_refused(emu, make_client):
    for status in ("fail", "running", "success", "timeout", "cancel"):
        emu.seed(GRAPH, f"e-{status}", status)
        assert make_client().getWorkflowExecution(f"e-{status}", GRAPH).body.status == status
    with pytest.raises(ValueError, match="state must be one of"):
        emu.seed(GRAPH, EXECUTION, "FAILED")


def test_list_filters_by_status_and_time_and_pages_by_offset():
    # Seeded an hour apart until an hour ago (requests are dated by the real clock), and one
    # 4 days ago, outside the default window.
    now = time.time()
    clock = Clock(now - 4 * 24 * 3600)
    emu = DwrEmulator({AK: SK}, project_id=PROJECT, clock=clock)
    emu.seed(GRAPH, "older-than-3-days", "fail")
    stamps = []
    for index in range(5):
        clock.now = now - (5 - index) * 3600
        stamps.append(clock.now)
        emu.seed(GRAPH, f"e{index}", "fail" if index % 2 == 0 else "success")
    emu.seed("graph-2", "other", "fail")
    clock.now = now
    names = [f"e{i}" for i in range(5)]
    with emu, DwrClient(AK, SK, PROJECT, emu.url, timeout=(1.0, 2.0)) as client:
        everything = client.listWorkflowExecution(GRAPH).body  # the last 3 days
        assert [item.execution_name for item in everything.executions] == names
        failed = client.listWorkflowExecution(GRAPH, status="fail").body
        assert [item.execution_name for item in failed.executions] == ["e0", "e2", "e4"]
        assert {item.state for item in failed.executions} == {"FAILED"}
        window = client.listWorkflowExecution(
            GRAPH,
            start_time=datetime.fromtimestamp(stamps[2] - 1, timezone.utc),
            end_time=datetime.fromtimestamp(stamps[3] + 1, timezone.utc),
        ).body
        assert [item.execution_name for item in window.executions] == ["e2", "e3"]
        old = client.listWorkflowExecution(
            GRAPH, start_time=datetime.fromtimestamp(stamps[0] - 5 * 24 * 3600, timezone.utc)
        ).body
        assert old.count == 6

        seen, offset = [], None
        for _ in range(10):  # bounded: 3 pages expected
            page = client.listWorkflowExecution(GRAPH, limit=2, offset=offset).body
            assert page.count == 5
            seen += [item.execution_name for item in page.executions]
            if not page.is_truncated:
                break
            offset = page.next_offset
        assert seen == names


def test_list_refuses_bad_parameters_with_a_dwr_error(emu):
    path = f"/v3/{PROJECT}/workflowexecutions"
    for query in ({"limit": "201"}, {"limit": "0"}, {"status": "FAILED"}, {"start_time": "yday"}):
        assert_dwr_error(signed_get(emu, path, query), 400, "DWR.InvalidParameter")


def test_list_refuses_an_offset_past_1000_as_the_service_documents(emu):
    """DWR's list offset is 1-1000 ("start >= 1, at most 1000"): one past it is a 400."""
    path = f"/v3/{PROJECT}/workflowexecutions"
    refused = signed_get(emu, path, {"graph_name": GRAPH, "offset": "1001"})
    assert_dwr_error(refused, 400, "DWR.InvalidParameter")
    assert "offset" in refused.json()["error_msg"]
    last = signed_get(emu, path, {"graph_name": GRAPH, "offset": "1000"})
    assert last.status_code == 200 and last.json()["executions"] == []


# --- the official SDK ---------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, TOKEN], ids=["permanent", "temporary"])
def test_the_official_sdk_restores_queries_and_lists(token):
    from huaweicloudsdkdwr.v3 import (
        ListWorkflowInstanceRequest,
        RestoreWorkflowExecutionRequest,
        ShowWorkflowInstanceRequest,
    )

    emu = DwrEmulator({AK: SK}, token, project_id=PROJECT)
    emu.seed(GRAPH, EXECUTION, "fail", error_message=WHY)
    with emu:
        sdk = official_sdk(emu.url, token)
        try:
            shown = sdk.show_workflow_instance(
                ShowWorkflowInstanceRequest(execution_name=EXECUTION, graph_name=GRAPH)
            )
            assert shown.status == "fail"
            assert shown.node_execution_details[0].error_message == WHY
            listed = sdk.list_workflow_instance(
                ListWorkflowInstanceRequest(graph_name=GRAPH, status="fail", limit=50, offset=1)
            )
            assert [item.execution_name for item in listed.executions] == [EXECUTION]
            restored = sdk.restore_workflow_execution(
                RestoreWorkflowExecutionRequest(execution_name=EXECUTION, graph_name=GRAPH)
            )
            assert restored.execution_name == EXECUTION
        finally:
            sdk.close()
    assert emu.state(GRAPH, EXECUTION) == "running"
    assert [call.status for call in emu.calls] == [200, 200, 200]


# --- authentication and project ---------------------------------------------------------------


def test_credentials_are_checked(emu, make_client):
    for client in (make_client(secret_access_key="wrong"), make_client(access_key_id="AK-other")):
        refused = client.restoreFailedWorkflowExecution(EXECUTION, GRAPH)
        assert (refused.status, refused.errorCode) == (401, "APIGW.0301")
    assert emu.restores(GRAPH, EXECUTION) == 0


def test_x_sdk_date_more_than_15_minutes_off_is_refused(emu):
    path = f"/v3/{PROJECT}/workflowexecutions"
    late = signed_get(emu, path, {}, date=sdk_date(time.time() - 16 * 60))
    assert_dwr_error(late, 401, "APIGW.0301")
    assert "X-Sdk-Date" in late.json()["error_msg"]
    assert signed_get(emu, path, {}, date=sdk_date(time.time() - 14 * 60)).status_code == 200


def test_a_required_security_token_must_be_sent():
    emu = DwrEmulator({AK: SK}, TOKEN, project_id=PROJECT)
    emu.seed(GRAPH, EXECUTION)
    with emu:
        without = DwrClient(AK, SK, PROJECT, emu.url).getWorkflowExecution(EXECUTION, GRAPH)
        with_token = DwrClient(AK, SK, PROJECT, emu.url, TOKEN).getWorkflowExecution(
            EXECUTION, GRAPH
        )
    assert (without.status, without.errorCode) == (401, "APIGW.0301")
    assert with_token.status == 200


def test_another_project_is_refused(emu, make_client):
    other = make_client(project_id="another-project").getWorkflowExecution(EXECUTION, GRAPH)
    assert (other.status, other.errorCode) == (403, "DWR.ProjectMismatch")
    path = f"/v3/{PROJECT}/workflowexecutions"
    assert_dwr_error(signed_get(emu, path, {}, project="another"), 403, "DWR.ProjectMismatch")


def test_unknown_paths_and_methods(emu):
    assert_dwr_error(requests.get(emu.url + "/v3/x/nothing", timeout=5), 404, "DWR.NoSuchResource")
    retry = f"{emu.url}/v3/{PROJECT}/workflows/{GRAPH}/workflowexecution/{EXECUTION}/retry"
    wrong = requests.get(retry, timeout=5)
    assert_dwr_error(wrong, 405, "DWR.MethodNotAllowed")
    assert wrong.headers["Allow"] == "POST"


# --- faults and transitions -----------------------------------------------------------------


def test_faults_answer_in_the_dwr_error_shape_and_the_client_survives_them(emu, make_client):
    emu.fail_next(1, 503)
    recovered = make_client().getWorkflowExecution(EXECUTION, GRAPH)
    assert (recovered.status, recovered.attempts) == (200, 2)

    emu.fail_next(1, 500)
    failed = make_client(retry=RetrySchedule(max_attempts=1)).getWorkflowExecution(EXECUTION, GRAPH)
    assert (failed.status, failed.errorCode) == (500, "InternalError")

    emu.garbage_next(1)
    assert (
        make_client(retry=RetrySchedule(max_attempts=1))
        .getWorkflowExecution(EXECUTION, GRAPH)
        .status
        == 502
    )
    emu.redirect_next(1)
    assert make_client().getWorkflowExecution(EXECUTION, GRAPH).status == 302


def test_a_reset_after_the_restore_is_maybe_applied_and_not_sent_again(emu, make_client):
    emu.reset_next(1, applied=True)
    result = make_client().restoreFailedWorkflowExecution(EXECUTION, GRAPH)
    assert result.status == 0 and result.maybe_applied and result.attempts == 1
    assert emu.restores(GRAPH, EXECUTION) == 1 and emu.state(GRAPH, EXECUTION) == "running"


def test_latency_delays_the_answer_after_the_restore_took_effect(emu, make_client):
    emu.latency(0.3)
    started = time.monotonic()
    assert make_client().restoreFailedWorkflowExecution(EXECUTION, GRAPH).status == 200
    assert time.monotonic() - started >= 0.3


def test_after_restore_the_execution_fails_again(make_client):
    emu = DwrEmulator({AK: SK}, project_id=PROJECT, after_restore=("fail", 0.05))
    emu.seed(GRAPH, EXECUTION)
    with emu:
        client = DwrClient(AK, SK, PROJECT, emu.url)
        assert client.restoreFailedWorkflowExecution(EXECUTION, GRAPH).status == 200
        deadline = time.monotonic() + 5
        while emu.state(GRAPH, EXECUTION) != "fail" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert emu.state(GRAPH, EXECUTION) == "fail"
        assert client.restoreFailedWorkflowExecution(EXECUTION, GRAPH).status == 200
    assert emu.restores(GRAPH, EXECUTION) == 2
    with pytest.raises(ValueError, match="after_restore"):
        DwrEmulator({AK: SK}, after_restore=("running", 1.0))


# --- the command line -------------------------------------------------------------------------


def test_cli_serves_the_dwr_api_for_a_project():
    command = [sys.executable, "-m", "handler.devtools.emulator", "--api", "dwr", "--port", "0"]
    command += ["--access-key", AK, "--project-id", PROJECT, "--execution", f"{GRAPH}/{EXECUTION}"]
    command += ["--fail-next", "1", "--after-restore", "SUCCESS:0"]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, "EMULATOR_SECRET_ACCESS_KEY": SK},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = [""]
        reader = threading.Thread(target=lambda: line.__setitem__(0, process.stdout.readline()))
        reader.start()
        reader.join(timeout=30)
        url = line[0].strip()
        with DwrClient(AK, SK, PROJECT, url, retry=RetrySchedule(max_attempts=2)) as client:
            restored = client.restoreFailedWorkflowExecution(EXECUTION, GRAPH)
            assert (restored.status, restored.attempts) == (200, 2)  # the 503, then the restore
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                status = client.getWorkflowExecution(EXECUTION, GRAPH).body.status
                if status == "success":
                    break
                time.sleep(0.02)
            assert status == "success"
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
