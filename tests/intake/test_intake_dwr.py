"""DWR-shaped failure payloads: the DWR v3 query answer names a request by itself.

GET /v3/{project}/workflows/{graph}/workflowexecution/{execution} answers with
``workflow_urn`` (the graph), ``execution_id`` (the execution's name) and ``status``; such an
object restores when its status is ``fail`` and is skipped otherwise, in every envelope.
"""

from __future__ import annotations

import pytest

from handler.intake import from_cloudevent, from_event
from tests.intake import test_intake as shapes

DWR_STATUSES_THAT_SKIP = ["success", "running", "timeout", "cancel"]


def dwr_answer(
    status: str = "fail",
    graph: str = "graph-1",
    execution: str = "exec-1",
    urn: str | None = None,
) -> dict:
    """A DWR query answer as the reference documents it (fields the intake does not read too)."""
    return {
        "workflow_id": "4f3e2d1c-0b9a-8765-4321-0fedcba98765",
        "workflow_urn": urn or f"urn:fgs:cn-south-1:p:graph:{graph}",
        "execution_id": execution,
        "status": status,
        "input": "{}",
        "begin_time": "2026-11-27T18:30:02Z",
        "node_execution_details": [{"status": status, "error_message": "node failed"}],
    }


def every_envelope(payload: dict) -> dict[str, list]:
    """The items one payload yields at top level, in CloudEvent data and in SMN messages."""
    return {
        "plain": shapes.post(payload),
        "event": from_event(payload),
        "cloudevent": shapes.post(shapes.cloudevent(payload)),
        "decoded cloudevent": from_cloudevent({"id": "e", "source": "s", "type": "t"}, payload),
        "smn": shapes.post(shapes.smn_message(payload)),
        "smn trigger": from_event(shapes.smn_trigger(payload)),
    }


def test_a_failed_dwr_query_answer_restores_in_every_envelope():
    for envelope, items in every_envelope(dwr_answer("fail")).items():
        item = shapes.only(items)
        assert item.verdict == "restore", (envelope, item.reason)
        assert (item.graph_name, item.execution_name) == ("graph-1", "exec-1"), envelope


@pytest.mark.parametrize("status", DWR_STATUSES_THAT_SKIP)
def test_a_dwr_query_answer_in_any_other_status_skips(status):
    for envelope, items in every_envelope(dwr_answer(status)).items():
        item = shapes.only(items)
        assert item.verdict == "skip", envelope
        assert item.reason == f"execution state is {status}, not a failure", envelope
        assert (item.graph_name, item.execution_name) == ("graph-1", "exec-1"), envelope


def test_a_dwr_answer_has_the_identity_of_the_plain_request_for_the_same_execution():
    spellings = [
        dwr_answer(),
        {"workflow_urn": "urn:fgs:r:p:workflow:graph-1", "execution_id": "exec-1"},
        {"workflowUrn": "urn:dwr:r:p:graph:graph-1", "executionId": "exec-1"},
        {"graph_name": "graph-1", "execution_id": "exec-1", "execution_state": "fail"},
    ]
    identities = {shapes.only(shapes.post(body)).event_id for body in spellings}
    assert identities == {shapes.plain_identity("graph-1", "exec-1")}


@pytest.mark.parametrize(
    "urn",
    [
        "urn:fgs:cn-south-1:p:graph:graph-1",
        "urn:fgs:cn-south-1:p:workflow:graph-1",
        "urn:dwr:cn-south-1:p:graph:graph-1",
        "urn:dwr:cn-south-1:p:workflow:graph-1",
    ],
)
def test_workflow_urn_is_read_as_a_graph_urn_of_kind_graph_or_workflow(urn):
    item = shapes.only(shapes.post(dwr_answer(urn=urn)))
    assert (item.verdict, item.graph_name) == ("restore", "graph-1")


@pytest.mark.parametrize(
    ("urn", "problem"),
    [
        ("urn:obs:r:p:graph:g", "does not start with 'urn:fgs:' or 'urn:dwr:'"),
        ("urn:fgs:r:p:execution:g:e:d", "has kind 'execution', expected 'graph' or 'workflow'"),
        ("urn:fgs:r:p:workflow:g:extra", "is not of the form"),
        ("urn:fgs:r::workflow:g", "is not of the form"),
        (["urn:fgs:r:p:graph:g"], "must be a string, not an array"),
    ],
)
def test_a_malformed_workflow_urn_rejects_the_item(urn, problem):
    item = shapes.only(shapes.post(dwr_answer(urn=urn)))
    assert item.verdict == "reject"
    assert item.reason.startswith("malformed workflow_urn: ")
    assert problem in item.reason


def test_graph_urn_still_accepts_only_kind_graph():
    body = {"graph_urn": "urn:fgs:r:p:workflow:g", "executionName": "e"}
    item = shapes.only(shapes.post(body))
    assert item.verdict == "reject"
    assert "has kind 'workflow', expected 'graph'" in item.reason


@pytest.mark.parametrize("execution_id", ["-bad", "a" * 200, "has space", 42, ""])
def test_execution_id_is_held_to_the_name_rule(execution_id):
    item = shapes.only(shapes.post(dwr_answer(execution="x") | {"execution_id": execution_id}))
    assert item.verdict == "reject"
    assert item.reason.startswith("invalid executionName")
    assert (item.graph_name, item.execution_name) == (None, None)


def test_names_given_twice_must_agree_with_the_dwr_aliases():
    cases = [
        (dwr_answer() | {"executionName": "exec-2"}, "conflicting executionName"),
        (dwr_answer() | {"graph_name": "graph-2"}, "conflicting graphName"),
        (
            dwr_answer() | {"execution_urn": "urn:fgs:r:p:execution:graph-1:exec-2:d"},
            "conflicting executionName",
        ),
    ]
    for body, problem in cases:
        item = shapes.only(shapes.post(body))
        assert item.verdict == "reject", body
        assert item.reason.startswith(problem), item.reason


def test_a_dwr_answer_without_the_graph_is_rejected_naming_the_missing_field():
    item = shapes.only(shapes.post({"execution_id": "exec-1", "status": "fail"}))
    assert item.verdict == "reject"
    assert item.reason.startswith("missing graphName")


def test_the_no_name_reason_lists_the_dwr_fields():
    item = shapes.only(shapes.post({"status": "fail", "workflow_id": "4f3e2d1c"}))
    assert item.verdict == "reject"
    assert "workflow_urn/execution_id" in item.reason


def test_a_dwr_answer_inside_execution_info_counts_too():
    body = {"execution_info": dwr_answer("running")}
    item = shapes.only(shapes.post(body))
    assert (item.verdict, item.execution_name) == ("skip", "exec-1")


# The form DWR's API pages document for a query answer's workflow_urn (package ``default``,
# version ``latest``): the graph is the seventh part, not the sixth.
DOCUMENTED_WORKFLOW_URN = (
    "urn:fss:cn-south-1:0a1b2c3d4e5f60718293a4b5c6d7e8f9:workflow:default:{}:latest"
)


def test_the_documented_workflow_urn_form_names_the_graph_in_every_envelope():
    answer = dwr_answer(urn=DOCUMENTED_WORKFLOW_URN.format("graph-1"))
    for envelope, items in every_envelope(answer).items():
        item = shapes.only(items)
        assert item.verdict == "restore", (envelope, item.reason)
        assert (item.graph_name, item.execution_name) == ("graph-1", "exec-1"), envelope


def test_the_documented_workflow_urn_has_the_identity_of_the_other_spellings():
    spellings = [
        dwr_answer(urn=DOCUMENTED_WORKFLOW_URN.format("graph-1")),
        {"workflowUrn": "urn:fss:r:p:workflow:my-package:graph-1:v3", "executionId": "exec-1"},
        dwr_answer(urn="urn:fgs:cn-south-1:p:graph:graph-1"),
    ]
    identities = {shapes.only(shapes.post(body)).event_id for body in spellings}
    assert identities == {shapes.plain_identity("graph-1", "exec-1")}


@pytest.mark.parametrize(
    ("urn", "problem"),
    [
        ("urn:fss:r:p:workflow:default:graph-1", "is not of the form"),  # no version
        ("urn:fss:r:p:workflow:default:graph-1:latest:x", "is not of the form"),
        ("urn:fss:r:p:workflow:default::latest", "is not of the form"),
        ("urn:fss:r:p:function:default:graph-1:latest", "has kind 'function', expected 'workflow'"),
        ("urn:fss:r:p:workflow:default:a.b:latest", "invalid graphName"),
        ("urn:xyz:r:p:graph:g", "does not start with 'urn:fgs:' or 'urn:dwr:' or 'urn:fss:'"),
    ],
)
def test_a_malformed_documented_workflow_urn_rejects_the_item(urn, problem):
    item = shapes.only(shapes.post(dwr_answer(urn=urn)))
    assert item.verdict == "reject"
    assert problem in item.reason, item.reason


def test_a_documented_workflow_urn_must_agree_with_the_graph_name():
    body = dwr_answer(urn=DOCUMENTED_WORKFLOW_URN.format("graph-1")) | {"graph_name": "graph-2"}
    item = shapes.only(shapes.post(body))
    assert item.verdict == "reject" and item.reason.startswith("conflicting graphName")
