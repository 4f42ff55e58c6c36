"""The report stage: one JSON log line per item, and optionally one result CloudEvent per item.

Log lines go to stdout through the standard ``logging`` module, one JSON object a line, so
they parse in LTS / Cloud Logging and grep well. The sink CloudEvent is sent *before* the
item's log line so that a sink failure is recorded in that same line (``sinkError``): every
item still ends in exactly one line, and a sink failure never turns a restore into a failure.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import IO, Any

LOGGER_NAME = "obs_workflow_restore"
EVENT_SOURCE = "obs-workflow-restore"
EVENT_TYPE_PREFIX = "com.huaweicloud.obs.workflow.execution."

# Outcome → (log level, CloudEvent type suffix).
OUTCOMES: dict[str, tuple[int, str]] = {
    "restored": (logging.INFO, "restored"),
    "dry_run": (logging.INFO, "restore_skipped"),
    "skipped": (logging.INFO, "restore_skipped"),
    "duplicate": (logging.INFO, "restore_skipped"),
    "rejected": (logging.WARNING, "restore_rejected"),
    "retryable_error": (logging.WARNING, "restore_failed"),
    "failed": (logging.ERROR, "restore_failed"),
    "budget_exhausted": (logging.ERROR, "restore_failed"),
}

# The fields of one item's result, as answered to the caller and sent to the sink.
RESULT_FIELDS = (
    "eventId", "graphName", "executionName", "outcome", "status", "requestId", "executionUrn",
    "restoredAt", "errorCode", "errorMessage", "attempts", "reason",
)  # fmt: skip

# The fields of a log line, in order; absent values are written as null so every line has
# the same keys and queries never need an "exists" test.
LINE_FIELDS = (
    "outcome", "graphName", "executionName", "eventId", "invocationId", "requestId",
    "attempts", "durationMs", "errorCode", "errorMessage", "reason",
)  # fmt: skip


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON object; structured fields come from ``extra={"fields": …}``."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "message": record.getMessage(),
        }
        document.update(getattr(record, "fields", {}))
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", stream: IO[str] | None = None) -> logging.Logger:
    """Give the project logger exactly one JSON handler on ``stream`` (stdout by default).

    Idempotent, so a warm function instance that configures again does not double its lines.
    """
    logger = logging.getLogger(LOGGER_NAME)
    for existing in list(logger.handlers):
        logger.removeHandler(existing)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


class Reporter:
    """Writes the record of every decision: log lines, and CloudEvents to an optional sink."""

    def __init__(
        self,
        logger: logging.Logger,
        sink_url: str | None = None,
        sink_timeout: tuple[float, float] = (2.0, 5.0),
    ) -> None:
        self._logger = logger
        self._sink_url = sink_url
        self._sink_timeout = sink_timeout
        self._sink_session: Any = None

    def started(self, settings: dict[str, Any], store: str) -> None:
        """The start-up line: the effective settings, already redacted by the caller."""
        self._logger.info("started", extra={"fields": {"settings": settings, "store": store}})

    def item(
        self,
        result: dict[str, Any],
        invocation_id: str,
        duration_ms: float,
        failure: BaseException | None = None,
    ) -> None:
        """Record one item's final outcome: the sink event first, then exactly one log line.

        ``failure`` is an unexpected exception; its traceback goes into that same line.
        """
        level, _ = OUTCOMES[result["outcome"]]
        fields = {name: result.get(name) for name in LINE_FIELDS}
        fields.update(invocationId=invocation_id, durationMs=round(duration_ms, 3))
        if self._sink_url:
            sink_error = self._emit(result)
            if sink_error:
                fields["sinkError"] = sink_error
        self._logger.log(
            level, f"restore {result['outcome']}", extra={"fields": fields}, exc_info=failure
        )

    def delivery_rejected(self, code: str, message: str, invocation_id: str) -> None:
        """Record a delivery that held no readable item at all (so it still leaves a line)."""
        fields = dict.fromkeys(LINE_FIELDS)
        fields.update(
            outcome="rejected", invocationId=invocation_id, errorCode=code, reason=message
        )
        self._logger.warning("delivery rejected", extra={"fields": fields})

    def _emit(self, result: dict[str, Any]) -> str | None:
        """POST one structured CloudEvent to the sink; return an error text instead of raising."""
        from cloudevents.conversion import to_structured
        from cloudevents.http import CloudEvent

        _, suffix = OUTCOMES[result["outcome"]]
        attributes = {
            "id": str(uuid.uuid4()),
            "source": EVENT_SOURCE,
            "type": EVENT_TYPE_PREFIX + suffix,
            "subject": f"{result.get('graphName')}/{result.get('executionName')}",
            "datacontenttype": "application/json",
        }
        data = {name: result.get(name) for name in RESULT_FIELDS}
        headers, body = to_structured(CloudEvent(attributes, data))
        try:
            response = self._session().post(
                self._sink_url,
                data=body,
                headers=headers,
                timeout=self._sink_timeout,
                allow_redirects=False,
            )
        except Exception as exc:  # any sink failure is reported, never raised
            first_line = (str(exc).splitlines() or [""])[0][:200]
            return f"{type(exc).__name__}: {first_line}"
        if response.status_code >= 300:
            return f"sink answered {response.status_code}"
        return None

    def _session(self) -> Any:
        if self._sink_session is None:
            import requests

            self._sink_session = requests.Session()
        return self._sink_session


def monotonic_ms() -> float:
    """Milliseconds on the monotonic clock, for durations."""
    return time.monotonic() * 1000.0
