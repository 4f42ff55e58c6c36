"""Listing with the OBS client (what the sweep reads): paging, parsing, and the SDK's wire form."""

from __future__ import annotations

import pytest

from handler.client import ExecutionPage, ExecutionSummary, GraphPage
from handler.client.obs_signing import Credentials, Signer
from tests.conftest import AK, SK, TOKEN

LIST_PATH = "/v2/workflowexecutions"
LIST_DATE = "Fri, 27 Nov 2026 21:44:24 GMT"


def summary(name: str, state: str) -> dict:
    return {
        "graph_urn": "urn:fgs:r:p:graph:graph-1",
        "execution_urn": f"urn:fgs:r:p:execution:graph-1:{name}:d",
        "execution_name": name,
        "execution_type": "APICALL",
        "execution_state": state,
        "started_at": "2026-11-27T10:00:00Z",
        "stopped_at": "2026-11-27T10:05:00Z",
    }


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        (
            "/v2/workflowexecutions?x-workflow-execution-type=APICALL&x-workflow-graph-name="
            "graph-1&x-workflow-limit=50&x-workflow-next-marker=APICALLexec-0",
            "OBS AKEXAMPLE:qJ+ZI5WQOe6HoYo2+cDGQaz1m3E=",
        ),
        (
            "/v2/workflowexecutions?x-workflow-graph-name=graph-1",
            "OBS AKEXAMPLE:aSI8G3z0FJO9vgyypmrSUaCp6Ys=",
        ),
    ],
)
def test_list_reference_vectors_from_the_official_sdk(resource, expected):
    signer = Signer(Credentials("AKEXAMPLE", "SKEXAMPLE"))
    assert signer.sign("GET", resource, LIST_DATE, "application/json")["Authorization"] == expected


def test_a_list_page_is_parsed_and_its_marker_handed_on(httpserver, make_client):
    httpserver.expect_ordered_request(
        LIST_PATH, query_string={"x-workflow-graph-name": "graph-1", "x-workflow-limit": "2"}
    ).respond_with_json(
        {
            "count": 2,
            "is_truncated": True,
            "next_marker": "APICALLrun-2",
            "executions": [summary("run-1", "FAILED"), summary("run-2", "SUCCESS")],
        }
    )
    httpserver.expect_ordered_request(
        LIST_PATH,
        query_string={
            "x-workflow-graph-name": "graph-1",
            "x-workflow-limit": "2",
            "x-workflow-next-marker": "APICALLrun-2",
        },
    ).respond_with_json(
        {"count": 1, "is_truncated": False, "executions": [summary("run-3", "FAILED")]}
    )
    client = make_client()

    first = client.listWorkflowExecution("graph-1", limit=2).body
    assert isinstance(first, ExecutionPage) and first.next_marker == "APICALLrun-2"
    assert [e.state for e in first.executions] == ["FAILED", "SUCCESS"]
    assert first.executions[0] == ExecutionSummary(**summary("run-1", "FAILED"))
    last = client.listWorkflowExecution("graph-1", limit=2, nextMarker=first.next_marker).body
    assert [e.execution_name for e in last.executions] == ["run-3"]
    assert (last.is_truncated, last.next_marker) == (False, None)


@pytest.mark.parametrize(
    "options",
    [{"limit": 0}, {"limit": 1001}, {"executionType": "OTHER"}, {"nextMarker": "a&b=c"}],
)
def test_bad_list_options_are_refused_before_any_request(httpserver, make_client, options):
    with pytest.raises(ValueError):
        make_client().listWorkflowExecution("graph-1", **options)
    assert httpserver.log == []


def test_graph_names_are_listed_page_by_page(httpserver, make_client):
    httpserver.expect_ordered_request("/v2/workflows/").respond_with_json(
        {
            "count": 2,
            "is_truncated": True,
            "next_start": 3,
            "graphs": [{"name": "graph-1"}, {"name": "graph-2"}],
        }
    )
    httpserver.expect_ordered_request(
        "/v2/workflows/", query_string={"x-workflow-prefix": "", "x-workflow-start": "3"}
    ).respond_with_json({"count": 1, "is_truncated": False, "graphs": [{"name": "graph-3"}]})
    client = make_client()
    first = client.listWorkflow().body
    assert first == GraphPage(names=("graph-1", "graph-2"), is_truncated=True, next_start=3)
    assert client.listWorkflow(start=first.next_start).body.names == ("graph-3",)


@pytest.mark.parametrize("kind", ["executions", "graphs"])
def test_list_requests_match_the_official_sdk_on_the_wire(httpserver, make_client, kind):
    """Same path, query and signature (for the SDK's own Date) as esdk-obs-python sends."""
    from obs import WorkflowClient as SdkClient

    answer = {"count": 0, "is_truncated": False, "executions": [], "graphs": []}
    httpserver.expect_request(LIST_PATH).respond_with_json(answer)
    httpserver.expect_request("/v2/workflows/").respond_with_json(answer)
    sdk = SdkClient(
        access_key_id=AK, secret_access_key=SK, security_token=TOKEN, server=httpserver.url_for("")
    )
    ours = make_client(security_token=TOKEN)
    try:
        if kind == "executions":
            sdk.listWorkflowExecution(
                "graph-1", executionType="APICALL", nextMarker="APICALLa-1", limit=50
            )
            ours.listWorkflowExecution(
                "graph-1", executionType="APICALL", nextMarker="APICALLa-1", limit=50
            )
        else:
            sdk.listWorkflow(start=2, limit=10)
            ours.listWorkflow(start=2, limit=10)
    finally:
        sdk.close()
    theirs, mine = (request for request, _ in httpserver.log)
    assert (mine.method, mine.path) == (theirs.method, theirs.path)
    assert mine.args.to_dict() == theirs.args.to_dict()
    resource = f"{mine.path}?{mine.query_string.decode()}"
    for_their_date = Signer(Credentials(AK, SK, TOKEN)).sign(
        "GET", resource, theirs.headers["Date"], "application/json"
    )
    assert for_their_date["Authorization"] == theirs.headers["Authorization"]


def test_listed_rows_become_the_same_immutable_summaries_the_constructor_builds():
    """The list parser builds summaries on a fast path (a sweep builds 10,000): they must
    equal, hash and stay immutable like constructed ones, with values bounded and blanks
    turned into None exactly as ``text_or_none`` does."""
    from handler.client.results import execution_summaries, text_or_none

    rows = [
        summary("run-1", "FAILED"),
        {"execution_name": "x" * 600, "execution_state": "", "started_at": 1700000000000},
        "not an object",
        {},
    ]
    parsed = execution_summaries({"executions": rows})
    expected = tuple(
        ExecutionSummary(**{name: text_or_none(row.get(name)) for name in ExecutionSummary._fields})
        for row in rows
        if isinstance(row, dict)
    )
    assert parsed == expected
    assert parsed[1].execution_name == "x" * 500 and parsed[1].execution_state is None
    assert parsed[1].started_at == "1700000000000"
    assert [hash(s) for s in parsed] == [hash(s) for s in expected]
    with pytest.raises(AttributeError):  # immutable, as a frozen dataclass would be
        parsed[0].execution_name = "changed"
    assert execution_summaries({"executions": "not a list"}) == ()
