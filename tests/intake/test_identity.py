"""Identities: each family has its own namespace, and no two different requests share one.

A shared identity makes the second request a ``duplicate`` of the first, so nothing restores
it; these tests build the identities the way deliveries do (through the intake's entry
points and the sweep's :class:`~handler.sweep.Failure`) and look for collisions.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from handler.intake import from_cloudevent, from_http
from handler.sweep import Failure

REQUEST = {"graphName": "etl", "executionName": "run-1"}
CE_TYPE = "com.huaweicloud.obs.workflow.execution.failed"


def cloudevent_id(source: str, event_id: str, data: object = REQUEST) -> str:
    """The identity of a structured CloudEvent posted to the function's URL."""
    event = {"specversion": "1.0", "id": event_id, "source": source, "type": CE_TYPE, "data": data}
    body = json.dumps(event).encode()
    (item,) = from_http(body, {"Content-Type": "application/cloudevents+json"})
    return item.event_id


def posted_id(body: dict) -> str:
    (item,) = from_http(json.dumps(body).encode(), {})
    return item.event_id


def test_a_cloudevent_source_and_id_cannot_be_shifted_into_one_another():
    assert cloudevent_id("orders/eu", "7") != cloudevent_id("orders", "eu/7")
    assert cloudevent_id("a:b", "c") != cloudevent_id("a", "b:c")


def test_no_cloudevent_can_take_the_identity_of_a_failure_a_sweep_found():
    failure = Failure("etl", "run-1", None, "2026-11-27T18:41:28Z", None)
    swept = failure.item().event_id
    forged = cloudevent_id("sweep:etl", "run-1@2026-11-27T18:41:28Z")
    assert swept != forged
    assert swept.startswith("sweep:") and forged.startswith("ce:")


def test_no_cloudevent_can_take_an_smn_message_or_a_plain_request_identity():
    smn = {"type": "Notification", "message_id": "m/1", "message": json.dumps(REQUEST)}
    assert posted_id(smn) != cloudevent_id("smn:m", "1")
    assert posted_id({**REQUEST, "eventId": "t/42"}) != cloudevent_id("request:t", "42")


def test_an_event_id_ending_in_an_index_is_not_the_element_of_an_array_event():
    (element, _) = from_http(
        json.dumps(
            {
                "specversion": "1.0",
                "id": "x",
                "source": "s",
                "type": CE_TYPE,
                "data": [REQUEST, REQUEST],
            }
        ).encode(),
        {"Content-Type": "application/cloudevents+json"},
    )
    assert element.event_id != cloudevent_id("s", "x#0")


def test_a_reused_identity_and_an_operator_identity_stay_in_their_families():
    from handler.intake.identity import cli_identity, reused_identity

    assert reused_identity("ce:s:7", "etl", "run-2") == "ce:s:7@etl/run-2"
    assert reused_identity("ce:s:7", "etl", "run-2") != cloudevent_id("s", "7@etl/run-2")
    assert cli_identity("etl", "run-1", "t") == "cli:etl:run-1:t"
    assert cli_identity("etl", "run-1", "t") != cloudevent_id("cli:etl", "run-1:t")


texts = st.text(min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(first=st.tuples(texts, texts), second=st.tuples(texts, texts))
def test_two_different_cloudevents_never_share_an_identity(first, second):
    attributes = [{"source": s, "id": i, "type": CE_TYPE} for s, i in (first, second)]
    ids = [from_cloudevent(a, REQUEST)[0].event_id for a in attributes]
    assert (ids[0] == ids[1]) == (first == second)
    for identity in ids:
        assert identity.startswith("ce:")
        assert len(identity) <= 512 and identity.isascii() and identity.isprintable()


def test_the_usual_ids_stay_readable():
    assert cloudevent_id("HC.OBS", "5b0e8f2a-6c1d") == "ce:HC.OBS:5b0e8f2a-6c1d"
    assert posted_id({**REQUEST, "eventId": "ticket-42"}) == "request:ticket-42"
    smn = {"type": "Notification", "message_id": "a1b2c3", "message": json.dumps(REQUEST)}
    assert posted_id(smn) == "smn:a1b2c3"
