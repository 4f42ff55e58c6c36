"""SMN publish and Cloud Eye metric data, served by the emulator beside the workflow API.

A route set, mixed into an emulator class (:class:`~handler.devtools.emulator.DwrEmulator`
has it), so a test or the demo reaches the workflow API, SMN and Cloud Eye at one URL, under
one fault queue and one call log. Wire behaviour, from the reference notes on SMN and Cloud
Eye (the emulator takes its rules from the reference, not from the client under test):

* ``POST /v2/{project}/notifications/topics/{topic_urn}/publish`` (the URN percent-encoded
  or not) publishes to a topic created with :meth:`NotifyRoutes.create_topic` (or the seed's
  ``"topics"``, or ``--topic``); its URN is ``urn:smn:<emulator region>:<project>:<name>``. The
  body is a JSON object with ``message_structure`` (a JSON string of an object whose
  ``default`` is text; ``email``, ``sms``, … optional) or ``message`` (text, at most 256 KB),
  an optional ``subject`` (at most 512 bytes) and ``time_to_live`` (``"1"``-``"86400"``).
  Answer 200 ``{"request_id", "message_id"}``. An unknown topic -> 404 ``SMN.0006``; a bad
  body -> 400 ``SMN.00010008``. Errors are ``{"request_id", "code", "message"}``.
* ``POST /V1.0/{project}/metric-data`` takes a JSON array of 1-10,000 items, at most 512 KB:
  ``{"metric": {"namespace": "service.item", "metric_name", "dimensions": [1-4 of {"name",
  "value"}]}, "ttl": 1-604800, "collect_time": epoch ms within 3 days back and 10 minutes
  ahead of the emulator's clock, "value": a number, "unit"?, "type"?: "int"|"float"}``;
  namespaces of the services' own (``SYS``, ``AGT``, ``SRE``) are refused. Answer 201 with an
  empty body; any bad item refuses the whole batch: 400 ``ces.0014`` in Cloud Eye's v1 error
  shape ``{"code": 400, "element", "message", "details": {"details", "code"}}``.
* Both check the ``SDK-HMAC-SHA256`` signature, ``X-Sdk-Date`` and the security token as the
  DWR routes do (401 ``APIGW.0301``, the API gateway's ``{"error_code", "error_msg",
  "request_id"}``), then that ``X-Project-Id`` and the path's project are the emulator's
  (403 ``SMN.ProjectMismatch`` / ``CES.ProjectMismatch``, the emulator's own codes). Only
  ``POST`` is served (405 with ``Allow``).
* Faults: every fault applies; ``faults_for(operation="publish")`` or ``"metric_data"``
  aims one at these routes only (SMN down while the workflow API answers).

What was received is kept for tests: :meth:`NotifyRoutes.publishes`,
:meth:`NotifyRoutes.metric_data` and :meth:`NotifyRoutes.metric_sum`.
"""

from __future__ import annotations

import json
import math
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from werkzeug.wrappers import Request

from handler.client.dwr_signing import DwrSigner
from handler.credentials import Credentials
from handler.devtools.emulator.gateway import sdk_signature_problem
from handler.devtools.emulator.wire import Answer, json_answer

__all__ = ["MetricRecord", "NotifyRoutes", "Publish"]

_PUBLISH = re.compile(r"/v2/([^/]*)/notifications/topics/([^/]*)/publish")
_METRIC_DATA = re.compile(r"/V1\.0/([^/]*)/metric-data")
# Read up to this much of a notification request; past the services' own limits it is a 400.
NOTIFY_BODY_LIMIT = 1024 * 1024
MAX_MESSAGE_BYTES = 256 * 1024
MAX_SUBJECT_BYTES = 512
MAX_BATCH_ITEMS = 10_000
MAX_BATCH_BYTES = 512 * 1024
COLLECT_BACK_MS, COLLECT_AHEAD_MS = 3 * 86_400_000 - 10_000, 600_000 - 10_000
_TOPIC = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,254}")
_NAMESPACE = re.compile(r"[A-Za-z][A-Za-z0-9_]*\.[A-Za-z][A-Za-z0-9_]*")
_METRIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,95}")
_DIMENSION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
_RESERVED = frozenset({"SYS", "AGT", "SRE"})
_AUTH_FAILED = "APIGW.0301"
_BAD_MESSAGE = "SMN.00010008"
_TOPIC_NOT_FOUND = "SMN.0006"
_BAD_BODY = "ces.0014"

Self = TypeVar("Self", bound="NotifyRoutes")


class _BadRequest(ValueError):
    """A request body that breaks a rule; the message says which."""


@dataclass(frozen=True)
class Publish:
    """One message SMN accepted. ``structure`` is the parsed ``message_structure``."""

    topic_urn: str
    message_id: str
    subject: str | None
    message: str | None
    structure: dict[str, Any] | None
    time_to_live: str | None
    received_at: float

    def text(self, protocol: str = "default") -> str | None:
        """What a subscriber of ``protocol`` (``email``, ``sms``, …) reads."""
        if self.structure is not None:
            return self.structure.get(protocol, self.structure["default"])
        return self.message


@dataclass(frozen=True)
class MetricRecord:
    """One metric data item Cloud Eye accepted."""

    namespace: str
    metric_name: str
    dimensions: tuple[tuple[str, str], ...]
    value: int | float
    collect_time: int
    ttl: int
    unit: str | None
    type: str | None
    received_at: float

    def dimension(self, name: str) -> str | None:
        return dict(self.dimensions).get(name)


@dataclass
class _Received:
    publishes: list[Publish] = field(default_factory=list)
    metrics: list[MetricRecord] = field(default_factory=list)


class NotifyRoutes:
    """Mixin for an :class:`~handler.devtools.emulator.core.EmulatorCore` subclass: the SMN
    publish and Cloud Eye metric-data routes (listed first among the bases).

    ``topics`` are topic names to create at start (see :meth:`create_topic`).
    """

    # What the emulator core provides.
    _lock: threading.Lock
    _clock: Callable[[], float]
    _max_skew: float
    _security_token: str | None
    region: str
    project_id: str

    def __init__(
        self, credentials: Mapping[str, str], *args: Any, topics: Iterable[str] = (), **kwargs: Any
    ) -> None:
        super().__init__(credentials, *args, **kwargs)  # type: ignore[call-arg]
        # Every Huawei Cloud API behind the gateway signs alike, whatever the workflow API.
        self._gateway_signers = {
            ak: DwrSigner(Credentials(ak, sk)) for ak, sk in dict(credentials).items()
        }
        self._topics: set[str] = set()
        self._received = _Received()
        for name in topics:
            self.create_topic(name)

    @classmethod
    def from_seed(cls: type[Self], seed: Mapping[str, Any], **options: Any) -> Self:
        """As the core's, plus a seed's ``"topics"``: names of topics to create."""
        if not isinstance(seed, Mapping):
            raise ValueError("seed must be a JSON object")
        topics = seed.get("topics") or []
        if not isinstance(topics, list):
            raise ValueError("seed topics must be a list of topic names")
        rest = {key: value for key, value in seed.items() if key != "topics"}
        emulator = super().from_seed(rest, **options)  # type: ignore[misc]
        for name in topics:
            emulator.create_topic(name)
        return emulator

    # --- what tests read ------------------------------------------------------------------

    def create_topic(self, name: str) -> str:
        """Make topic ``name`` exist in the emulator's region and project; returns its URN."""
        if not isinstance(name, str) or _TOPIC.fullmatch(name) is None:
            raise ValueError("a topic name is 1-255 letters, digits, '-' or '_'")
        urn = self.topic_urn(name)
        with self._lock:
            self._topics.add(urn)
        return urn

    def topic_urn(self, name: str) -> str:
        return f"urn:smn:{self.region}:{self.project_id}:{name}"

    def publishes(self, topic_urn: str | None = None) -> list[Publish]:
        """The messages accepted so far (of one topic), oldest first."""
        with self._lock:
            found = list(self._received.publishes)
        return [p for p in found if topic_urn is None or p.topic_urn == topic_urn]

    def metric_data(self, metric_name: str | None = None, **dimensions: str) -> list[MetricRecord]:
        """The metric data accepted so far, oldest first; filtered by name and dimensions."""
        with self._lock:
            found = list(self._received.metrics)
        return [
            record
            for record in found
            if (metric_name is None or record.metric_name == metric_name)
            and all(record.dimension(name) == value for name, value in dimensions.items())
        ]

    def metric_sum(self, metric_name: str, **dimensions: str) -> float:
        """The sum of the values of one metric (with these dimensions) received so far."""
        return sum(record.value for record in self.metric_data(metric_name, **dimensions))

    def clear_notifications(self) -> None:
        """Forget what was received (topics stay)."""
        with self._lock:
            self._received = _Received()

    # --- routing, ahead of the workflow API's ---------------------------------------------

    def _target(self, request: Request) -> tuple[str | None, str | None]:
        if _route(request) is not None:
            return None, None
        return super()._target(request)  # type: ignore[misc]

    def _operation(self, request: Request) -> str:
        route = _route(request)
        if route is not None:
            return route[0]
        return super()._operation(request)  # type: ignore[misc]

    def _body_limit(self, request: Request) -> int:
        if _route(request) is not None:
            return NOTIFY_BODY_LIMIT
        return super()._body_limit(request)  # type: ignore[misc]

    def _dispatch(self, request: Request, request_id: str) -> Answer:
        route = _route(request)
        if route is None:
            return super()._dispatch(request, request_id)  # type: ignore[misc]
        operation, match = route
        smn = operation == "publish"
        error = _smn_error if smn else _ces_error
        if request.method != "POST":
            answer = error(405, "MethodNotAllowed", "only POST is allowed here", request_id)
            return replace(answer, headers=(("Allow", "POST"),))
        why = sdk_signature_problem(
            request,
            self._gateway_signers,
            now=self._clock(),
            max_skew=self._max_skew,
            security_token=self._security_token,
        )
        if why is not None:
            message = f"Incorrect IAM authentication information: {why}"
            return json_answer(
                401, {"error_code": _AUTH_FAILED, "error_msg": message, "request_id": request_id}
            )
        if not match[1] == request.headers.get("X-Project-Id") == self.project_id:
            code = "SMN.ProjectMismatch" if smn else "CES.ProjectMismatch"
            message = "X-Project-Id and the path's project id must both name this project"
            return error(403, code, message, request_id)
        if smn:
            return self._publish(match[2], request, request_id)
        return self._put_metric_data(request, request_id)

    # --- the operations ---------------------------------------------------------------------

    def _publish(self, urn: str, request: Request, request_id: str) -> Answer:
        with self._lock:
            known = urn in self._topics
        if not known:
            return _smn_error(404, _TOPIC_NOT_FOUND, "Topic not found.", request_id)
        try:
            subject, message, structure, ttl = _publish_fields(request.get_data())
        except _BadRequest as exc:
            return _smn_error(400, _BAD_MESSAGE, str(exc), request_id)
        publish = Publish(
            topic_urn=urn,
            message_id=uuid.uuid4().hex,
            subject=subject,
            message=message,
            structure=structure,
            time_to_live=ttl,
            received_at=self._clock(),
        )
        with self._lock:
            self._received.publishes.append(publish)
        return json_answer(200, {"request_id": request_id, "message_id": publish.message_id})

    def _put_metric_data(self, request: Request, request_id: str) -> Answer:
        now = self._clock()
        try:
            records = _metric_records(request.get_data(), now)
        except _BadRequest as exc:
            return _ces_error(400, _BAD_BODY, str(exc), request_id)
        with self._lock:
            self._received.metrics.extend(records)
        return Answer(201, b"", "")


def _route(request: Request) -> tuple[str, re.Match[str]] | None:
    match = _PUBLISH.fullmatch(request.path)
    if match is not None:
        return "publish", match
    match = _METRIC_DATA.fullmatch(request.path)
    return ("metric_data", match) if match is not None else None


def _smn_error(status: int, code: str, message: str, request_id: str) -> Answer:
    return json_answer(status, {"request_id": request_id, "code": code, "message": message})


def _ces_error(status: int, code: str, message: str, request_id: str) -> Answer:
    document = {
        "code": status,
        "element": "Bad Request" if status == 400 else "Error",
        "message": "The system received a request which cannot be recognized",
        "details": {"details": message, "code": code},
    }
    return json_answer(status, document)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise _BadRequest("the body is not JSON") from None


def _publish_fields(
    raw: bytes,
) -> tuple[str | None, str | None, dict[str, Any] | None, str | None]:
    """``(subject, message, structure, time_to_live)`` of a publish body, each checked."""
    document = _json(raw)
    if not isinstance(document, dict):
        raise _BadRequest("the body must be a JSON object")
    subject = document.get("subject")
    if subject is not None and (
        not isinstance(subject, str) or len(subject.encode("utf-8", "replace")) > MAX_SUBJECT_BYTES
    ):
        raise _BadRequest(f"subject must be text of at most {MAX_SUBJECT_BYTES} bytes")
    ttl = document.get("time_to_live")
    if ttl is not None and not (isinstance(ttl, str) and ttl.isdigit() and 1 <= int(ttl) <= 86400):
        raise _BadRequest("time_to_live must be a string of 1 to 86400 seconds")
    text, message = document.get("message_structure"), document.get("message")
    structure = None
    if text is not None:
        structure = _structure(text)
    elif message is not None:
        if not isinstance(message, str) or not message:
            raise _BadRequest("message must be non-empty text")
        if len(message.encode("utf-8", "replace")) > MAX_MESSAGE_BYTES:
            raise _BadRequest("message is larger than 256 KB")
    else:
        raise _BadRequest("give message_structure or message")
    return subject, message if structure is None else None, structure, ttl


def _structure(text: object) -> dict[str, Any]:
    if not isinstance(text, str):
        raise _BadRequest("message_structure must be a JSON string")
    if len(text.encode("utf-8", "replace")) > MAX_MESSAGE_BYTES:
        raise _BadRequest("message_structure is larger than 256 KB")
    structure = _json(text.encode("utf-8", "replace"))
    if not isinstance(structure, dict) or not isinstance(structure.get("default"), str):
        raise _BadRequest("message_structure must be a JSON object with a default text")
    if any(not isinstance(value, str) for value in structure.values()):
        raise _BadRequest("every message_structure value must be text")
    return structure


def _metric_records(raw: bytes, now: float) -> list[MetricRecord]:
    if len(raw) > MAX_BATCH_BYTES:
        raise _BadRequest(f"the body is larger than 512 KB ({MAX_BATCH_BYTES} bytes)")
    items = _json(raw)
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_ITEMS:
        raise _BadRequest(f"the body must be a JSON array of 1 to {MAX_BATCH_ITEMS} items")
    now_ms = now * 1000
    return [_metric_record(item, index, now_ms, now) for index, item in enumerate(items)]


def _metric_record(item: object, index: int, now_ms: float, now: float) -> MetricRecord:
    def bad(why: str) -> _BadRequest:
        return _BadRequest(f"item {index}: {why}")

    if not isinstance(item, dict) or not isinstance(item.get("metric"), dict):
        raise bad("must be an object with a metric")
    metric = item["metric"]
    namespace, name = metric.get("namespace"), metric.get("metric_name")
    if (
        not isinstance(namespace, str)
        or not 3 <= len(namespace) <= 32
        or _NAMESPACE.fullmatch(namespace) is None
        or namespace.split(".", 1)[0].upper() in _RESERVED
    ):
        raise bad("namespace must be a custom service.item of 3-32 characters")
    if not isinstance(name, str) or _METRIC_NAME.fullmatch(name) is None:
        raise bad("metric_name is not valid")
    dimensions = _dimensions(metric.get("dimensions"), bad)
    ttl, collect, value = item.get("ttl"), item.get("collect_time"), item.get("value")
    if not _whole(ttl) or not 1 <= ttl <= 604_800:
        raise bad("ttl must be 1 to 604800")
    if not _whole(collect) or not now_ms - COLLECT_BACK_MS <= collect <= now_ms + COLLECT_AHEAD_MS:
        raise bad("collect_time must be epoch ms within the last 3 days and the next 10 minutes")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad("value must be a number")
    unit, kind = item.get("unit"), item.get("type")
    if unit is not None and (not isinstance(unit, str) or len(unit) > 32):
        raise bad("unit must be text of at most 32 characters")
    if kind is not None and kind not in ("int", "float"):
        raise bad("type must be int or float")
    return MetricRecord(namespace, name, dimensions, value, collect, ttl, unit, kind, now)


def _dimensions(value: object, bad: Callable[[str], _BadRequest]) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= 4:
        raise bad("dimensions must be a list of 1 to 4")
    pairs = []
    for dimension in value:
        if not isinstance(dimension, dict):
            raise bad("a dimension must be an object with name and value")
        name, text = dimension.get("name"), dimension.get("value")
        if not isinstance(name, str) or _DIMENSION_NAME.fullmatch(name) is None:
            raise bad("a dimension name is not valid")
        if not isinstance(text, str) or not 1 <= len(text) <= 256:
            raise bad(f"dimension {name} needs a value of 1-256 characters")
        pairs.append((name, text))
    if len({name for name, _ in pairs}) != len(pairs):
        raise bad("dimension names must be unique")
    return tuple(pairs)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
