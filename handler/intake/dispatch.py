"""The three entry points and the dispatcher: which envelope a delivery is, and who reads it.

The CloudEvents content modes are decided by the HTTP headers first (``Content-Type`` and
``ce-*``); any other delivery is recognised by its content, by the keys only one envelope
has. The envelope modules read the rest; every answer is collected by one
:class:`~handler.intake.items.ItemCollector`, so the item limit holds across envelopes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handler.intake import apigateway
from handler.intake.cloud_events import (
    CE_BATCH,
    CE_BINARY_HEADERS,
    CE_REQUIRED,
    CE_STRUCTURED,
    read_batch,
    read_binary,
    read_decoded,
    read_structured,
    sdk_problem,
)
from handler.intake.eventgrid import read_eventgrid
from handler.intake.identity import rejected_value
from handler.intake.items import (
    APIG,
    CLOUDEVENT,
    CLOUDEVENT_BATCH,
    EVENTGRID,
    PLAIN,
    SMN,
    SMN_TRIGGER,
    IntakeError,
    Item,
    ItemCollector,
)
from handler.intake.limits import (
    MAX_BODY_BYTES,
    body_bytes,
    check_value,
    parse_document,
    too_large,
)
from handler.intake.messages import kind, preview
from handler.intake.plain import request_item
from handler.intake.smn import is_smn_message, read_smn, read_smn_trigger

JSON_MEDIA_TYPES = frozenset({"", "application/json", "text/json", "text/plain"})


def from_http(body: bytes, headers: Mapping[str, str]) -> list[Item]:
    """Read a delivery to the function's HTTP URL: the raw request body and its headers.

    Header names are matched case-insensitively. Every shape the intake knows is accepted
    here, including FunctionGraph trigger events posted by hand. Returns one Item per
    request, never an empty list; raises :class:`IntakeError` when nothing can be read.
    """
    return _read_http(body, _lower_headers(headers), allow_apig=True)


def from_event(event: object) -> list[Item]:
    """Read the ``event`` a FunctionGraph event function is called with (decoded JSON).

    Besides every HTTP shape this accepts the SMN trigger's ``{"record": [...]}`` and the API
    Gateway trigger's request envelope. A ``str`` or ``bytes`` event is read as an HTTP body
    without headers, but never unwrapped as an API Gateway envelope: the gateway delivers
    objects, and the entry point checks the token only of an event that is one
    (:func:`~handler.intake.apigateway.is_apig_request`). Returns one Item per request or
    raises :class:`IntakeError`.
    """
    if isinstance(event, (str, bytes, bytearray, memoryview)):
        return _read_http(event, {}, allow_apig=False)
    check_value(event)
    out = ItemCollector()
    _read_value(event, out, allow_apig=True)
    return out.result()


def from_cloudevent(attributes: Mapping[str, Any], data: Any) -> list[Item]:
    """Read a CloudEvent that functions-framework has already decoded.

    ``attributes`` holds at least ``id``, ``source`` and ``type``; ``data`` is the event's
    payload as the framework left it (dict, list, JSON text as str or bytes, or None). The
    payload is read for restore requests exactly like CloudEvent data elsewhere. Returns one
    Item per request or raises :class:`IntakeError`.
    """
    out = ItemCollector()
    read_decoded(attributes, data, out)
    return out.result()


def check_cloudevent_request(body: bytes, headers: Mapping[str, str]) -> None:
    """Refuse what the CloudEvent target's framework could not read as one CloudEvent.

    functions-framework parses the request with the ``cloudevents`` SDK before the function
    runs and answers 500 when the SDK raises anything but "not a CloudEvent" - a deep body's
    ``RecursionError``, a batch. So a request to that target passes the same limits as every
    other delivery first (size, media type, UTF-8, JSON, depth) and must then be one event:
    binary mode with the four required ``ce-`` headers, or structured mode, an object with
    the four required attributes (the SDK would invent a missing ``id``: a random identity,
    never deduplicated); and the SDK must read it. A batch carries several events, which
    the framework cannot hand over: 415, sent to the HTTP target instead. Raises
    :class:`IntakeError`; returns None when the framework can go ahead.
    """
    lowered = _lower_headers(headers)
    raw = body_bytes(body)
    if len(raw) > MAX_BODY_BYTES:
        raise too_large("body", len(raw))
    if _media_type(lowered.get("content-type", "")) == CE_BATCH:
        raise IntakeError(
            415,
            "UnsupportedMediaType",
            "the CloudEvent target takes one event per request (structured or binary mode); "
            "post a CloudEvents batch to the HTTP target",
        )
    if "ce-specversion" in lowered:  # what makes the SDK read the request in binary mode
        missing = [name for name in CE_BINARY_HEADERS if name not in lowered]
        if raw.strip():
            parse_document(raw)
    else:
        value = parse_document(raw)
        if not (isinstance(value, dict) and "specversion" in value):
            raise IntakeError(
                400, "NotACloudEvent", "the body is not a CloudEvent in structured or binary mode"
            )
        missing = [name for name in CE_REQUIRED if name not in value]
    if missing:
        raise IntakeError(
            400,
            "IncompleteCloudEvent",
            f"CloudEvent without the required attribute(s) {', '.join(missing)}",
        )
    from cloudevents.http import from_http as ce_from_http

    try:
        ce_from_http(lowered, raw)
    except Exception as exc:  # the SDK raises its own, TypeError and others on odd values
        raise IntakeError(400, "BadCloudEvent", sdk_problem(exc)) from None


def _read_http(body: object, headers: dict[str, str], *, allow_apig: bool) -> list[Item]:
    """Check an HTTP body against every delivery-level limit, then read what it carries."""
    raw = body_bytes(body)
    if len(raw) > MAX_BODY_BYTES:
        raise too_large("body", len(raw))
    media = _media_type(headers.get("content-type", ""))
    value = parse_document(raw)
    out = ItemCollector()
    _read_delivery(value, headers, media, out, allow_apig=allow_apig)
    return out.result()


def _media_type(content_type: str) -> str:
    """The bare media type, after refusing one that cannot hold JSON (415).

    SMN posts its JSON as ``text/plain`` and many senders omit the header, so both are read.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media in JSON_MEDIA_TYPES or (media.startswith("application/") and media.endswith("+json")):
        return media
    raise IntakeError(
        415,
        "UnsupportedMediaType",
        f"content type {preview(media)} cannot carry JSON; send application/json",
    )


def _lower_headers(headers: object) -> dict[str, str]:
    """Headers as a dict with lower-case names; the first of repeated headers wins.

    Anything that is not a mapping of strings (a broken test harness, an APIG event without
    headers) counts as no headers rather than an error.
    """
    items = getattr(headers, "items", None)
    if not callable(items):
        return {}
    try:
        pairs = list(items())
    except Exception:  # a foreign headers object; its failure must not fail the delivery
        return {}
    lowered: dict[str, str] = {}
    for pair in pairs:
        if isinstance(pair, tuple) and len(pair) == 2:
            name, value = pair
            if isinstance(name, str) and isinstance(value, str):
                lowered.setdefault(name.lower(), value)
    return lowered


def _read_delivery(
    value: Any, headers: dict[str, str], media: str, out: ItemCollector, *, allow_apig: bool
) -> None:
    """Let the CloudEvents content modes decide first; otherwise recognise the shape by content."""
    if media == CE_BATCH and isinstance(value, list):
        read_batch(value, out)
    elif media == CE_STRUCTURED and isinstance(value, dict):
        read_structured(value, CLOUDEVENT, out)
    elif media not in (CE_STRUCTURED, CE_BATCH) and any(h in headers for h in CE_BINARY_HEADERS):
        read_binary(headers, value, out)
    else:
        _read_value(value, out, allow_apig=allow_apig)


def _read_value(value: Any, out: ItemCollector, *, allow_apig: bool) -> None:
    """Read a decoded top-level value whose shape only its content tells."""
    if isinstance(value, (list, tuple)):
        _read_array(value, out)
        return
    if not isinstance(value, dict):
        reason = f"expected a JSON object or array, got {kind(value)}"
        out.add(rejected_value(value, PLAIN, reason))
        return
    shape = _classify(value)
    if shape == CLOUDEVENT:
        read_structured(value, CLOUDEVENT, out)
    elif shape == EVENTGRID:
        read_eventgrid(value, out)
    elif shape == SMN_TRIGGER:
        read_smn_trigger(value, out)
    elif shape == SMN:
        read_smn(value, SMN, out)
    elif shape == APIG and allow_apig:
        _read_apig(value, out)
    elif shape == APIG:
        reason = "an API Gateway envelope is not read inside another envelope or as text"
        out.add(rejected_value(value, APIG, reason))
    else:
        out.add(request_item(value, None, PLAIN, ""))


def _classify(value: dict[str, Any]) -> str:
    """Name the envelope a top-level JSON object is, by the keys only that envelope has."""
    if "specversion" in value:
        return CLOUDEVENT
    if "events" in value:
        return EVENTGRID
    if "record" in value:
        return SMN_TRIGGER
    if is_smn_message(value):
        return SMN
    if apigateway.is_apig_request(value):
        return APIG
    return PLAIN


def _read_array(values: list[Any] | tuple[Any, ...], out: ItemCollector) -> None:
    """A top-level array: each element a plain request or a structured CloudEvent."""
    if not values:
        raise IntakeError(400, "EmptyDelivery", "the array is empty")
    for index, element in enumerate(values):
        if isinstance(element, dict) and "specversion" in element:
            read_structured(element, CLOUDEVENT_BATCH, out)
        elif isinstance(element, dict):
            out.add(request_item(element, None, PLAIN, ""))
        else:
            reason = f"item #{index} is {kind(element)}, not an object"
            out.add(rejected_value(element, PLAIN, reason))


def _read_apig(envelope: dict[str, Any], out: ItemCollector) -> None:
    """API Gateway trigger: unwrap the HTTP request and read it as if posted directly.

    The inner body is the delivery, so its size/JSON/depth problems fail the delivery. It is
    not unwrapped a second time: nested envelopes would let a small body cost many parses.
    """
    raw = apigateway.request_body(envelope)
    headers = _lower_headers(envelope.get("headers"))
    for item in _read_http(raw, headers, allow_apig=False):
        out.add(item._replace(shape=APIG))
