"""The emulator's list APIs (what a sweep reads), over real HTTP, with our clients and the SDK."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import unquote

import pytest
import requests

from handler.client import DwrClient, RetrySchedule, WorkflowClient
from handler.client.obs_signing import Credentials, Signer, http_date
from handler.devtools.emulator import DwrEmulator, Emulator
from handler.names import InvalidNameError

AK = "AK-emulator-list"
SK = "SK-emulator-list-secret-0123456789"
PROJECT = "0123456789abcdef0123456789abcdef"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def emu():
    with Emulator({AK: SK}) as emulator:
        yield emulator


@pytest.fixture
def client(emu):
    with WorkflowClient(
        AK, SK, server=emu.url, timeout=(1.0, 2.0), retry=RetrySchedule(max_attempts=1)
    ) as ours:
        yield ours


@pytest.fixture
def sdk(emu):
    """The official SDK's client (a process-wide singleton: closed after the test)."""
    from obs import WorkflowClient as SdkClient

    official = SdkClient(access_key_id=AK, secret_access_key=SK, server=emu.url)
    yield official
    official.close()


def read_all(client, graph, **options) -> tuple[list, int]:
    """Every execution of ``graph`` by marker paging, and the pages read (bounded loop)."""
    listed, marker = [], None
    for pages in range(1, 1000):
        page = client.listWorkflowExecution(graph, nextMarker=marker, **options).body
        listed += page.executions
        if not page.is_truncated:
            return listed, pages
        marker = page.next_marker
    raise AssertionError("paging did not end")


def canonical(resource: str) -> str:
    """What a correct client signs: the path and the x-workflow-* parameters, sorted, decoded."""
    path, _, query = resource.partition("?")
    fields = sorted(unquote(f) for f in query.split("&") if f.startswith("x-workflow-"))
    return path + ("?" + "&".join(fields) if fields else "")


def signed_get(emu, resource: str, signed_resource: str | None = None) -> requests.Response:
    """GET ``resource`` signed over ``signed_resource`` (default: the canonical one)."""
    signed_resource = signed_resource or canonical(resource)
    date = http_date()
    headers = {"Date": date, "Content-Type": "application/json"}
    signer = Signer(Credentials(AK, SK))
    headers.update(signer.sign("GET", signed_resource, date, "application/json"))
    return requests.get(emu.url + resource, headers=headers, timeout=5)


# --- OBS: list executions ------------------------------------------------------------------


def test_executions_are_listed_by_type_and_name_and_paged_by_marker(emu, client):
    kinds = {f"run-{i:02d}": ("APICALL", "TRIGGERCAL")[i % 3 == 0] for i in range(25)}
    emu.seed_many(
        {"graph": "graph-1", "execution": name, "state": "SUCCESS", "execution_type": kind}
        for name, kind in kinds.items()
    )
    emu.seed("graph-2", "run-00", "FAILED")  # another graph: not listed

    first = client.listWorkflowExecution("graph-1").body  # default limit: 10
    assert (len(first.executions), first.count, first.is_truncated) == (10, 10, True)
    assert first.next_marker == "APICALL" + first.executions[-1].execution_name

    listed, pages = read_all(client, "graph-1", limit=7)
    expected = sorted(kinds, key=lambda name: kinds[name] + name)
    assert [e.execution_name for e in listed] == expected and pages == 4
    assert [e.execution_type for e in listed] == [kinds[name] for name in expected]

    only_triggered, _ = read_all(client, "graph-1", executionType="TRIGGERCAL", limit=3)
    assert [e.execution_name for e in only_triggered] == [
        n for n in expected if kinds[n] == "TRIGGERCAL"
    ]
    assert client.listWorkflowExecution("no-such-graph").body.executions == ()


def test_a_listed_execution_has_the_documented_fields_and_seeded_times(emu):
    started, stopped = NOW - timedelta(hours=2), NOW - timedelta(hours=1)
    emu.seed("graph-1", "run-1", "FAILED", started_at=started, stopped_at=stopped.timestamp())
    emu.seed("graph-1", "run-2", "RUNNING", started_at="2026-11-27T10:00:00Z")
    answer = signed_get(emu, "/v2/workflowexecutions?x-workflow-graph-name=graph-1")
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    document = answer.json()
    assert set(document) == {"count", "is_truncated", "executions"}  # no marker: not truncated
    failed, running = document["executions"]
    assert set(failed) == {
        "graph_urn", "execution_urn", "execution_name", "execution_type",
        "execution_state", "started_at", "stopped_at",
    }  # fmt: skip
    assert failed["execution_state"] == "FAILED" and failed["execution_type"] == "APICALL"
    assert _parse(failed["started_at"]) == started and _parse(failed["stopped_at"]) == stopped
    assert running["stopped_at"] is None
    assert _parse(running["started_at"]) == datetime(2026, 11, 27, 10, tzinfo=timezone.utc)


def test_a_restore_clears_the_stop_time_and_the_finished_run_sets_a_new_one(emu, client):
    emu.seed("graph-1", "run-1", "FAILED", stopped_at=NOW - timedelta(hours=3))
    emu.after_restore = ("FAILED", 0.05)
    assert client.restoreFailedWorkflowExecution("run-1", "graph-1").ok
    (running,) = client.listWorkflowExecution("graph-1").body.executions
    assert (running.state, running.stopped_at) == ("RUNNING", None)
    deadline = time.monotonic() + 5
    while emu.state("graph-1", "run-1") != "FAILED" and time.monotonic() < deadline:
        time.sleep(0.01)
    (failed_again,) = client.listWorkflowExecution("graph-1").body.executions
    assert _parse(failed_again.stopped_at) > NOW - timedelta(minutes=1)


@pytest.mark.parametrize(
    "query",
    [
        "x-workflow-limit=10",  # no graph
        "x-workflow-graph-name=graph-1&x-workflow-limit=0",
        "x-workflow-graph-name=graph-1&x-workflow-limit=1001",
        "x-workflow-graph-name=graph-1&x-workflow-limit=ten",
        "x-workflow-graph-name=graph-1&x-workflow-execution-type=OTHER",
        "x-workflow-graph-name=a%2F..%2Fb",
    ],
)
def test_bad_list_parameters_are_a_400(emu, query):
    answer = signed_get(emu, f"/v2/workflowexecutions?{query}")
    assert answer.status_code == 400 and answer.json()["code"] == "WF.InvalidParameter"


def test_every_x_workflow_parameter_is_signed(emu):
    resource = "/v2/workflowexecutions?x-workflow-graph-name=graph-1&x-workflow-limit=5"
    assert signed_get(emu, resource).status_code == 200
    # Signed without the limit, or in the order sent rather than sorted: refused.
    unsigned_limit = "/v2/workflowexecutions?x-workflow-graph-name=graph-1"
    assert signed_get(emu, resource, unsigned_limit).status_code == 403
    unsorted = "/v2/workflowexecutions?x-workflow-limit=5&x-workflow-graph-name=graph-1"
    assert signed_get(emu, unsorted, resource).status_code == 200  # sent in any order
    assert signed_get(emu, unsorted, unsorted).status_code == 403  # but signed sorted
    # A parameter that is not a sub-resource is not signed.
    assert signed_get(emu, resource + "&other=1", resource).status_code == 200


def test_a_valueless_prefix_signs_as_its_bare_name(emu):
    emu.seed_graph("graph-1")
    bare = "/v2/workflows/?x-workflow-limit=5&x-workflow-prefix"
    assert signed_get(emu, bare, bare).status_code == 200
    assert signed_get(emu, bare, bare + "=").status_code == 403


def test_the_official_sdk_lists_executions_and_filters_states_on_its_side(emu, sdk):
    for i in range(30):
        emu.seed("graph-1", f"run-{i:02d}", ("FAILED", "SUCCESS", "RUNNING")[i % 3])
    page = sdk.listWorkflowExecution("graph-1", limit=7)
    assert page.status == 200 and page.body.isTruncated
    assert [e["execution_name"] for e in page.body.executions] == [f"run-{i:02d}" for i in range(7)]
    after = sdk.listWorkflowExecution("graph-1", nextMarker=page.body.nextMarker, limit=7)
    assert after.body.executions[0]["execution_name"] == "run-07"
    # With a state it pages itself (each page `limit` long) until it has `limit` matches.
    emu.clear_calls()
    failed = sdk.listWorkflowExecution("graph-1", executionState="FAILED", limit=8)
    names = [e["execution_name"] for e in failed.body.executions]
    assert names == [f"run-{i:02d}" for i in range(0, 24, 3)]
    assert [call.status for call in emu.calls] == [200] * 3  # 3 pages of 8 held 8 failures


def test_the_official_sdk_lists_graphs(emu, sdk):
    for name in ("alpha-1", "alpha-2", "alpha-3", "beta-1"):
        emu.seed_graph(name)
    first = sdk.listWorkflow(limit=2)
    assert first.status == 200, first.errorMessage
    assert [g["name"] for g in first.body.graphs] == ["alpha-1", "alpha-2"]
    assert (first.body.isTruncated, first.body.nextStart) == (True, 3)
    rest = sdk.listWorkflow(start=first.body.nextStart, limit=2)
    assert [g["name"] for g in rest.body.graphs] == ["alpha-3", "beta-1"]
    assert not rest.body.isTruncated
    prefixed = sdk.listWorkflow("beta")
    assert [g["name"] for g in prefixed.body.graphs] == ["beta-1"]
    assert set(prefixed.body.graphs[0]) == {"name", "graph_urn", "created_at"}


def test_our_client_pages_graphs_by_start(emu, client):
    emu.seed_many({"graph": f"graph-{i:02d}", "execution": "run-1"} for i in range(25))
    names, start = [], None
    for _ in range(10):  # bounded: 3 pages expected
        page = client.listWorkflow(start=start, limit=10).body
        names += page.names
        if not page.is_truncated:
            break
        start = page.next_start
    assert names == [f"graph-{i:02d}" for i in range(25)]
    assert client.listWorkflow("graph-1").body.names == tuple(f"graph-{i}" for i in range(10, 20))


def test_get_workflows_without_the_prefix_parameter_is_not_served(emu):
    assert signed_get(emu, "/v2/workflows/graph-1").status_code == 404


# --- faults on list calls ------------------------------------------------------------------


def test_faults_apply_to_list_calls(emu, client):
    emu.seed("graph-1", "run-1", "FAILED")
    emu.fail_next(1, 503)
    assert client.listWorkflowExecution("graph-1").status == 503
    emu.reset_next(1)
    assert client.listWorkflowExecution("graph-1").status == 0
    emu.garbage_next(1)
    assert client.listWorkflow().status == 502
    emu.latency(0.2)
    started = time.monotonic()
    assert client.listWorkflowExecution("graph-1").ok
    assert time.monotonic() - started >= 0.2


def test_a_targeted_fault_is_taken_only_by_its_graphs_listing(emu, client):
    for graph in ("graph-1", "graph-2"):
        emu.seed(graph, "run-1", "FAILED")
    emu.faults_for(graph="graph-2", operation="list").fail_next(2, 500)
    assert client.getWorkflowExecution("run-1", "graph-2").ok  # not a list call
    assert client.listWorkflowExecution("graph-1").ok  # another graph
    assert client.listWorkflowExecution("graph-2").status == 500
    assert client.listWorkflowExecution("graph-2").status == 500
    assert client.listWorkflowExecution("graph-2").ok  # two only
    emu.faults_for(operation="list_graphs").fail_next(1, 403)
    assert client.listWorkflow().status == 403
    with pytest.raises(ValueError):
        emu.faults_for(operation="delete")


# --- seeding --------------------------------------------------------------------------------


def test_thousands_of_executions_seed_and_list_quickly(emu, client):
    started = time.perf_counter()
    count = emu.seed_many(
        {
            "graph": f"graph-{g:02d}",
            "execution": f"run-{i:04d}",
            "state": ("FAILED", "SUCCESS", "RUNNING")[i % 3],
            "stopped_at": None if i % 3 == 2 else NOW - timedelta(minutes=i),
        }
        for g in range(20)
        for i in range(500)
    )
    seeded = time.perf_counter() - started
    assert count == 10_000 and seeded < 1.0, seeded
    started = time.perf_counter()
    listed, pages = read_all(client, "graph-07", limit=50)
    assert (len(listed), pages) == (500, 10)
    assert time.perf_counter() - started < 2.0


def test_a_bad_entry_seeds_nothing(emu):
    entries = [{"graph": "graph-1", "execution": "ok"}, {"graph": "graph-1", "execution": "a/b"}]
    with pytest.raises(InvalidNameError):
        emu.seed_many(entries)
    assert emu.state("graph-1", "ok") is None
    for bad in (
        {"graph": "g", "execution": "e", "colour": "red"},
        {"graph": "g", "execution": "e", "execution_type": "CRON"},
        {"graph": "g", "execution": "e", "stopped_at": "yesterday"},
        {"graph": "g", "execution": "e", "state": "RUNNING", "stopped_at": 0},
    ):
        with pytest.raises(ValueError):
            emu.seed_many([bad])


def test_a_seed_file_carries_times_types_and_empty_graphs(tmp_path):
    seed = {
        "credentials": {AK: SK},
        "graphs": ["empty-graph"],
        "executions": [
            {"graph": "graph-1", "execution": "run-1", "state": "FAILED",
             "started_at": "2026-11-27T10:00:00Z", "stopped_at": "2026-11-27T10:05:00Z",
             "execution_type": "TRIGGERCAL"},
        ],
    }  # fmt: skip
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(seed))
    with Emulator.from_seed_file(path) as emu, WorkflowClient(AK, SK, server=emu.url) as client:
        assert client.listWorkflow().body.names == ("empty-graph", "graph-1")
        (run,) = client.listWorkflowExecution("graph-1").body.executions
        assert (run.execution_type, run.stopped_at) == ("TRIGGERCAL", "2026-11-27T10:05:00.000Z")


# --- DWR: list graphs -----------------------------------------------------------------------


def test_dwr_graphs_are_listed_by_offset():
    emu = DwrEmulator({AK: SK}, project_id=PROJECT)
    emu.seed_many(
        {"graph": f"graph-{i:02d}", "execution": "run-1", "state": "fail"} for i in range(12)
    )
    retry = RetrySchedule(max_attempts=1)
    with emu, DwrClient(AK, SK, PROJECT, emu.url, timeout=(1.0, 2.0), retry=retry) as client:
        names, start = [], None
        for _ in range(10):  # bounded: 3 pages expected
            page = client.listWorkflow(start=start, limit=5).body
            names += page.names
            if not page.is_truncated:
                break
            start = page.next_start
        assert names == [f"graph-{i:02d}" for i in range(12)]
        assert client.listWorkflow("graph-1").body.names == ("graph-10", "graph-11")
        emu.faults_for(operation="list_graphs").fail_next(1, 503)
        assert client.listWorkflow(limit=1).status == 503
        raw = requests.get(f"{emu.url}/v3/{PROJECT}/workflows", timeout=5)
        assert raw.status_code == 401  # unsigned


def test_dwr_graph_list_answer_shape():
    emu = DwrEmulator({AK: SK}, project_id=PROJECT)
    emu.seed_graph("graph-1")
    emu.seed_graph("graph-2")
    with emu, DwrClient(AK, SK, PROJECT, emu.url, timeout=(1.0, 2.0)) as client:
        result = client._call("GET", f"/v3/{PROJECT}/workflows", {"limit": "1"}, None)
    document = result.body
    assert set(document) == {"count", "graphs", "next_offset", "is_truncated"}
    assert (document["count"], document["next_offset"], document["is_truncated"]) == (2, 2, True)
    assert set(document["graphs"][0]) == {"name", "graph_urn", "created_at", "id"}


def test_dwr_stop_times_are_seeded_and_listed():
    emu = DwrEmulator({AK: SK}, project_id=PROJECT)
    stopped = NOW - timedelta(hours=2)
    emu.seed(
        "graph-1", "run-1", "fail", started_at=stopped - timedelta(minutes=5), stopped_at=stopped
    )
    with emu, DwrClient(AK, SK, PROJECT, emu.url, timeout=(1.0, 2.0)) as client:
        (run,) = client.listWorkflowExecution("graph-1", status="fail").body.executions
        assert _parse(run.stopped_at) == stopped
        info = client.getWorkflowExecution("run-1", "graph-1").body
        assert info.executionInfo["end_time"] == stopped.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
