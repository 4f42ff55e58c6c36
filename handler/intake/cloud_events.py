"""CloudEvents in every content mode: structured, binary, batch, and decoded by a framework.

An event's identity is ``ce:<source>:<id>``, the pair the CloudEvents spec makes unique
(:func:`~handler.intake.identity.cloudevent_identity`); its ``data`` (an object, an array of
objects, or JSON text or base64 carrying them) holds the restore requests. The
``cloudevents`` SDK validates the attributes; it is imported inside the functions that need
it, on first use, so importing the intake stays standard-library only.
This module is not named ``cloudevents`` so that it can never be mistaken for the SDK.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from handler.intake.identity import cloudevent_identity, rejected_value
from handler.intake.items import (
    CLOUDEVENT,
    CLOUDEVENT_BATCH,
    REJECT,
    IntakeError,
    Item,
    ItemCollector,
)
from handler.intake.limits import MAX_BODY_BYTES, check_value, nested_payload, too_large
from handler.intake.messages import kind, loggable, nonempty_str, preview
from handler.intake.plain import read_payload

CE_STRUCTURED = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"
CE_REQUIRED = ("specversion", "id", "source", "type")
CE_BINARY_HEADERS = tuple(f"ce-{name}" for name in CE_REQUIRED)


def read_decoded(attributes: Mapping[str, Any], data: Any, out: ItemCollector) -> None:
    """A CloudEvent that functions-framework has already decoded (see ``from_cloudevent``)."""
    attrs = _attributes(attributes)
    if isinstance(data, (str, bytes, bytearray, memoryview)) and len(data) > MAX_BODY_BYTES:
        raise too_large("CloudEvent data", len(data))
    if data is None or isinstance(data, (str, bytes, bytearray, memoryview)):
        payload, problem = nested_payload(data, "CloudEvent data")
    else:
        check_value(data, "CloudEvent data")
        payload, problem = data, None
    raw = {"attributes": _printable_attributes(attrs), "data": payload}
    _read_event(attrs, payload, problem, CLOUDEVENT, raw, out)


def read_batch(events: list[Any], out: ItemCollector) -> None:
    """CloudEvents batch mode: every element must be a structured CloudEvent."""
    if not events:
        raise IntakeError(400, "EmptyDelivery", "the CloudEvents batch is empty")
    read_each(events, CLOUDEVENT_BATCH, "batch item #{}", out)


def read_each(events: list[Any], shape: str, position: str, out: ItemCollector) -> None:
    """Each element a structured CloudEvent; one that is no object is rejected on its own.

    ``position`` names an element in the reason, ``{}`` standing for its index.
    """
    for index, event in enumerate(events):
        if isinstance(event, dict):
            read_structured(event, shape, out)
        else:
            reason = f"{position.format(index)} is {kind(event)}, not a CloudEvent"
            out.add(rejected_value(event, shape, reason))


def read_structured(event: dict[str, Any], shape: str, out: ItemCollector) -> None:
    """One structured-mode CloudEvent (a JSON object), validated by the cloudevents SDK.

    The SDK invents ``id`` and ``specversion`` when they are missing, which would give the
    event a random identity, so the required attributes are checked here first.
    """
    missing = [name for name in CE_REQUIRED if name not in event]
    if missing:
        reason = f"not a CloudEvent: missing attribute(s) {', '.join(missing)}"
        out.add(rejected_value(event, shape, reason))
        return
    from cloudevents.http import from_dict

    try:
        parsed = from_dict(event)
    except Exception as exc:  # the SDK raises its own, TypeError and others on odd values
        _read_event(event, None, sdk_problem(exc), shape, event, out)
        return
    payload, problem = _structured_payload(event, parsed.get_data())
    _read_event(dict(parsed.get_attributes()), payload, problem, shape, event, out)


def _structured_payload(event: dict[str, Any], data: Any) -> tuple[Any, str | None]:
    """A structured event's payload: ``data`` (maybe JSON text) or ``data_base64``."""
    if data is None and "data_base64" in event:
        encoded = event["data_base64"]
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except (TypeError, ValueError, binascii.Error):
            return None, "CloudEvent data_base64 is not valid base64"
        return nested_payload(decoded, "CloudEvent data_base64")
    return nested_payload(data, "CloudEvent data")


def read_binary(headers: dict[str, str], data: Any, out: ItemCollector) -> None:
    """Binary mode: attributes in ``ce-*`` headers, the already-parsed body is the data."""
    missing = [h for h in CE_BINARY_HEADERS if h not in headers]
    if missing:
        # Reading it as plain JSON would give it a content identity and lose its own id.
        raise IntakeError(
            400,
            "IncompleteCloudEvent",
            f"binary-mode CloudEvent without the required header(s) {', '.join(missing)}",
        )
    from cloudevents.http import from_http as ce_from_http

    ce_headers = {name: value for name, value in headers.items() if name.startswith("ce-")}
    try:
        # The body is already parsed (with our limits); the SDK only reads the attributes and
        # hands its body argument to the unmarshaller, which returns the parsed value.
        parsed = ce_from_http(headers, "-", data_unmarshaller=lambda _body: data)
    except Exception as exc:  # the SDK raises its own, TypeError and others on odd values
        attrs = {name[3:]: value for name, value in ce_headers.items()}
        _read_event(attrs, None, sdk_problem(exc), CLOUDEVENT, {"headers": ce_headers}, out)
        return
    payload, problem = nested_payload(parsed.get_data(), "CloudEvent data")
    raw = {"headers": ce_headers, "data": data}
    _read_event(dict(parsed.get_attributes()), payload, problem, CLOUDEVENT, raw, out)


def sdk_problem(exc: Exception) -> str:
    """What the cloudevents SDK found wrong, quoted short (its messages may echo input)."""
    return f"invalid CloudEvent: {type(exc).__name__}: {preview(str(exc), 120)}"


def _read_event(
    attrs: Mapping[str, Any],
    payload: Any,
    problem: str | None,
    shape: str,
    raw: object,
    out: ItemCollector,
) -> None:
    """Turn one CloudEvent (its attributes and decoded data) into Items.

    ``problem`` is set when the event itself is readable but its data is not; ``raw`` is what
    a rejected event without a usable identity is hashed from.
    """
    source, event_id = attrs.get("source"), attrs.get("id")
    if not (nonempty_str(source) and nonempty_str(event_id)):
        reason = "CloudEvent 'id' and 'source' must be non-empty strings"
        out.add(rejected_value(raw, shape, reason))
        return
    base_id = cloudevent_identity(source, event_id)
    shown_source = loggable(source)
    if problem is not None:
        out.add(Item(REJECT, base_id, shape, reason=problem, source=shown_source))
        return
    read_payload(payload, base_id, shape, shown_source, "CloudEvent data", out)


def _attributes(attributes: object) -> dict[str, Any]:
    """Attributes from a Mapping or a cloudevents CloudEvent, with lower-cased string keys."""
    getter = getattr(attributes, "get_attributes", None)
    if callable(getter):
        attributes = getter()
    if not isinstance(attributes, Mapping):
        return {}
    return {key.lower(): value for key, value in attributes.items() if isinstance(key, str)}


def _printable_attributes(attrs: Mapping[str, Any]) -> dict[str, str]:
    return {
        key: value if isinstance(value, str) else f"<{type(value).__name__}>"
        for key, value in attrs.items()
    }
