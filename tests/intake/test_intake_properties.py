"""Properties of intake that must hold for every input, checked with generated deliveries.

1. Whatever arrives - arbitrary JSON, JSON shaped like our envelopes, arbitrary bytes under any
   content type, arbitrary CloudEvent attributes and data - intake answers with a non-empty
   list of well-formed Items or raises IntakeError, and nothing else.
2. A valid plain restore request survives every envelope that can carry it, with its names
   and verdict unchanged.
"""

from __future__ import annotations

import base64
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handler.intake import IntakeError, Item, from_cloudevent, from_event, from_http
from handler.names import validate_name

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SHAPES = {"cloudevent", "cloudevent-batch", "eventgrid", "smn", "smn-trigger", "apig", "plain"}
CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "text/plain",
    "application/xml",
    "multipart/form-data",
]

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", fullmatch=True)

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)

# Keys and values our readers look at, so generated objects reach deep into every reader.
KEYS = [
    "events", "record", "smn", "event_source", "message", "message_id", "topic_urn", "type",
    "subscribe_url", "specversion", "id", "source", "data", "data_base64", "body",
    "isBase64Encoded", "httpMethod", "headers", "content-type", "ce-id", "ce-source",
    "ce-type", "ce-specversion", "graphName", "graph_name", "executionName", "execution_name",
    "execution_urn", "executionUrn", "graph_urn", "graphUrn", "execution_info", "executionInfo",
    "execution_state", "executionState", "status", "state",
]  # fmt: skip
TEXTS = [
    "Notification", "SubscriptionConfirmation", "notification", "smn", "1.0", "0.3", "HC.OBS",
    "FAILED", "SUCCESS", "g", "e", "../x", "", "urn:fgs:r:p:execution:g:e:d",
    "urn:fgs:r:p:graph:g", "urn:fgs:r:p:execution:g", "urn:x", "application/json",
    "application/cloudevents+json", '{"graphName": "g", "executionName": "e"}',
    '[{"graphName": "g", "executionName": "e"}, 1]', "e30=", "%%%", "true",
]  # fmt: skip
shaped_scalars = scalars | st.sampled_from(TEXTS)
shaped_values = st.recursive(
    shaped_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS), children, max_size=6)
    ),
    max_leaves=40,
)
any_json = json_values | shaped_values


def assert_well_formed(call, *args) -> None:
    """The call returns well-formed Items, or raises IntakeError; nothing else escapes."""
    try:
        items = call(*args)
    except IntakeError as error:
        assert error.status in (400, 413, 415)
        assert error.code and error.message
        assert len(error.message) < 600
        return
    assert isinstance(items, list) and items
    for item in items:
        assert isinstance(item, Item)
        assert item.verdict in ("restore", "skip", "reject")
        assert item.shape in SHAPES
        assert isinstance(item.event_id, str) and item.event_id
        assert len(item.event_id) <= 512 and item.event_id.isprintable()
        if item.verdict == "reject":
            assert item.reason and (item.graph_name, item.execution_name) == (None, None)
        else:
            validate_name(item.graph_name, "graphName")
            validate_name(item.execution_name, "executionName")
        if item.verdict == "restore":
            assert item.reason == ""


@SETTINGS
@given(any_json)
def test_any_json_event_yields_items_or_an_intake_error(value):
    assert_well_formed(from_event, value)


@SETTINGS
@given(any_json, st.sampled_from(CONTENT_TYPES), st.booleans())
def test_any_json_body_yields_items_or_an_intake_error(value, content_type, binary):
    headers = {} if content_type is None else {"Content-Type": content_type}
    if binary:
        headers |= {"ce-id": "1", "ce-source": "s", "ce-type": "t", "ce-specversion": "1.0"}
    assert_well_formed(from_http, json.dumps(value).encode(), headers)


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from(CONTENT_TYPES))
def test_any_bytes_yield_items_or_an_intake_error(body, content_type):
    headers = {} if content_type is None else {"content-type": content_type}
    assert_well_formed(from_http, body, headers)


@SETTINGS
@given(
    st.dictionaries(st.sampled_from(["id", "source", "type", "specversion"]), any_json),
    any_json | st.binary(max_size=100) | st.text(max_size=100),
)
def test_any_cloudevent_yields_items_or_an_intake_error(attributes, data):
    assert_well_formed(from_cloudevent, attributes, data)


@SETTINGS
@given(any_json, st.booleans())
def test_any_apig_body_yields_items_or_an_intake_error(value, encoded):
    body = json.dumps(value)
    event = {
        "body": base64.b64encode(body.encode()).decode() if encoded else body,
        "isBase64Encoded": encoded,
        "headers": {"Content-Type": "application/json"},
        "httpMethod": "POST",
    }
    assert_well_formed(from_event, event)


# ------------------------------------------------------------------- surviving the envelopes


@st.composite
def plain_requests(draw) -> tuple[dict, str, str]:
    """A valid plain restore request in one of its spellings, with its graph and execution."""
    graph, execution = draw(names), draw(names)
    urn = f"urn:fgs:cn-north-4:proj:execution:{graph}:{execution}:dom"
    spelling = draw(
        st.sampled_from(
            [
                {"graphName": graph, "executionName": execution},
                {"graph_name": graph, "execution_name": execution},
                {"execution_urn": urn},
                {"executionUrn": urn, "status": "FAILED"},
                {
                    "graph_urn": f"urn:fgs:cn-north-4:proj:graph:{graph}",
                    "execution_name": execution,
                },
                {"execution_info": {"execution_urn": urn, "execution_state": "failed"}},
            ]
        )
    )
    return spelling, graph, execution


def as_cloudevent(request: dict, event_id: str) -> dict:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "HC.OBS",
        "type": "com.huaweicloud.obs.workflow.execution.failed",
        "data": request,
    }


def as_smn_message(request: dict, message_id: str, kind: str = "Notification") -> dict:
    return {
        "type": kind,
        "message_id": message_id,
        "topic_urn": "urn:smn:cn-north-4:proj:failures",
        "message": json.dumps(request),
        "subject": "failed",
        "timestamp": "2026-11-27T18:41:29Z",
    }


def as_apig(body: str, encoded: bool, headers: dict) -> dict:
    return {
        "body": base64.b64encode(body.encode()).decode() if encoded else body,
        "isBase64Encoded": encoded,
        "headers": headers,
        "httpMethod": "POST",
        "path": "/",
        "queryStringParameters": {},
    }


def assert_restores(items: list[Item], graph: str, execution: str) -> Item:
    assert len(items) == 1, items
    item = items[0]
    assert (item.verdict, item.graph_name, item.execution_name) == ("restore", graph, execution)
    return item


@SETTINGS
@given(plain_requests(), st.text(min_size=1, max_size=30).filter(str.isprintable))
def test_a_plain_request_survives_cloudevent_and_eventgrid_envelopes(case, event_id):
    request, graph, execution = case
    body = json.dumps(request).encode()
    plain = assert_restores(from_http(body, {}), graph, execution)
    assert assert_restores(from_event(request), graph, execution).event_id == plain.event_id

    event = as_cloudevent(request, event_id)
    structured = {"Content-Type": "application/cloudevents+json"}
    assert_restores(from_http(json.dumps(event).encode(), structured), graph, execution)
    binary = {"ce-id": event_id, "ce-source": "HC.OBS", "ce-type": "t", "ce-specversion": "1.0"}
    if event_id.isascii():  # header values are ASCII on the wire
        assert_restores(from_http(body, binary), graph, execution)
    batch = {"Content-Type": "application/cloudevents-batch+json"}
    assert_restores(from_http(json.dumps([event]).encode(), batch), graph, execution)
    assert_restores(from_cloudevent(event, request), graph, execution)
    assert_restores(from_cloudevent(event, body), graph, execution)

    envelope = {"events": [event]}
    assert_restores(from_http(json.dumps(envelope).encode(), {}), graph, execution)
    assert_restores(from_event(envelope), graph, execution)


@SETTINGS
@given(plain_requests(), st.text(min_size=1, max_size=40).filter(str.isprintable))
def test_a_plain_request_survives_smn_message_and_smn_trigger(case, message_id):
    request, graph, execution = case
    message = as_smn_message(request, message_id)
    text_plain = {"Content-Type": "text/plain; charset=UTF-8"}
    by_http = assert_restores(from_http(json.dumps(message).encode(), text_plain), graph, execution)

    record = {
        "event_source": "smn",
        "event_version": "1.0",
        "smn": message | {"type": "notification"},
    }
    by_trigger = assert_restores(from_event({"record": [record]}), graph, execution)
    assert by_http.event_id == by_trigger.event_id


@SETTINGS
@given(plain_requests(), st.booleans(), st.sampled_from([{}, {"Content-Type": "application/json"}]))
def test_a_plain_request_survives_the_api_gateway_envelope(case, encoded, headers):
    request, graph, execution = case
    body = json.dumps(request)
    plain = assert_restores(from_http(body.encode(), headers), graph, execution)
    through_apig = assert_restores(from_event(as_apig(body, encoded, headers)), graph, execution)
    assert through_apig.event_id == plain.event_id
    assert through_apig.shape == "apig"


@SETTINGS
@given(plain_requests(), st.sampled_from(["SubscriptionConfirmation", "UnsubscribeConfirmation"]))
def test_a_restore_request_inside_an_smn_confirmation_is_never_restored(case, kind):
    request, _graph, _execution = case
    message = as_smn_message(request, "m-1", kind)
    items = from_http(json.dumps(message).encode(), {})
    assert [item.verdict for item in items] == ["skip"]
