"""Intake: delivery-level limits, identities and the rules that decide each request."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from handler.intake import (
    MAX_BODY_BYTES,
    MAX_DEPTH,
    MAX_ITEMS,
    IntakeError,
    Item,
    from_cloudevent,
    from_event,
    from_http,
)

ROOT = Path(__file__).resolve().parents[2]
JSON_HEADERS = {"Content-Type": "application/json"}
CE_TYPE = "com.huaweicloud.obs.workflow.execution.failed"


def request(graph: str = "video-transcode", execution: str = "exec-1", **extra) -> dict:
    return {"graphName": graph, "executionName": execution, **extra}


def post(value: object, headers: dict[str, str] | None = None) -> list[Item]:
    return from_http(json.dumps(value).encode(), JSON_HEADERS if headers is None else headers)


def cloudevent(data: object, event_id: str = "evt-1", source: str = "HC.OBS") -> dict:
    return {"specversion": "1.0", "id": event_id, "source": source, "type": CE_TYPE, "data": data}


def smn_message(message: object, message_id: str = "m-1", kind: str = "Notification") -> dict:
    return {
        "type": kind,
        "message_id": message_id,
        "topic_urn": "urn:smn:cn-north-4:p:topic",
        "message": json.dumps(message),
        "subject": "failed",
        "timestamp": "2026-11-27T18:41:29Z",
    }


def smn_trigger(message: object, message_id: str = "m-1") -> dict:
    inner = smn_message(message, message_id, kind="notification")
    return {"record": [{"event_source": "smn", "event_version": "1.0", "smn": inner}]}


def apig(body: str, headers: dict | None = None, encoded: bool = False) -> dict:
    return {
        "body": base64.b64encode(body.encode()).decode() if encoded else body,
        "isBase64Encoded": encoded,
        "headers": JSON_HEADERS if headers is None else headers,
        "httpMethod": "POST",
        "path": "/",
        "queryStringParameters": {},
    }


def rejects(callable_, *args) -> IntakeError:
    with pytest.raises(IntakeError) as caught:
        callable_(*args)
    return caught.value


def nested(depth: int) -> object:
    """``depth`` arrays inside each other, built without recursion."""
    value: object = []
    for _ in range(depth - 1):
        value = [value]
    return value


def only(items: list[Item]) -> Item:
    assert len(items) == 1, items
    return items[0]


# ----------------------------------------------------------------------------- the module


def test_importing_intake_loads_no_third_party_package():
    code = (
        "import sys, handler.intake\n"
        "heavy = {'cloudevents', 'requests', 'flask', 'functions_framework', 'werkzeug'}\n"
        "print(sorted(heavy & {name.split('.')[0] for name in sys.modules}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_intake_error_carries_status_code_and_message():
    error = rejects(from_http, b"{", JSON_HEADERS)
    assert (error.status, error.code) == (400, "NotJSON")
    assert str(error) == error.message
    assert "NotJSON" in repr(error)


# ---------------------------------------------------------------------------------- limits


def test_body_over_the_size_limit_is_413_before_it_is_decoded():
    body = b"\xff" * (MAX_BODY_BYTES + 1)  # not UTF-8 either: size is checked first
    error = rejects(from_http, body, {"Content-Type": "application/xml"})
    assert (error.status, error.code) == (413, "BodyTooLarge")


def test_body_at_exactly_the_size_limit_is_read():
    text = json.dumps(request())
    body = text.encode() + b" " * (MAX_BODY_BYTES - len(text))
    assert only(from_http(body, JSON_HEADERS)).verdict == "restore"


def test_event_over_the_size_limit_is_413():
    event = request(padding="x" * (MAX_BODY_BYTES + 1))
    assert rejects(from_event, event).code == "BodyTooLarge"


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda requests: requests, id="plain-array"),
        pytest.param(lambda requests: cloudevent(requests), id="cloudevent-data"),
        pytest.param(
            lambda requests: {"events": [cloudevent(r, f"e{i}") for i, r in enumerate(requests)]},
            id="eventgrid",
        ),
        pytest.param(lambda requests: smn_message(requests), id="smn-message"),
    ],
)
def test_more_than_max_items_after_unwrapping_is_413(wrap):
    requests = [request(execution=f"exec-{i}") for i in range(MAX_ITEMS + 1)]
    error = rejects(post, wrap(requests))
    assert (error.status, error.code) == (413, "TooManyItems")
    assert len(post(wrap(requests[:MAX_ITEMS]))) == MAX_ITEMS


def test_items_are_counted_across_smn_trigger_records():
    half = [request(execution=f"exec-{i}") for i in range(MAX_ITEMS // 2 + 1)]
    event = smn_trigger(half, "a")
    event["record"] += smn_trigger(half, "b")["record"]
    assert rejects(from_event, event).code == "TooManyItems"


def test_nesting_deeper_than_max_depth_is_400_too_deep():
    assert len(post(nested(MAX_DEPTH))) == 1  # an array of one (rejected) value is readable
    error = rejects(post, nested(MAX_DEPTH + 1))
    assert (error.status, error.code) == (400, "TooDeep")


def test_extremely_deep_json_is_too_deep_not_a_recursion_error():
    assert rejects(from_http, b"[" * 200_000, {}).code == "TooDeep"
    assert rejects(from_http, b'{"a":' * 50_000, {}).code == "TooDeep"


def test_deep_or_cyclic_event_values_are_too_deep():
    assert rejects(from_event, nested(50_000)).code == "TooDeep"
    cyclic: list = []
    cyclic.append(cyclic)
    assert rejects(from_event, cyclic).code == "TooDeep"
    assert rejects(from_cloudevent, {"id": "1", "source": "s"}, nested(100)).code == "TooDeep"


def test_body_that_is_not_utf8_is_400():
    error = rejects(from_http, b'{"graphName": "\xff"}', JSON_HEADERS)
    assert (error.status, error.code) == (400, "NotUTF8")


@pytest.mark.parametrize(
    "body", [b"{", b"graphName=g", b"<xml/>", b'{"a": NaN}', b'{"a": 1}{"b": 2}', b"1" * 5000]
)
def test_body_that_is_not_json_is_400(body):
    error = rejects(from_http, body, JSON_HEADERS)
    assert (error.status, error.code) == (400, "NotJSON")


def test_error_message_quotes_only_a_short_preview_of_the_input():
    error = rejects(from_http, b"\x00secret" + b"x" * 10_000, {})
    assert len(error.message) < 200
    assert error.message.isascii()
    assert "x" * 50 not in error.message


@pytest.mark.parametrize(
    "body",
    [b"", b"  \r\n ", b"[]", b'{"events": []}', b'{"record": []}', b"\xef\xbb\xbf"],
    ids=["empty", "whitespace", "array", "eventgrid", "smn-trigger", "bom-only"],
)
def test_an_empty_delivery_is_400(body):
    error = rejects(from_http, body, JSON_HEADERS)
    assert (error.status, error.code) == (400, "EmptyDelivery")


def test_an_empty_batch_or_empty_apig_body_is_an_empty_delivery():
    batch = {"Content-Type": "application/cloudevents-batch+json"}
    assert rejects(from_http, b"[]", batch).code == "EmptyDelivery"
    assert rejects(from_event, apig("")).code == "EmptyDelivery"


@pytest.mark.parametrize(
    "content_type",
    [
        "application/xml",
        "multipart/form-data; boundary=xyz",
        "application/x-www-form-urlencoded",
        "text/html; charset=utf-8",
        "image/png",
    ],
)
def test_a_content_type_that_cannot_be_json_is_415(content_type):
    error = rejects(from_http, json.dumps(request()).encode(), {"Content-Type": content_type})
    assert (error.status, error.code) == (415, "UnsupportedMediaType")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Content-Type": "application/json; charset=utf-8"},
        {"CONTENT-TYPE": "Application/JSON"},
        {"content-type": "application/vnd.example.restore+json"},
        {"Content-Type": "application/cloudevents-batch+json"},
        {"Content-Type": "text/plain; charset=UTF-8"},
    ],
)
def test_json_capable_content_types_are_accepted(headers):
    assert only(post(request(), headers)).verdict == "restore"


def test_a_body_declared_a_structured_cloudevent_must_be_one():
    item = only(post(request(), {"Content-Type": "application/cloudevents+json"}))
    assert (item.verdict, item.shape) == ("reject", "cloudevent")
    assert item.reason.startswith("not a CloudEvent: missing attribute(s) specversion, id")


def test_an_envelope_whose_list_is_not_a_list_is_400():
    assert rejects(post, {"events": {"id": "1"}}).code == "BadEnvelope"
    assert rejects(from_event, {"record": "smn"}).code == "BadEnvelope"


def test_apig_body_flagged_base64_that_is_not_base64_is_400():
    error = rejects(
        from_event, apig("not base64 at all!", encoded=False) | {"isBase64Encoded": True}
    )
    assert (error.status, error.code) == (400, "BadBase64")


def test_apig_inner_body_problems_fail_the_delivery():
    assert rejects(from_event, apig("{not json")).code == "NotJSON"
    assert rejects(from_event, apig("{}", {"Content-Type": "application/xml"})).code == (
        "UnsupportedMediaType"
    )
    too_big = json.dumps(request(padding="x" * MAX_BODY_BYTES))
    assert rejects(from_event, apig(too_big, encoded=True)).code == "BodyTooLarge"


@pytest.mark.parametrize("event", [object(), {1: "a"}, {"a": {b"x"}}, {"n": 1 << 5000}])
def test_an_event_that_is_not_json_is_400(event):
    assert rejects(from_event, event).code == "NotJSON"


def test_a_body_of_the_wrong_python_type_is_400_not_a_type_error():
    assert rejects(from_http, 12, {}).code == "NotJSON"
    assert rejects(from_http, None, {}).code == "EmptyDelivery"


# ------------------------------------------------------------------------------ identities


def plain_identity(graph: str, execution: str) -> str:
    """The documented identity of a plain restore request."""
    canonical = json.dumps(
        {"graph": graph, "execution": execution}, sort_keys=True, separators=(",", ":")
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def test_plain_identity_is_the_hash_of_the_normalised_request():
    assert only(post(request("g", "e"))).event_id == plain_identity("g", "e")


def test_plain_identity_is_the_same_for_every_spelling_and_envelope_of_one_request():
    urn = "urn:fgs:cn-north-4:p:execution:g-1:e-1:d"
    spellings = [
        {"graphName": "g-1", "executionName": "e-1"},
        {"executionName": "e-1", "graphName": "g-1", "executionState": "FAILED"},
        {"graph_name": "g-1", "execution_name": "e-1"},
        {"execution_urn": urn},
        {"executionUrn": urn},
        {"graph_urn": "urn:fgs:cn-north-4:p:graph:g-1", "execution_name": "e-1"},
        {"execution_info": {"execution_urn": urn, "execution_state": "FAILED"}},
    ]
    identities = {only(post(body)).event_id for body in spellings}
    identities |= {item.event_id for item in post(spellings)}
    identities |= {only(from_event(body)).event_id for body in spellings}
    identities |= {only(from_event(apig(json.dumps(body)))).event_id for body in spellings}
    assert identities == {plain_identity("g-1", "e-1")}


def test_plain_identity_is_stable_across_processes():
    code = (
        "import json, sys\n"
        "from handler.intake import from_http\n"
        'print(from_http(b\'{"executionName": "e", "graphName": "g"}\', {})[0].event_id)\n'
    )
    for seed in ("0", "12345"):
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        )
        assert result.stdout.strip() == plain_identity("g", "e")


def test_different_requests_and_verdicts_have_different_identities():
    restore = only(post(request("g", "e"))).event_id
    other = only(post(request("g", "e2"))).event_id
    skipped = only(post(request("g", "e", status="SUCCESS"))).event_id
    looks_normalised = only(post({"graph": "g", "execution": "e"}))  # unknown keys: rejected
    assert looks_normalised.verdict == "reject"
    assert len({restore, other, skipped, looks_normalised.event_id}) == 4


def test_cloudevent_identity_is_its_source_and_id_in_the_ce_family():
    item = only(post(cloudevent(request(), "abc-1", "/custom/watcher")))
    assert item.event_id == "ce:%2Fcustom%2Fwatcher:abc-1"
    assert item.source == "/custom/watcher"


def test_each_request_of_one_event_gets_an_index_suffix():
    items = post(cloudevent([request(execution="a"), request(execution="b"), 3], "x"))
    assert [item.event_id for item in items] == ["ce:HC.OBS:x#0", "ce:HC.OBS:x#1", "ce:HC.OBS:x#2"]
    assert [item.verdict for item in items] == ["restore", "restore", "reject"]


def test_smn_identity_is_the_message_id_however_it_arrives():
    by_http = only(from_http(json.dumps(smn_message(request(), "m-9")).encode(), {}))
    by_trigger = only(from_event(smn_trigger(request(), "m-9")))
    assert by_http.event_id == by_trigger.event_id == "smn:m-9"
    assert (by_http.shape, by_trigger.shape) == ("smn", "smn-trigger")
    assert by_http.source == "urn:smn:cn-north-4:p:topic"


def test_an_unprintable_identity_is_percent_encoded_and_a_very_long_one_hashed_in_its_family():
    assert only(post(cloudevent(request(), "a\nb"))).event_id == "ce:HC.OBS:a%0Ab"
    assert only(post(cloudevent(request(), "é"))).event_id == "ce:HC.OBS:%C3%A9"
    first = only(post(cloudevent(request(), "x" * 600))).event_id
    again = only(post(cloudevent(request(), "x" * 600))).event_id
    assert first == again
    assert first.startswith("ce:sha256=")
    assert len(first) == len("ce:sha256=") + 64


def test_rejected_items_still_have_an_identity():
    items = post([1, "x", None, {}, {"graphName": "../x", "executionName": "e"}])
    assert all(item.verdict == "reject" and item.event_id.startswith("sha256:") for item in items)
    assert len({item.event_id for item in items}) == len(items)


def test_a_cloudevent_without_id_is_rejected_with_a_hash_identity_not_an_invented_one():
    event = cloudevent(request())
    del event["id"]
    first = only(post([event]))
    assert first.verdict == "reject"
    assert "missing attribute(s) id" in first.reason
    assert first.event_id == only(post([event])).event_id


# ----------------------------------------------------------------------------------- rules


@pytest.mark.parametrize("state", ["FAILED", "failed", "fail", "Failed", "FAIL", " failed "])
def test_a_failure_state_in_any_spelling_restores(state):
    for key in ("execution_state", "executionState", "status", "state"):
        assert only(post(request(**{key: state}))).verdict == "restore"


@pytest.mark.parametrize("state", ["SUCCESS", "RUNNING", "succeeded", "", 0, True, ["FAILED"]])
def test_any_other_state_skips_with_a_reason(state):
    item = only(post(request(execution_state=state)))
    assert item.verdict == "skip"
    assert item.reason.startswith("execution state is ")
    assert item.reason.endswith(", not a failure")
    assert (item.graph_name, item.execution_name) == ("video-transcode", "exec-1")


def test_state_inside_execution_info_counts_too():
    body = {
        "execution_info": {
            "execution_name": "e",
            "graph_urn": "urn:fgs:r:p:graph:g",
            "execution_state": "SUCCESS",
        }
    }
    item = only(post(body))
    assert (item.verdict, item.reason) == ("skip", "execution state is SUCCESS, not a failure")


def test_a_missing_or_null_state_restores():
    assert only(post(request())).verdict == "restore"
    assert only(post(request(status=None))).verdict == "restore"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (request(graph="a/../b"), "invalid graphName"),
        (request(execution="ex ample/../x"), "invalid executionName"),
        (request(execution="x" * 65), "invalid executionName"),
        (request(graph=""), "invalid graphName"),
        (request(graph=7), "invalid graphName"),
        ({"executionName": "e"}, "missing graphName"),
        ({"graphName": "g", "executionName": None}, "missing executionName"),
        ({"graph_urn": "urn:fgs:r:p:graph:g"}, "missing executionName"),
        ({"execution_urn": "urn:fgs:r:p:execution:g:-bad:d"}, "invalid executionName"),
    ],
)
def test_a_bad_or_missing_name_rejects_the_item_naming_the_field(body, field):
    item = only(post(body))
    assert item.verdict == "reject"
    assert item.reason.startswith(field)
    assert (item.graph_name, item.execution_name) == (None, None)


@pytest.mark.parametrize(
    ("urn", "problem"),
    [
        ("urn:aws:r:p:execution:g:e:d", "does not start with 'urn:fgs:'"),
        ("execution:g:e", "does not start with 'urn:fgs:'"),
        ("urn:fgs:r:p:graph:g", "has kind 'graph', expected 'execution'"),
        ("urn:fgs:r:p:execution:g:e", "is not of the form"),
        ("urn:fgs:r:p:execution:g:e:d:extra", "is not of the form"),
        ("urn:fgs:r::execution:g:e:d", "is not of the form"),
        (42, "must be a string, not a number"),
    ],
)
def test_a_malformed_execution_urn_rejects_the_item(urn, problem):
    item = only(post({"execution_urn": urn}))
    assert item.verdict == "reject"
    assert item.reason.startswith("malformed execution_urn: ")
    assert problem in item.reason


def test_a_malformed_graph_urn_rejects_the_item():
    item = only(post({"graphUrn": "urn:fgs:r:p:execution:g:e:d", "executionName": "e"}))
    assert item.verdict == "reject"
    assert "malformed graphUrn" in item.reason


def test_conflicting_names_reject_the_item():
    urn = "urn:fgs:r:p:execution:g:e:d"
    cases = [
        ({"execution_urn": urn, "executionName": "other"}, "conflicting executionName"),
        ({"execution_urn": urn, "graphName": "other"}, "conflicting graphName"),
        (
            {"graph_urn": "urn:fgs:r:p:graph:g", "graph_name": "h", "executionName": "e"},
            "conflicting graphName",
        ),
    ]
    for body, reason in cases:
        item = only(post(body))
        assert (item.verdict, item.reason.split(":")[0]) == ("reject", reason)
    agreeing = {"execution_urn": urn, "graphName": "g", "execution_name": "e"}
    assert only(post(agreeing)).verdict == "restore"


def test_one_bad_item_never_spoils_its_neighbours():
    good = request(execution="good")
    for delivery in (
        [good, 5, {"graphName": "../x", "executionName": "e"}, good],
        {"events": [cloudevent(good, "1"), "junk", cloudevent(None, "3"), cloudevent(good, "4")]},
    ):
        verdicts = [item.verdict for item in post(delivery)]
        assert verdicts == ["restore", "reject", "reject", "restore"]


def test_a_value_that_is_not_an_object_is_rejected_at_its_position():
    items = post([request(), 3.5, [request()], True])
    assert [item.verdict for item in items] == ["restore", "reject", "reject", "reject"]
    assert "item #2 is an array" in items[2].reason
    assert only(post("just a string")).reason == "expected a JSON object or array, got a string"


def test_an_execution_info_that_is_not_an_object_rejects():
    item = only(post({"execution_info": "FAILED", "graphName": "g", "executionName": "e"}))
    assert (item.verdict, item.reason) == (
        "reject",
        "execution_info must be an object, not a string",
    )


def test_restore_and_skip_items_carry_valid_names_and_reject_items_none():
    for item in post([request(), request(state="RUNNING"), request(graph="-x")]):
        if item.verdict == "reject":
            assert (item.graph_name, item.execution_name) == (None, None)
        else:
            assert (item.graph_name, item.execution_name) == ("video-transcode", "exec-1")


def test_smn_confirmations_are_skipped_and_never_restore():
    url = "https://smn.cn-north-4.myhuaweicloud.com/smn/subscribe?token=abc"
    for kind, words in (
        ("SubscriptionConfirmation", "subscription confirmation"),
        ("UnsubscribeConfirmation", "unsubscribe confirmation"),
    ):
        message = smn_message(request(), kind=kind) | {"subscribe_url": url}
        item = only(post(message, {"Content-Type": "text/plain"}))
        assert (item.verdict, item.graph_name, item.execution_name) == ("skip", None, None)
        assert words in item.reason
        assert url in item.reason


def test_smn_notification_with_a_message_that_is_not_json_is_rejected():
    message = smn_message(None) | {"message": "execution exec-1 failed"}
    item = only(post(message))
    assert (item.verdict, item.event_id) == ("reject", "smn:m-1")
    assert "SMN message is not JSON" in item.reason


def test_smn_trigger_record_from_another_source_is_rejected():
    event = smn_trigger(request())
    event["record"].append({"event_source": "obs", "obs": {}})
    items = from_event(event)
    assert [item.verdict for item in items] == ["restore", "reject"]
    assert "event_source 'obs'" in items[1].reason


def test_apig_envelope_reads_header_names_case_insensitively():
    ce_headers = {"CE-ID": "b-1", "Ce-Source": "HC.OBS", "ce-SPECVERSION": "1.0", "Ce-Type": "t"}
    item = only(from_event(apig(json.dumps(request()), ce_headers)))
    assert (item.shape, item.event_id, item.verdict) == ("apig", "ce:HC.OBS:b-1", "restore")


def test_apig_envelope_nested_in_apig_envelope_is_not_unwrapped_again():
    inner = apig(json.dumps(request()))
    item = only(from_event(apig(json.dumps(inner))))
    assert (item.shape, item.verdict) == ("apig", "reject")
    assert "inside another envelope" in item.reason


def test_apig_envelope_posted_to_the_http_url_is_unwrapped():
    item = only(post(apig(json.dumps(request()), encoded=True)))
    assert (item.shape, item.verdict) == ("apig", "restore")


def test_binary_cloudevent_with_an_unknown_specversion_is_rejected_with_its_identity():
    headers = {"ce-id": "1", "ce-source": "s", "ce-type": "t", "ce-specversion": "9.9"}
    item = only(from_http(json.dumps(request()).encode(), headers))
    assert (item.verdict, item.event_id) == ("reject", "ce:s:1")
    assert item.reason.startswith("invalid CloudEvent")


def test_cloudevent_with_bad_data_base64_is_rejected():
    event = cloudevent(None) | {"data_base64": "%%%"}
    del event["data"]
    item = only(post(event, {"Content-Type": "application/cloudevents+json"}))
    assert (item.verdict, item.reason) == ("reject", "CloudEvent data_base64 is not valid base64")


def test_cloudevent_without_data_or_with_empty_array_data_is_rejected():
    assert only(post(cloudevent(None))).reason == "CloudEvent data is missing"
    assert only(post(cloudevent([]))).reason == "CloudEvent data is an empty array"


@pytest.mark.parametrize(
    "data",
    [
        request(),
        json.dumps(request()),
        json.dumps(request()).encode(),
        bytearray(json.dumps(request()).encode()),
    ],
    ids=["dict", "str", "bytes", "bytearray"],
)
def test_from_cloudevent_reads_data_in_every_form_the_framework_leaves_it(data):
    item = only(from_cloudevent({"id": "1", "source": "HC.OBS", "type": CE_TYPE}, data))
    assert (item.verdict, item.event_id, item.shape) == ("restore", "ce:HC.OBS:1", "cloudevent")


def test_from_cloudevent_rejects_unreadable_data_but_keeps_the_identity():
    attributes = {"id": "1", "source": "HC.OBS", "type": CE_TYPE}
    for data, reason in ((b"\xff\xfe", "not UTF-8"), ("oops", "not JSON"), (None, "missing")):
        item = only(from_cloudevent(attributes, data))
        assert (item.verdict, item.event_id) == ("reject", "ce:HC.OBS:1")
        assert reason in item.reason


def test_from_cloudevent_without_identity_rejects_with_a_hash():
    item = only(from_cloudevent({"source": "HC.OBS", "type": CE_TYPE}, request()))
    assert item.verdict == "reject"
    assert item.event_id.startswith("sha256:")


def test_from_cloudevent_accepts_the_sdk_event_as_attributes():
    from cloudevents.http import CloudEvent

    event = CloudEvent({"id": "sdk-1", "source": "HC.OBS", "type": CE_TYPE}, request())
    item = only(from_cloudevent(event, event.get_data()))
    assert (item.verdict, item.event_id) == ("restore", "ce:HC.OBS:sdk-1")


def test_from_cloudevent_data_too_large_is_413():
    big = "x" * (MAX_BODY_BYTES + 1)
    assert rejects(from_cloudevent, {"id": "1", "source": "s"}, big).code == "BodyTooLarge"


def test_from_event_reads_text_and_bytes_as_an_http_body():
    assert only(from_event(json.dumps(request()))).verdict == "restore"
    assert only(from_event(json.dumps(request()).encode())).verdict == "restore"
    assert rejects(from_event, b"").code == "EmptyDelivery"


def test_odd_headers_objects_count_as_no_headers():
    body = json.dumps(request()).encode()
    for headers in (None, 5, [("Content-Type", "application/xml")], {1: 2, "x": None}):
        assert only(from_http(body, headers)).verdict == "restore"
