"""The Cloud Eye metric sender: one batch of custom metric data per call.

``POST /V1.0/{project_id}/metric-data`` with the workflow clients' credentials and signature
(``SDK-HMAC-SHA256``, ``X-Security-Token`` for an agency's temporary keys); the body is the
JSON array the official SDK (``huaweicloudsdkces`` ``CreateMetricData``) sends for the same
data, byte for byte (``tests/client/test_ces_client.py``), and Cloud Eye answers ``201`` with
an empty body.

Every rule Cloud Eye documents is checked before any I/O, because the service refuses a
whole batch for one bad item: the namespace (``service.item``, default ``WORKFLOW.restore``),
metric names, 1-4 dimensions per metric with unique names, ``ttl``, a ``collect_time`` within
the window the service takes (3 days back to 10 minutes ahead), finite values, 1-10,000
items and at most 512 KB of body. A bad batch raises :class:`InvalidMetricError` naming the
item and the field. The call is bounded in time and never re-sent when its answer was lost
(:mod:`handler.client.sending`): a metric must never delay a restore's outcome, and a batch
sent twice would count twice.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from handler.client.results import WorkflowResult
from handler.client.sending import (
    DEFAULT_MAX_SECONDS,
    DEFAULT_TIMEOUT,
    SendResult,
    SignedSender,
)
from handler.client.transport import JSON, RetrySchedule
from handler.credentials import Credentials
from handler.notify_targets import DEFAULT_METRICS_NAMESPACE, validate_namespace

__all__ = [
    "DEFAULT_TTL",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_ITEMS",
    "MAX_DIMENSIONS",
    "CesClient",
    "InvalidMetricError",
    "MetricDatum",
    "metric_batches",
    "metric_data_body",
]

MAX_BATCH_ITEMS = 10_000
MAX_BATCH_BYTES = 512 * 1024
MAX_DIMENSIONS = 4
MAX_TTL = 604_800  # 7 days, the longest Cloud Eye keeps raw custom data
DEFAULT_TTL = MAX_TTL
MAX_UNIT_LENGTH = 32
# collect_time must lie in [now - 3 days + 10 s, now + 10 minutes - 10 s] when it arrives.
COLLECT_WINDOW_MS = (3 * 86_400_000 - 10_000, 600_000 - 10_000)
_METRIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,95}")
_DIMENSION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
_DIMENSION_VALUE_LENGTH = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidMetricError(ValueError):
    """A metric datum or batch breaks a Cloud Eye rule; ``item`` (its index) and ``field``
    say where."""

    def __init__(self, item: int | None, field: str, reason: str) -> None:
        where = f"item {item}: " if item is not None else ""
        super().__init__(f"invalid metric data: {where}{field} {reason}")
        self.item = item
        self.field = field


@dataclass(frozen=True)
class MetricDatum:
    """One value of one metric at one time.

    ``dimensions`` are ``(name, value)`` pairs (or a mapping) in the order they are sent;
    ``collect_time`` is epoch milliseconds; ``unit`` is free text up to 32 characters (Cloud
    Eye shows it); ``type`` is ``int`` or ``float``, by default from ``value``'s type.
    """

    metric_name: str
    value: int | float
    dimensions: tuple[tuple[str, str], ...] | Mapping[str, str]
    collect_time: int
    unit: str | None = None
    ttl: int = DEFAULT_TTL
    type: str | None = None

    def pairs(self) -> tuple[tuple[str, str], ...]:
        dimensions = self.dimensions
        if isinstance(dimensions, Mapping):
            return tuple(dimensions.items())
        return tuple(tuple(pair) for pair in dimensions)  # type: ignore[misc]


class CesClient(SignedSender):
    """Sends custom metric data to Cloud Eye for one project, in one namespace.

    ``server`` is the regional endpoint (``https://ces.<region>.myhuaweicloud.com``);
    ``namespace`` is checked at construction. ``timeout`` is ``(connect, read)`` seconds; no
    call lasts longer than ``max_seconds`` (see :mod:`handler.client.sending`). ``clock``
    (epoch seconds) signs requests and bounds ``collect_time``.
    """

    def __init__(
        self,
        access_key_id: str,
        secret_access_key: str,
        project_id: str,
        server: str,
        security_token: str | None = None,
        *,
        namespace: str = DEFAULT_METRICS_NAMESPACE,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retry: RetrySchedule | None = None,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        verify: bool | str = True,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.namespace = validate_namespace(namespace)
        super().__init__(
            Credentials(access_key_id, secret_access_key, security_token),
            project_id,
            server,
            timeout=timeout,
            retry=retry,
            max_seconds=max_seconds,
            verify=verify,
            sleep=sleep,
            clock=clock,
        )
        self._path = f"/V1.0/{self.project_id}/metric-data"

    def __repr__(self) -> str:
        return (
            f"CesClient(server={self.server!r}, project_id={self.project_id!r}, "
            f"namespace={self.namespace!r}, signer={self._signer!r})"
        )

    def put_metric_data(
        self, data: Sequence[MetricDatum], *, deadline: float | None = None
    ) -> SendResult:
        """Send one batch; accepted when Cloud Eye answers 201 (or a 2xx JSON object).

        ``deadline`` is a ``time.monotonic()`` value the call never outlives. A batch that
        breaks a rule raises :class:`InvalidMetricError` before any I/O.
        """
        now_ms = int(self._clock() * 1000)
        body = metric_data_body(self.namespace, data, now_ms=now_ms)
        return self._post(self._path, body, JSON, deadline, _unreadable)

    create_metric_data = put_metric_data  # the official SDK's name for the call


def metric_data_body(
    namespace: str, data: Iterable[MetricDatum], *, now_ms: int | None = None
) -> bytes:
    """The request body: a JSON array in the SDK's field order and JSON spelling.

    ``now_ms`` (epoch milliseconds) checks each ``collect_time`` against the window Cloud
    Eye accepts; None skips that check.
    """
    validate_namespace(namespace)
    items = [_item(namespace, datum, index, now_ms) for index, datum in enumerate(data)]
    if not 1 <= len(items) <= MAX_BATCH_ITEMS:
        raise InvalidMetricError(None, "batch", f"must hold 1 to {MAX_BATCH_ITEMS} items")
    body = json.dumps(items).encode("ascii")
    if len(body) > MAX_BATCH_BYTES:
        raise InvalidMetricError(
            None,
            "batch",
            f"is {len(body)} bytes; Cloud Eye takes at most 512 KB ({MAX_BATCH_BYTES})",
        )
    return body


def metric_batches(namespace: str, data: Iterable[MetricDatum]) -> list[list[MetricDatum]]:
    """``data`` split, in order, into the fewest batches Cloud Eye takes one by one.

    512 KB binds long before 10,000 items do (an item with one dimension is about 190
    bytes, so about 2,700 fit), and a function with many graphs has more to say than one
    batch holds. Each datum is checked as :func:`metric_data_body` checks it (without the
    time window); one that breaks a rule raises :class:`InvalidMetricError`.
    """
    validate_namespace(namespace)
    batches: list[list[MetricDatum]] = []
    size = 0
    for index, datum in enumerate(data):
        # The array's brackets, then ", " before every item but the first.
        item_size = len(json.dumps(_item(namespace, datum, index, None)))
        if (
            batches
            and len(batches[-1]) < MAX_BATCH_ITEMS
            and size + 2 + item_size <= MAX_BATCH_BYTES
        ):
            batches[-1].append(datum)
            size += 2 + item_size
        else:
            batches.append([datum])
            size = 2 + item_size
    return batches


def _item(namespace: str, datum: object, index: int, now_ms: int | None) -> dict[str, object]:
    if not isinstance(datum, MetricDatum):
        shown = type(datum).__name__
        raise InvalidMetricError(index, "datum", f"must be a MetricDatum, not {shown}")
    name = datum.metric_name
    if not isinstance(name, str) or _METRIC_NAME.fullmatch(name) is None:
        raise InvalidMetricError(
            index, "metric_name", "must be 1-96 letters, digits, '_' or '-', starting with a letter"
        )
    dimensions = _dimensions(datum, index)
    value, kind = _value(datum, index)
    ttl = datum.ttl
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL:
        raise InvalidMetricError(index, "ttl", f"must be 1 to {MAX_TTL} seconds")
    collect = datum.collect_time
    if isinstance(collect, bool) or not isinstance(collect, int) or collect <= 0:
        raise InvalidMetricError(index, "collect_time", "must be epoch milliseconds")
    if now_ms is not None:
        back, ahead = COLLECT_WINDOW_MS
        if not now_ms - back <= collect <= now_ms + ahead:
            raise InvalidMetricError(
                index, "collect_time", "must lie within the last 3 days and the next 10 minutes"
            )
    item: dict[str, object] = {
        "metric": {"namespace": namespace, "metric_name": name, "dimensions": dimensions},
        "ttl": ttl,
        "collect_time": collect,
        "value": value,
    }
    if datum.unit is not None:
        if not isinstance(datum.unit, str) or len(datum.unit) > MAX_UNIT_LENGTH:
            raise InvalidMetricError(index, "unit", f"must be text of at most {MAX_UNIT_LENGTH}")
        item["unit"] = datum.unit
    item["type"] = kind
    return item


def _dimensions(datum: MetricDatum, index: int) -> list[dict[str, str]]:
    try:
        pairs = datum.pairs()
    except (TypeError, ValueError):
        raise InvalidMetricError(index, "dimensions", "must be (name, value) pairs") from None
    if not 1 <= len(pairs) <= MAX_DIMENSIONS:
        raise InvalidMetricError(index, "dimensions", f"must be 1 to {MAX_DIMENSIONS}")
    seen: set[str] = set()
    dimensions = []
    for pair in pairs:
        if len(pair) != 2:
            raise InvalidMetricError(index, "dimensions", "must be (name, value) pairs")
        name, value = pair
        if not isinstance(name, str) or _DIMENSION_NAME.fullmatch(name) is None:
            raise InvalidMetricError(
                index,
                "dimension name",
                "must be 1-32 letters, digits, '_' or '-', starting with a letter",
            )
        if name in seen:
            raise InvalidMetricError(index, "dimension name", f"{name!r} is given twice")
        seen.add(name)
        if (
            not isinstance(value, str)
            or not 1 <= len(value) <= _DIMENSION_VALUE_LENGTH
            or _CONTROL.search(value)
        ):
            raise InvalidMetricError(
                index,
                f"dimension {name!r} value",
                f"must be 1-{_DIMENSION_VALUE_LENGTH} characters without control characters",
            )
        dimensions.append({"name": name, "value": value})
    return dimensions


def _value(datum: MetricDatum, index: int) -> tuple[int | float, str]:
    value = datum.value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidMetricError(index, "value", "must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidMetricError(index, "value", "must be finite (JSON has no NaN or infinity)")
    kind = datum.type or ("int" if isinstance(value, int) else "float")
    if kind not in ("int", "float"):
        raise InvalidMetricError(index, "type", "must be int or float")
    if kind == "int" and not (isinstance(value, int) or value.is_integer()):
        raise InvalidMetricError(index, "type", "int needs a whole value")
    return value, kind


def _unreadable(result: WorkflowResult) -> str | None:
    """Cloud Eye answers 201 with an empty body (204 says the same); any other 2xx must be a
    JSON object to count as accepted."""
    if result.status in (201, 204) or isinstance(result.body, dict):
        return None
    return result.errorMessage or "the answer was not a JSON object"
