"""Intake: turn one delivery, in whatever envelope it came, into one decision per request.

Failure events reach the function in many shapes - CloudEvents (structured, binary, batch),
Huawei EventGrid's ``{"events": [...]}`` envelope, SMN HTTP(S) messages, FunctionGraph's SMN
trigger and API Gateway events, or a bare ``{"graphName", "executionName"}`` - and the rest of
the function should not care which. This module reads them all and answers with a list of
:class:`Item`, exactly one per request the delivery carries, each saying what to do with it:
``restore``, ``skip`` (readable, but nothing to do) or ``reject`` (this request is unusable).

Two levels of failure, so one bad request never costs its neighbours their restore:

* :class:`IntakeError` - the *delivery* cannot be read at all (too large, not UTF-8, not JSON,
  too deep, empty, too many items, wrong media type). The caller answers 4xx; retrying the
  same bytes cannot help.
* ``Item(verdict="reject")`` - one request inside a readable delivery is bad (a malformed URN,
  an invalid name, a number where an object belongs). Its neighbours are still read.

Limits are checked before the work they protect (size before decoding, depth straight after
parsing, item count while collecting), and a message never echoes more than a short
``ascii()`` preview of the input, so every reason is safe to log and to return to a caller.

Identity (``Item.event_id``) is what the pipeline deduplicates on, so it must be the same for
the same request however often and in whatever envelope it arrives:

* a CloudEvent is ``"<source>/<id>"`` (the pair the CloudEvents spec makes unique);
* an SMN message is ``"smn:<message_id>"`` - the same whether it came by HTTP or by trigger;
* a plain request may name itself with ``"eventId"``: ``"request:<eventId>"``, deduplicated
  like a CloudEvent id;
* when one event or message carries an array of requests, element *i* gets ``"#<i>"`` appended;
* anything else is ``"sha256:"`` + the SHA-256 of the canonical JSON (sorted keys, compact,
  ASCII) of the request *normalised*: ``{"execution": E, "graph": G}`` for a restore (so
  ``graphName``/``graph_name``/URN spellings of one request coincide), the same plus
  ``"state"`` for a skip, and ``{"rejected": <the value as received>}`` for a reject. The
  shapes never overlap, so a rejected value cannot borrow a restore's identity. Such an
  item has ``identified_by_content`` set: the same content later may be a new failure of the
  same execution, so the policy remembers it only briefly.

An identity that is longer than 512 characters or not printable ASCII is replaced by a hash of
itself, so it stays a safe store key and log field.

Import cost matters at cold start: this module needs only the standard library. The
``cloudevents`` SDK is imported inside the functions that read CloudEvents, on first use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from handler.names import InvalidNameError, validate_name

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "MAX_ITEMS",
    "IntakeError",
    "Item",
    "from_cloudevent",
    "from_event",
    "from_http",
]

MAX_BODY_BYTES = 256 * 1024  # EventGrid's own per-request limit; nothing legitimate is larger
MAX_ITEMS = 100  # requests in one delivery, counted after unwrapping every envelope
MAX_DEPTH = 16  # nested arrays/objects; the deepest legitimate shape needs about 6
MAX_INT_BITS = 2000  # below every int-to-str limit Python allows, so hashing never fails
MAX_ID_CHARS = 512
PREVIEW_CHARS = 40

RESTORE, SKIP, REJECT = "restore", "skip", "reject"

CLOUDEVENT = "cloudevent"
CLOUDEVENT_BATCH = "cloudevent-batch"
EVENTGRID = "eventgrid"
SMN = "smn"
SMN_TRIGGER = "smn-trigger"
APIG = "apig"
PLAIN = "plain"

CE_STRUCTURED = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"
CE_REQUIRED = ("specversion", "id", "source", "type")
CE_BINARY_HEADERS = tuple(f"ce-{name}" for name in CE_REQUIRED)
JSON_MEDIA_TYPES = frozenset({"", "application/json", "text/json", "text/plain"})

SMN_NOTIFICATION = "notification"
SMN_CONFIRMATIONS = frozenset({"subscriptionconfirmation", "unsubscribeconfirmation"})
SMN_TYPES = SMN_CONFIRMATIONS | {SMN_NOTIFICATION}

REQUEST_ID_KEY = "eventId"  # a plain request's own id, for callers that redeliver
GRAPH_NAME_KEYS = ("graphName", "graph_name")
EXECUTION_NAME_KEYS = ("executionName", "execution_name")
GRAPH_URN_KEYS = ("graph_urn", "graphUrn")
EXECUTION_URN_KEYS = ("execution_urn", "executionUrn")
EXECUTION_INFO_KEYS = ("execution_info", "executionInfo")
STATE_KEYS = ("execution_state", "executionState", "status", "state")
FAILURE_STATES = frozenset({"failed", "fail"})

EXECUTION_URN_FORM = "urn:fgs:<region>:<project>:execution:<graph>:<execution>:<domain>"
GRAPH_URN_FORM = "urn:fgs:<region>:<project>:graph:<graph>"


class IntakeError(Exception):
    """The whole delivery is unreadable; nothing in it can be acted on.

    ``status`` is the HTTP status to answer with (400, 413 or 415), ``code`` a stable
    machine-readable word (``BodyTooLarge``, ``TooManyItems``, ``NotUTF8``, ``NotJSON``,
    ``TooDeep``, ``EmptyDelivery``, ``BadEnvelope``, ``BadBase64``, ``UnsupportedMediaType``)
    and ``message`` a human-readable explanation that quotes at most a short ``ascii()``
    preview of the input.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"IntakeError({self.status}, {self.code!r}, {self.message!r})"


@dataclass(frozen=True)
class Item:
    """What to do with one request of a delivery.

    ``restore`` and ``skip`` items always carry both names, already validated by
    :func:`handler.names.validate_name`; ``reject`` items carry neither, so an unchecked name
    can never travel further. ``reason`` says why an item is skipped or rejected (empty for
    ``restore``); ``source`` is the CloudEvent source or SMN topic URN, for logs.
    """

    verdict: str
    event_id: str
    shape: str
    graph_name: str | None = None
    execution_name: str | None = None
    reason: str = ""
    source: str = ""
    identified_by_content: bool = False  # no id of its own: event_id is a hash of the request


# --------------------------------------------------------------------------- public entries


def from_http(body: bytes, headers: Mapping[str, str]) -> list[Item]:
    """Read a delivery to the function's HTTP URL: the raw request body and its headers.

    Header names are matched case-insensitively. Every shape this module knows is accepted
    here, including FunctionGraph trigger events posted by hand. Returns one Item per
    request, never an empty list; raises :class:`IntakeError` when nothing can be read.
    """
    return _read_http(body, _lower_headers(headers), allow_apig=True)


def from_event(event: object) -> list[Item]:
    """Read the ``event`` a FunctionGraph event function is called with (decoded JSON).

    Besides every HTTP shape this accepts the SMN trigger's ``{"record": [...]}`` and the API
    Gateway trigger's request envelope. A ``str`` or ``bytes`` event is read as an HTTP body
    without headers. Returns one Item per request or raises :class:`IntakeError`.
    """
    if isinstance(event, (str, bytes, bytearray, memoryview)):
        return _read_http(event, {}, allow_apig=True)
    _check_value(event)
    out = _Items()
    _read_value(event, out, allow_apig=True)
    return out.result()


def from_cloudevent(attributes: Mapping[str, Any], data: Any) -> list[Item]:
    """Read a CloudEvent that functions-framework has already decoded.

    ``attributes`` holds at least ``id``, ``source`` and ``type``; ``data`` is the event's
    payload as the framework left it (dict, list, JSON text as str or bytes, or None). The
    payload is read for restore requests exactly like CloudEvent data elsewhere. Returns one
    Item per request or raises :class:`IntakeError`.
    """
    attrs = _attributes(attributes)
    if isinstance(data, (str, bytes, bytearray, memoryview)) and len(data) > MAX_BODY_BYTES:
        raise _too_large("CloudEvent data", len(data))
    if data is None or isinstance(data, (str, bytes, bytearray, memoryview)):
        payload, problem = _nested_payload(data, "CloudEvent data")
    else:
        _check_value(data, "CloudEvent data")
        payload, problem = data, None
    out = _Items()
    raw = {"attributes": _printable_attributes(attrs), "data": payload}
    _read_event(attrs, payload, problem, CLOUDEVENT, raw, out)
    return out.result()


# ------------------------------------------------------------------------ HTTP and documents


def _read_http(body: object, headers: dict[str, str], *, allow_apig: bool) -> list[Item]:
    """Check an HTTP body against every delivery-level limit, then read what it carries."""
    raw = _body_bytes(body)
    if len(raw) > MAX_BODY_BYTES:
        raise _too_large("body", len(raw))
    media = _media_type(headers.get("content-type", ""))
    value = _parse_document(raw)
    out = _Items()
    _read_delivery(value, headers, media, out, allow_apig=allow_apig)
    return out.result()


def _body_bytes(body: object) -> bytes:
    if body is None:
        return b""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        try:
            return body.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise IntakeError(400, "NotUTF8", "body text holds lone surrogates") from exc
    raise IntakeError(400, "NotJSON", f"body must be bytes, not {type(body).__name__}")


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
        f"content type {_preview(media)} cannot carry JSON; send application/json",
    )


def _parse_document(raw: bytes) -> Any:
    """Decode and parse a whole delivery, turning every failure into an IntakeError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IntakeError(
            400, "NotUTF8", f"body is not UTF-8 (bad byte at offset {exc.start})"
        ) from exc
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise IntakeError(400, "EmptyDelivery", "body is empty")
    value = _loads(text, "body")
    _check_value(value, "body")
    return value


def _loads(text: str, what: str) -> Any:
    """``json.loads`` that rejects NaN/Infinity and reports deep input as TooDeep.

    The C decoder recurses per nesting level, so a body of 100 000 ``[`` raises
    RecursionError before any depth check of ours could run.
    """
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise _too_deep(what) from exc
    except json.JSONDecodeError as exc:
        raise IntakeError(
            400,
            "NotJSON",
            f"{what} is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            f"starts with {_preview(text)}",
        ) from exc
    except ValueError as exc:  # an integer longer than Python will convert, or NaN/Infinity
        raise IntakeError(400, "NotJSON", f"{what} is not JSON: {exc}"[:200]) from exc


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _check_value(value: object, what: str = "event") -> None:
    """Refuse a decoded value that is not plain JSON, nests too deep or is too big.

    Iterative, so hostile input cannot exhaust the stack, and it stops at the first problem.
    The size is a lower bound of the JSON text's size (strings and one byte per value), which
    also bounds the work on values that share or cycle through containers.
    """
    size = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if not all(isinstance(key, str) for key in node):
                raise IntakeError(400, "NotJSON", "object keys must be strings")
            size += sum(map(len, node))
            children = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            _check_scalar(node)
            continue
        if depth > MAX_DEPTH:
            raise _too_deep(what)
        size += len(node) + 1
        for child in children:  # plain scalars inline: this loop is the hot path
            kind = type(child)
            if kind is str:
                size += len(child)
            elif not (
                child is None
                or kind is float
                or kind is bool
                or (kind is int and child.bit_length() <= MAX_INT_BITS)
            ):
                stack.append((child, depth + 1))
        if size > MAX_BODY_BYTES:
            raise _too_large(what, size)


def _check_scalar(value: object) -> None:
    """A non-container that the fast path left over: a subclass, a huge int or no JSON."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INT_BITS:
            raise IntakeError(400, "NotJSON", "a number is too long")
    elif value is not None and not isinstance(value, (str, bool, float)):
        raise IntakeError(400, "NotJSON", f"a {type(value).__name__} is not a JSON value")


def _too_deep(what: str) -> IntakeError:
    return IntakeError(400, "TooDeep", f"{what} nests arrays/objects deeper than {MAX_DEPTH}")


def _too_large(what: str, size: int) -> IntakeError:
    return IntakeError(
        413, "BodyTooLarge", f"{what} is larger than {MAX_BODY_BYTES} bytes ({size} or more)"
    )


# ------------------------------------------------------------------------- dispatch by shape


class _Items:
    """Collects a delivery's Items; stops the delivery as soon as it holds too many."""

    def __init__(self) -> None:
        self.items: list[Item] = []

    def add(self, item: Item) -> None:
        if len(self.items) >= MAX_ITEMS:
            raise IntakeError(
                413, "TooManyItems", f"delivery carries more than {MAX_ITEMS} requests"
            )
        self.items.append(item)

    def result(self) -> list[Item]:
        if not self.items:  # every path adds at least one; this keeps the promise regardless
            raise IntakeError(400, "EmptyDelivery", "delivery carries no request")
        return self.items


def _read_delivery(
    value: Any, headers: dict[str, str], media: str, out: _Items, *, allow_apig: bool
) -> None:
    """Let the CloudEvents content modes decide first; otherwise recognise the shape by content."""
    if media == CE_BATCH and isinstance(value, list):
        _read_batch(value, out)
    elif media == CE_STRUCTURED and isinstance(value, dict):
        _read_structured(value, CLOUDEVENT, out)
    elif media not in (CE_STRUCTURED, CE_BATCH) and any(h in headers for h in CE_BINARY_HEADERS):
        missing = [h for h in CE_BINARY_HEADERS if h not in headers]
        if missing:
            # Reading it as plain JSON would give it a content identity and lose its own id.
            raise IntakeError(
                400,
                "IncompleteCloudEvent",
                f"binary-mode CloudEvent without the required header(s) {', '.join(missing)}",
            )
        _read_binary(headers, value, out)
    else:
        _read_value(value, out, allow_apig=allow_apig)


def _read_value(value: Any, out: _Items, *, allow_apig: bool) -> None:
    """Read a decoded top-level value whose shape only its content tells."""
    if isinstance(value, (list, tuple)):
        _read_array(value, out)
        return
    if not isinstance(value, dict):
        reason = f"expected a JSON object or array, got {_kind(value)}"
        out.add(_rejected_value(value, PLAIN, reason))
        return
    shape = _classify(value)
    if shape == CLOUDEVENT:
        _read_structured(value, CLOUDEVENT, out)
    elif shape == EVENTGRID:
        _read_eventgrid(value, out)
    elif shape == SMN_TRIGGER:
        _read_smn_trigger(value, out)
    elif shape == SMN:
        _read_smn(value, SMN, out)
    elif shape == APIG and allow_apig:
        _read_apig(value, out)
    elif shape == APIG:
        reason = "an API Gateway envelope inside another envelope is not read"
        out.add(_rejected_value(value, APIG, reason))
    else:
        out.add(_request_item(value, None, PLAIN, ""))


def _classify(value: dict[str, Any]) -> str:
    """Name the envelope a top-level JSON object is, by the keys only that envelope has."""
    if "specversion" in value:
        return CLOUDEVENT
    if "events" in value:
        return EVENTGRID
    if "record" in value:
        return SMN_TRIGGER
    kind = value.get("type")
    if (
        isinstance(kind, str)
        and kind.lower() in SMN_TYPES
        and any(key in value for key in ("message_id", "topic_urn", "message"))
    ):
        return SMN
    if "body" in value and ("httpMethod" in value or "isBase64Encoded" in value):
        return APIG
    return PLAIN


def _read_array(values: list[Any] | tuple[Any, ...], out: _Items) -> None:
    """A top-level array: each element a plain request or a structured CloudEvent."""
    if not values:
        raise IntakeError(400, "EmptyDelivery", "the array is empty")
    for index, element in enumerate(values):
        if isinstance(element, dict) and "specversion" in element:
            _read_structured(element, CLOUDEVENT_BATCH, out)
        elif isinstance(element, dict):
            out.add(_request_item(element, None, PLAIN, ""))
        else:
            reason = f"item #{index} is {_kind(element)}, not an object"
            out.add(_rejected_value(element, PLAIN, reason))


# --------------------------------------------------------------------------------- CloudEvents


def _read_batch(events: list[Any], out: _Items) -> None:
    """CloudEvents batch mode: every element must be a structured CloudEvent."""
    if not events:
        raise IntakeError(400, "EmptyDelivery", "the CloudEvents batch is empty")
    for index, event in enumerate(events):
        if isinstance(event, dict):
            _read_structured(event, CLOUDEVENT_BATCH, out)
        else:
            reason = f"batch item #{index} is {_kind(event)}, not a CloudEvent"
            out.add(_rejected_value(event, CLOUDEVENT_BATCH, reason))


def _read_eventgrid(envelope: dict[str, Any], out: _Items) -> None:
    """Huawei EventGrid's ``{"events": [...]}``: a list of structured CloudEvents."""
    events = envelope["events"]
    if not isinstance(events, list):
        raise IntakeError(
            400, "BadEnvelope", f"EventGrid 'events' must be an array, not {_kind(events)}"
        )
    if not events:
        raise IntakeError(400, "EmptyDelivery", "EventGrid envelope has no events")
    for index, event in enumerate(events):
        if isinstance(event, dict):
            _read_structured(event, EVENTGRID, out)
        else:
            reason = f"events[{index}] is {_kind(event)}, not a CloudEvent"
            out.add(_rejected_value(event, EVENTGRID, reason))


def _read_structured(event: dict[str, Any], shape: str, out: _Items) -> None:
    """One structured-mode CloudEvent (a JSON object), validated by the cloudevents SDK.

    The SDK invents ``id`` and ``specversion`` when they are missing, which would give the
    event a random identity, so the required attributes are checked here first.
    """
    missing = [name for name in CE_REQUIRED if name not in event]
    if missing:
        reason = f"not a CloudEvent: missing attribute(s) {', '.join(missing)}"
        out.add(_rejected_value(event, shape, reason))
        return
    from cloudevents.http import from_dict

    try:
        parsed = from_dict(event)
    except Exception as exc:  # the SDK raises its own, TypeError and others on odd values
        _read_event(event, None, _sdk_problem(exc), shape, event, out)
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
        return _nested_payload(decoded, "CloudEvent data_base64")
    return _nested_payload(data, "CloudEvent data")


def _read_binary(headers: dict[str, str], data: Any, out: _Items) -> None:
    """Binary mode: attributes in ``ce-*`` headers, the already-parsed body is the data."""
    from cloudevents.http import from_http as ce_from_http

    ce_headers = {name: value for name, value in headers.items() if name.startswith("ce-")}
    try:
        # The body is already parsed (with our limits); the SDK only reads the attributes and
        # hands its body argument to the unmarshaller, which returns the parsed value.
        parsed = ce_from_http(headers, "-", data_unmarshaller=lambda _body: data)
    except Exception as exc:  # the SDK raises its own, TypeError and others on odd values
        attrs = {name[3:]: value for name, value in ce_headers.items()}
        _read_event(attrs, None, _sdk_problem(exc), CLOUDEVENT, {"headers": ce_headers}, out)
        return
    payload, problem = _nested_payload(parsed.get_data(), "CloudEvent data")
    raw = {"headers": ce_headers, "data": data}
    _read_event(dict(parsed.get_attributes()), payload, problem, CLOUDEVENT, raw, out)


def _sdk_problem(exc: Exception) -> str:
    return f"invalid CloudEvent: {type(exc).__name__}: {_preview(str(exc), 120)}"


def _read_event(
    attrs: Mapping[str, Any],
    payload: Any,
    problem: str | None,
    shape: str,
    raw: object,
    out: _Items,
) -> None:
    """Turn one CloudEvent (its attributes and decoded data) into Items.

    ``problem`` is set when the event itself is readable but its data is not; ``raw`` is what
    a rejected event without a usable identity is hashed from.
    """
    source, event_id = attrs.get("source"), attrs.get("id")
    if not (_nonempty_str(source) and _nonempty_str(event_id)):
        reason = "CloudEvent 'id' and 'source' must be non-empty strings"
        out.add(_rejected_value(raw, shape, reason))
        return
    base_id = _safe_id(f"{source}/{event_id}")
    shown_source = _loggable(source)
    if problem is not None:
        out.add(Item(REJECT, base_id, shape, reason=problem, source=shown_source))
        return
    _read_payload(payload, base_id, shape, shown_source, "CloudEvent data", out)


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


# ------------------------------------------------------------------------------------- SMN


def _read_smn_trigger(event: dict[str, Any], out: _Items) -> None:
    """FunctionGraph's SMN trigger: ``{"record": [{"event_source": "smn", "smn": {...}}]}``."""
    records = event["record"]
    if not isinstance(records, list):
        raise IntakeError(
            400, "BadEnvelope", f"SMN trigger 'record' must be an array, not {_kind(records)}"
        )
    if not records:
        raise IntakeError(400, "EmptyDelivery", "SMN trigger event has no records")
    for index, record in enumerate(records):
        problem = _record_problem(index, record)
        if problem is None:
            _read_smn(record["smn"], SMN_TRIGGER, out)
        else:
            out.add(_rejected_value(record, SMN_TRIGGER, problem))


def _record_problem(index: int, record: object) -> str | None:
    if not isinstance(record, dict):
        return f"record[{index}] is {_kind(record)}, not an object"
    source = record.get("event_source")
    if source is not None and not (isinstance(source, str) and source.lower() == SMN):
        return f"record[{index}] has event_source {_preview(source)}, not 'smn'"
    if not isinstance(record.get("smn"), dict):
        return f"record[{index}] has no 'smn' object"
    return None


def _read_smn(message: dict[str, Any], shape: str, out: _Items) -> None:
    """One SMN message: a Notification carries requests; a confirmation is only skipped.

    Confirmations are never acted on - confirming a subscription is a deliberate operator
    step - but the skip reason carries the ``subscribe_url`` so the operator can find it.
    """
    source = _loggable(message.get("topic_urn"))
    message_id = message.get("message_id")
    if _nonempty_str(message_id):
        base_id = _safe_id(f"smn:{message_id}")
    else:
        base_id = _hash_id({"smn": message})
    kind = message.get("type")
    kind = kind.lower() if isinstance(kind, str) else kind
    if kind in SMN_CONFIRMATIONS:
        out.add(
            Item(SKIP, base_id, shape, reason=_confirmation_reason(kind, message), source=source)
        )
    elif kind is not None and kind != SMN_NOTIFICATION:
        reason = f"unknown SMN message type {_preview(message.get('type'))}"
        out.add(Item(REJECT, base_id, shape, reason=reason, source=source))
    else:
        payload, problem = _nested_payload(message.get("message"), "SMN message")
        if problem is None:
            _read_payload(payload, base_id, shape, source, "SMN message", out)
        else:
            out.add(Item(REJECT, base_id, shape, reason=problem, source=source))


def _confirmation_reason(kind: str, message: dict[str, Any]) -> str:
    what = "subscription" if kind == "subscriptionconfirmation" else "unsubscribe"
    url = message.get("subscribe_url")
    where = f"subscribe_url: {_loggable(url, 1024)}" if _nonempty_str(url) else "no subscribe_url"
    return f"SMN {what} confirmation, not a restore request; {where}"


# ------------------------------------------------------------------------------ API Gateway


def _read_apig(envelope: dict[str, Any], out: _Items) -> None:
    """API Gateway trigger: unwrap the HTTP request and read it as if posted directly.

    The inner body is the delivery, so its size/JSON/depth problems fail the delivery. It is
    not unwrapped a second time: nested envelopes would let a small body cost many parses.
    """
    raw = _apig_body(envelope.get("body"), envelope.get("isBase64Encoded"))
    headers = _lower_headers(envelope.get("headers"))
    for item in _read_http(raw, headers, allow_apig=False):
        out.add(replace(item, shape=APIG))


def _apig_body(body: object, encoded: object) -> bytes:
    if body is None:
        return b""
    if isinstance(body, (dict, list)):  # some test consoles put the JSON itself in "body"
        return json.dumps(body).encode("utf-8")
    if not isinstance(body, str):
        raise IntakeError(400, "NotJSON", f"API Gateway body is {_kind(body)}, not a string")
    if not (encoded is True or (isinstance(encoded, str) and encoded.lower() == "true")):
        return _body_bytes(body)
    if len(body) > (MAX_BODY_BYTES // 3 + 1) * 4 + 64:
        raise _too_large("API Gateway body", len(body))
    try:
        return base64.b64decode("".join(body.split()), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise IntakeError(
            400, "BadBase64", "API Gateway body is flagged isBase64Encoded but is not base64"
        ) from exc


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


# --------------------------------------------------------------------------------- payloads


def _nested_payload(value: Any, what: str) -> tuple[Any, str | None]:
    """A payload that may arrive as JSON text (SMN ``message``, CloudEvent ``data``).

    Problems here reject only this event - its envelope was readable - so they come back
    as a reason instead of an IntakeError.
    """
    if value is None:
        return None, f"{what} is missing"
    if not isinstance(value, (str, bytes, bytearray, memoryview)):
        return value, None
    if len(value) > MAX_BODY_BYTES:
        return None, f"{what} is larger than {MAX_BODY_BYTES} bytes"
    if not isinstance(value, str):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None, f"{what} is not UTF-8"
    try:
        parsed = _loads(value.removeprefix("\ufeff"), what)
        _check_value(parsed, what)
    except IntakeError as exc:
        return None, exc.message
    return parsed, None


def _read_payload(
    payload: Any, base_id: str, shape: str, source: str, what: str, out: _Items
) -> None:
    """The request(s) inside one event: an object, or an array of them suffixed ``#i``."""
    if isinstance(payload, dict):
        out.add(_request_item(payload, base_id, shape, source))
        return
    if isinstance(payload, (list, tuple)) and payload:
        for index, element in enumerate(payload):
            element_id = _safe_id(f"{base_id}#{index}")
            if isinstance(element, dict):
                out.add(_request_item(element, element_id, shape, source))
            else:
                reason = f"{what}[{index}] is {_kind(element)}, not an object"
                out.add(Item(REJECT, element_id, shape, reason=reason, source=source))
        return
    if isinstance(payload, (list, tuple)):
        reason = f"{what} is an empty array"
    else:
        reason = f"{what} is {_kind(payload)}, not a restore request object"
    out.add(Item(REJECT, base_id, shape, reason=reason, source=source))


# ------------------------------------------------------------------------- restore requests


def _request_item(request: dict[str, Any], event_id: str | None, shape: str, source: str) -> Item:
    """Decide one request object: restore, skip (not failed) or reject (unreadable).

    Readability is decided first, so a malformed request is reported as such whatever its
    state. ``event_id`` is None for plain requests, whose identity is their normalised hash.
    """
    if event_id is None:
        own_id = request.get(REQUEST_ID_KEY)
        if own_id is not None and not (_nonempty_str(own_id) and len(own_id) <= MAX_ID_CHARS):
            reason = f"{REQUEST_ID_KEY} must be a non-empty string of at most {MAX_ID_CHARS} chars"
            return Item(REJECT, _hash_id({"rejected": request}), shape, reason=reason)
        if own_id is not None:
            event_id = _safe_id(f"request:{own_id}")
    by_content = event_id is None
    outcome = _read_request(request)
    if isinstance(outcome, str):
        event_id = event_id or _hash_id({"rejected": request})
        return Item(REJECT, event_id, shape, reason=outcome, source=source)
    graph, execution, state = outcome
    if state is not None:
        normalised = {"graph": graph, "execution": execution, "state": state}
        reason = f"execution state is {_show(state)}, not a failure"
        event_id = event_id or _hash_id(normalised)
        return Item(SKIP, event_id, shape, graph, execution, reason, source, by_content)
    event_id = event_id or _hash_id({"graph": graph, "execution": execution})
    return Item(RESTORE, event_id, shape, graph, execution, "", source, by_content)


def _read_request(request: dict[str, Any]) -> tuple[str, str, Any] | str:
    """``(graph, execution, non-failure state or None)`` of a request, or why it is unusable.

    Names may come from explicit keys, from URNs, and from an ``execution_info`` object as
    the query API returns it; every source that is present must agree.
    """
    layers = _layers(request)
    if isinstance(layers, str):
        return layers
    sources = _name_sources(layers)
    if isinstance(sources, str):
        return sources
    graphs, executions = sources
    if not graphs and not executions:
        return (
            "not a restore request: no graphName/executionName, graph_name/execution_name, "
            "execution_urn, graph_urn or execution_info found"
        )
    graph, problem = _one_name(graphs, "graphName")
    if problem is None:
        execution, problem = _one_name(executions, "executionName")
    if problem is not None:
        return problem
    return graph, execution, _non_failure_state(layers)


def _layers(request: dict[str, Any]) -> list[tuple[str, dict[str, Any]]] | str:
    """The request itself and, when present, its ``execution_info`` object, with prefixes."""
    layers = [("", request)]
    for key in EXECUTION_INFO_KEYS:
        info = request.get(key)
        if info is None:
            continue
        if not isinstance(info, dict):
            return f"{key} must be an object, not {_kind(info)}"
        layers.append((f"{key}.", info))
    return layers


def _name_sources(
    layers: list[tuple[str, dict[str, Any]]],
) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]] | str:
    """Every ``(where, value)`` a graph and an execution name is given at, or a URN problem."""
    graphs: list[tuple[str, Any]] = []
    executions: list[tuple[str, Any]] = []
    for prefix, layer in layers:
        graphs += _present(layer, GRAPH_NAME_KEYS, prefix)
        executions += _present(layer, EXECUTION_NAME_KEYS, prefix)
        for label, urn in _present(layer, EXECUTION_URN_KEYS, prefix):
            parts = _parse_urn(urn, label, "execution", 8, EXECUTION_URN_FORM)
            if isinstance(parts, str):
                return parts
            graphs.append((label, parts[5]))
            executions.append((label, parts[6]))
        for label, urn in _present(layer, GRAPH_URN_KEYS, prefix):
            parts = _parse_urn(urn, label, "graph", 6, GRAPH_URN_FORM)
            if isinstance(parts, str):
                return parts
            graphs.append((label, parts[5]))
    return graphs, executions


def _present(layer: dict[str, Any], keys: tuple[str, ...], prefix: str) -> list[tuple[str, Any]]:
    """The non-null values of ``keys`` in ``layer``; JSON null counts as absent."""
    return [(prefix + key, layer[key]) for key in keys if layer.get(key) is not None]


def _parse_urn(value: object, label: str, kind: str, size: int, form: str) -> list[str] | str:
    """The colon-separated parts of a FunctionGraph URN of ``kind``, or what is wrong with it."""
    if not isinstance(value, str):
        return f"malformed {label}: must be a string, not {_kind(value)}"
    shown = _preview(value, 160)
    parts = value.split(":")
    if parts[:2] != ["urn", "fgs"]:
        return f"malformed {label}: {shown} does not start with 'urn:fgs:'"
    if len(parts) > 4 and parts[4] != kind:
        return f"malformed {label}: {shown} has kind {_preview(parts[4])}, expected {kind!r}"
    if len(parts) != size or not all(parts):
        return f"malformed {label}: {shown} is not of the form {form}"
    return parts


def _one_name(sources: list[tuple[str, Any]], field: str) -> tuple[str, str | None]:
    """``(name, None)`` when every source gives the same valid name, else ``("", problem)``."""
    if not sources:
        return "", f"missing {field}: the request gives no {field} and no URN carrying it"
    first_label, first = sources[0]
    for label, value in sources[1:]:
        if value != first:
            return "", (
                f"conflicting {field}: {first_label} says {_preview(first)} "
                f"but {label} says {_preview(value)}"
            )
    try:
        return validate_name(first, field), None
    except InvalidNameError as exc:
        return "", str(exc)


def _non_failure_state(layers: list[tuple[str, dict[str, Any]]]) -> Any:
    """The first state given that is not a failure, or None when every given state is one."""
    for _prefix, layer in layers:
        for _label, state in _present(layer, STATE_KEYS, ""):
            if not (isinstance(state, str) and state.strip().lower() in FAILURE_STATES):
                return state
    return None


# --------------------------------------------------------------------------------- identity


def _rejected_value(value: object, shape: str, reason: str) -> Item:
    return Item(REJECT, _hash_id({"rejected": value}), shape, reason=reason)


def _hash_id(normalised: object) -> str:
    """``sha256:`` + hex digest of the canonical JSON of a normalised value.

    Sorted keys, compact separators and ASCII escapes make the text - and so the identity -
    the same in every process and whatever key order or envelope the value came in.
    """
    text = json.dumps(
        normalised, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_opaque
    )
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()


def _opaque(value: object) -> str:
    return f"<{type(value).__name__}>"


def _safe_id(identity: str) -> str:
    """Keep an identity as is when it is a short printable ASCII string, else hash it.

    The ``id:`` prefix inside the hash keeps these apart from the canonical-JSON hashes.
    """
    if len(identity) <= MAX_ID_CHARS and identity.isascii() and identity.isprintable():
        return identity
    digest = hashlib.sha256(("id:" + identity).encode("utf-8", "surrogatepass")).hexdigest()
    return "sha256:" + digest


# --------------------------------------------------------------------------- small helpers


def _nonempty_str(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _kind(value: object) -> str:
    """The JSON kind of a value, with its article, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _preview(value: object, limit: int = PREVIEW_CHARS) -> str:
    """A short ``ascii()`` rendering of input for messages; containers are only named."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value)
        return ascii(value[:limit] + b"..." if len(value) > limit else value)
    if isinstance(value, str):
        return ascii(value[:limit] + "..." if len(value) > limit else value)
    if value is None or isinstance(value, (bool, float)):
        return ascii(value)
    if isinstance(value, int) and value.bit_length() <= 64:
        return ascii(value)
    return _kind(value)


def _show(value: object) -> str:
    """A state as written when it is a short plain word, else its preview."""
    plain = isinstance(value, str) and 0 < len(value) <= PREVIEW_CHARS and value.isascii()
    if plain and value.replace("_", "").replace("-", "").isalnum():
        return value
    return _preview(value)


def _loggable(value: object, limit: int = 256) -> str:
    """A string attribute (source, URL) cut to ``limit`` and made printable ASCII."""
    if not isinstance(value, str):
        return ""
    if len(value) <= limit and value.isascii() and value.isprintable():
        return value
    return _preview(value, limit)
