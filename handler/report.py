"""The report stage: one JSON log line per item, and optionally one result CloudEvent per item.

Log lines go to stdout through the standard ``logging`` module, one JSON object a line, so
they parse in LTS / Cloud Logging and grep well. Every item ends in exactly one result line.
The sink CloudEvent is sent afterwards, off the request path (:class:`SinkSender`): a slow or
failing sink never delays an answer or changes an outcome; its failures get lines of their own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import IO, Any

from handler.outage import BreakerEvent
from handler.outcomes import Outcome, Result, line_fields
from handler.redaction import redact_url_in

LOGGER_NAME = "obs_workflow_restore"
EVENT_SOURCE = "obs-workflow-restore"
EVENT_TYPE_PREFIX = "com.huaweicloud.obs.workflow.execution."
FAILED_SUFFIX = "failed"  # type suffix of the failures a sweep publishes
SINK_QUEUE_SIZE = 1000  # results waiting for the sink; beyond this they are dropped, counted
SINK_SHUTDOWN_SECONDS = 2.0  # how long a stopping process waits for queued sink events


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

    def __init__(self, logger: logging.Logger, sink: SinkSender | None = None) -> None:
        self._logger = logger
        self._sink = sink

    def started(self, settings: dict[str, Any], store: str) -> None:
        """The start-up line: the effective settings, already redacted by the caller."""
        self._logger.info("started", extra={"fields": {"settings": settings, "store": store}})

    def item(
        self,
        result: Result,
        invocation_id: str,
        duration_ms: float,
        failure: BaseException | None = None,
    ) -> None:
        """Record one item's final outcome: exactly one log line, then the sink event.

        ``failure`` is an unexpected exception; its traceback goes into that same line.
        """
        fields = result.line(invocation_id, duration_ms)
        self._logger.log(
            result.level,
            f"restore {result.outcome.value}",
            extra={"fields": fields},
            exc_info=failure,
        )
        if self._sink is not None:
            subject = f"{result.graph_name}/{result.execution_name}"
            self._sink.submit(result.outcome.event_type, subject, result.answer())

    def still_deferred(
        self,
        graph: str,
        results: Sequence[Result],
        due_from: float,
        due_to: float,
        invocation_id: str,
    ) -> None:
        """A sweep's failures of one held graph answered ``deferred`` as decided before (each
        had its own line then): one line for them all, with how many, why, and when they
        come due."""
        codes = Counter(result.error_code or "none" for result in results)
        fields = {
            "graphName": graph,
            "count": len(results),
            "reason": results[0].shown_reason,
            "errorCodes": dict(sorted(codes.items())),
            "dueFrom": _utc(due_from),
            "dueTo": _utc(due_to),
            "invocationId": invocation_id,
        }
        self._logger.info("restores still deferred", extra={"fields": fields})

    def breaker(self, event: BreakerEvent) -> None:
        """One breaker transition (:mod:`handler.outage`): opened or reopened at WARNING with
        the re-failures that opened it, closed at INFO - the store makes sure exactly one
        instance writes each."""
        self._logger.log(event.level, event.message, extra={"fields": event.log_fields()})

    def failure_found(self, failure: dict[str, Any]) -> None:
        """Publish a failure a sweep found as ``…execution.failed``: the event Huawei Cloud
        does not emit, for alerting and other consumers (only when a sink is configured)."""
        if self._sink is not None:
            subject = f"{failure.get('graphName')}/{failure.get('executionName')}"
            self._sink.submit(FAILED_SUFFIX, subject, failure)

    def store_problem(self, detail: str) -> None:
        """The state store failed outside an item (a sweep's lease): why, for the operator."""
        self._logger.error("state store unavailable", extra={"fields": {"detail": detail}})

    def ledger_not_written(self, detail: str, graph: str, execution: str) -> None:
        """An execution's ledger entry could not be written (:mod:`handler.ledger`): the
        outcome stands; ``history`` will miss that entry."""
        fields = {"graphName": graph, "executionName": execution, "detail": detail}
        self._logger.warning("ledger not written", extra={"fields": fields})

    def sweep_summary(self, summary: dict[str, Any], invocation_id: str) -> None:
        """The one line a sweep ends with; ERROR when a graph could not be listed."""
        level = logging.ERROR if summary.get("errors") else logging.INFO
        fields = {"sweep": summary, "invocationId": invocation_id}
        self._logger.log(level, "sweep finished", extra={"fields": fields})

    def sweep_refused(self, code: str, message: str, invocation_id: str) -> None:
        """A timer's overrides were wrong, so no sweep ran: ERROR, since no caller reads a
        timer's answer and every later timer will be refused the same way."""
        fields = {"errorCode": code, "reason": message, "invocationId": invocation_id}
        self._logger.error("sweep refused", extra={"fields": fields})

    def sweep_overrides_ignored(self, why: str, invocation_id: str) -> None:
        """A timer's ``user_event`` was not meant as overrides: the default sweep ran."""
        fields = {"reason": f"{why}: the default sweep runs", "invocationId": invocation_id}
        self._logger.warning("sweep overrides ignored", extra={"fields": fields})

    def delivery_rejected(self, code: str, message: str, invocation_id: str) -> None:
        """Record a delivery that held no readable item at all (so it still leaves a line)."""
        fields = line_fields(
            outcome=Outcome.REJECTED.value,
            invocationId=invocation_id,
            errorCode=code,
            reason=message,
        )
        self._logger.warning("delivery rejected", extra={"fields": fields})

    def refused(self, status: int, code: str, caller: str) -> None:
        """A call refused before any work (401, 403, 405): who, never with what token."""
        fields = {"status": status, "errorCode": code, "caller": caller}
        self._logger.warning("call refused", extra={"fields": fields})

    def notification(self, level: int, message: str, fields: dict[str, Any]) -> None:
        """A give-up message queued, sent, kept for later or refused (:mod:`handler.escalation`):
        the operator's proof that someone was told, or why not yet."""
        self._logger.log(level, message, extra={"fields": fields})

    def crashed(self, failure: BaseException) -> None:
        """An exception no stage handled: answered as JSON 500, its traceback logged here."""
        self._logger.error(
            "unexpected error", extra={"fields": {"errorCode": "InternalError"}}, exc_info=failure
        )

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for queued sink events; True when none is left."""
        return self._sink is None or self._sink.flush(timeout)

    def close(self, timeout: float = SINK_SHUTDOWN_SECONDS) -> None:
        if self._sink is not None:
            self._sink.close(timeout)


class SinkSender:
    """Sends result CloudEvents to the sink from one background thread.

    The sink is someone else's service: a slow or dead one must never delay an answer or
    change an outcome. So :meth:`submit` only queues (bounded; on overflow the event is
    dropped and counted), one daemon thread posts with bounded timeouts, every failure or
    drop is logged with the item's event id, and :meth:`flush` / :meth:`close` wait a bounded
    time for what is queued (the event function flushes after each invocation, every process
    at exit).
    """

    def __init__(
        self,
        url: str,
        logger: logging.Logger,
        *,
        timeout: tuple[float, float] = (2.0, 5.0),
        max_queued: int = SINK_QUEUE_SIZE,
    ) -> None:
        self.url = url
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._logger = logger
        self._timeout = timeout
        self._queue: queue.Queue[tuple[str, str, dict[str, Any]] | None] = queue.Queue(max_queued)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, type_suffix: str, subject: str, data: dict[str, Any]) -> bool:
        """Queue one CloudEvent for the sink; False when the queue is full and it was dropped."""
        self._ensure_thread()
        try:
            self._queue.put_nowait((type_suffix, subject, data))
        except queue.Full:
            self.dropped += 1
            self._logger.warning(
                "sink event dropped: queue full",
                extra={
                    "fields": {
                        "eventId": data.get("eventId"),
                        "subject": subject,
                        "dropped": self.dropped,
                    }
                },
            )
            return False
        return True

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every queued event was sent or given up."""
        deadline = time.monotonic() + max(0.0, timeout)
        done = self._queue.all_tasks_done
        with done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                done.wait(remaining)
        return True

    def close(self, timeout: float = SINK_SHUTDOWN_SECONDS) -> None:
        """Flush for at most ``timeout`` seconds, then stop the thread."""
        flushed = self.flush(timeout)
        if not flushed:
            self._logger.warning(
                "sink events not sent at shutdown",
                extra={"fields": {"unsent": self._queue.unfinished_tasks}},
            )
        if self._thread is not None and flushed:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="obs-workflow-restore-sink", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        import requests

        session = requests.Session()
        while True:
            event = self._queue.get()
            try:
                if event is None:
                    return
                error = self._post(session, *event)
                if error is None:
                    self.sent += 1
                else:
                    self.failed += 1
                    _, subject, data = event
                    fields = {"eventId": data.get("eventId"), "subject": subject}
                    self._logger.warning(
                        "sink event not delivered", extra={"fields": {**fields, "sinkError": error}}
                    )
            finally:
                self._queue.task_done()

    def _post(
        self, session: Any, type_suffix: str, subject: str, data: dict[str, Any]
    ) -> str | None:
        """POST one structured CloudEvent; return an error text instead of raising."""
        import uuid  # only a sink needs it; a cold start without one never loads it

        from cloudevents.conversion import to_structured
        from cloudevents.http import CloudEvent

        attributes = {
            "id": str(uuid.uuid4()),
            "source": EVENT_SOURCE,
            "type": EVENT_TYPE_PREFIX + type_suffix,
            "subject": subject,
            "datacontenttype": "application/json",
        }
        try:
            headers, body = to_structured(CloudEvent(attributes, data))
            response = session.post(
                self.url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            )
            response.close()
        except Exception as exc:  # any sink failure is reported, never raised
            # The library's message quotes the URL, whose query or userinfo may be its key.
            first_line = redact_url_in((str(exc).splitlines() or [""])[0], self.url)
            return f"{type(exc).__name__}: {first_line[:200]}"
        if response.status_code >= 300:
            return f"sink answered {response.status_code}"
        return None


def monotonic_ms() -> float:
    """Milliseconds on the monotonic clock, for durations."""
    return time.monotonic() * 1000.0


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
