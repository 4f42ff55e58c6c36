"""What becomes of an item (:class:`Outcome`, :class:`Result`) and of a delivery (:class:`Answer`).

Every item ends in exactly one outcome, and the outcome says what it implies - whether it is
final or the delivery must come again, the level of its log line, the type of its sink event,
its part in the HTTP status. A :class:`Result` is built once per item, frozen, and is the one
place that knows which fields go where: :meth:`Result.answer` (what callers and the sink
see), :meth:`Result.line` (the log line), :meth:`Result.record` (what the store keeps, and
:meth:`Result.duplicate` reads back for a redelivery). An :class:`Answer` holds one
delivery's results and turns them into the JSON document every entry point answers with,
including the error document of a delivery refused outright (:func:`error_document`).

Standard library only: entry points answer with these before the pipeline (and ``requests``)
is loaded.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from handler.intake import Item
    from handler.invocation import Forced


class Outcome(str, Enum):
    """The one outcome of an item, and what it implies.

    ``final``: nothing more will happen to this item (a retried one is delivered again);
    ``level``: its log line's level; ``event_type``: the suffix of its sink CloudEvent type;
    ``http_status``: its part in the delivery's status (:attr:`Answer.status`). A ``str``
    enum: it compares equal to, and serialises as, its README name.
    """

    level: int
    event_type: str
    final: bool

    def __new__(cls, value: str, level: int, event_type: str, final: bool = True) -> Outcome:
        member = str.__new__(cls, value)
        member._value_ = value
        member.level = level
        member.event_type = event_type
        member.final = final
        return member

    RESTORED = ("restored", logging.INFO, "restored")
    DRY_RUN = ("dry_run", logging.INFO, "restore_skipped")
    SKIPPED = ("skipped", logging.INFO, "restore_skipped")
    DUPLICATE = ("duplicate", logging.INFO, "restore_skipped")
    DEFERRED = ("deferred", logging.INFO, "restore_deferred")
    REJECTED = ("rejected", logging.WARNING, "restore_rejected")
    FAILED = ("failed", logging.ERROR, "restore_failed")
    BUDGET_EXHAUSTED = ("budget_exhausted", logging.ERROR, "restore_failed")
    RETRYABLE_ERROR = ("retryable_error", logging.WARNING, "restore_failed", False)

    def __str__(self) -> str:
        return self.value

    @property
    def http_status(self) -> int:
        """503: deliver again; 400: unusable (when every item of a delivery is); else 200."""
        if not self.final:
            return 503
        return 400 if self is Outcome.REJECTED else 200


# A log line's fields, in order; absent values are written as null so every line has the same
# keys and queries never need an "exists" test.
LINE_FIELDS = (
    "outcome", "graphName", "executionName", "eventId", "invocationId", "requestId",
    "attempts", "durationMs", "errorCode", "errorMessage", "reason", "rule", "executionError",
)  # fmt: skip
# What a redelivery is answered with from the record (besides the outcome it names).
_REPEATED_FIELDS = (
    "status", "requestId", "executionUrn", "restoredAt", "errorCode", "errorMessage", "rule",
)  # fmt: skip
NOT_RECORDED = "outcome not recorded, state store unavailable"


def line_fields(**values: Any) -> dict[str, Any]:
    """A log line's fields: every one of :data:`LINE_FIELDS`, null unless given."""
    return {**dict.fromkeys(LINE_FIELDS), **values}


class Result(NamedTuple):
    """The result of one item, built once; see the module docstring.

    ``reason`` is why, in words safe to answer; ``detail`` is for the log line only (it may
    name hosts, paths or raw exception text). ``severity`` raises the line's level (an
    operator must act). ``redeliver`` marks a result that is not final although its outcome
    may be (a duplicate still in flight elsewhere). ``forced`` is an operator's ``--force``;
    ``maybe_applied`` a restore sent without an answer; ``not_recorded`` the store's failure
    to keep a final outcome.
    """

    event_id: str | None
    graph_name: str | None
    execution_name: str | None
    outcome: Outcome
    reason: str = ""
    rule: str | None = None
    status: int | None = None
    request_id: str | None = None
    execution_urn: str | None = None
    restored_at: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    attempts: int = 0
    execution_error: str | None = None
    forced: Forced | None = None
    severity: int | None = None
    redeliver: bool = False
    maybe_applied: bool = False
    detail: str = ""
    not_recorded: str | None = None
    # When the failure stopped (wall-clock seconds), when the item or a query said: what
    # observers measure the time to restore from. Not answered, logged or recorded.
    failed_at: float | None = None
    # How the failure came in - "event", "sweep" or "cli" - for a restore item (None for
    # a request that was no failure to restore): for the execution's ledger. Not answered,
    # logged or recorded.
    door: str | None = None
    # The outcome an earlier invocation decided, standing: a sweep answers a held graph's
    # failures that are still deferred without deciding them again (nothing changed, so
    # nothing is written - no ledger entry, no log line of its own). Not answered or logged.
    standing: bool = False

    @classmethod
    def duplicate(cls, item: Item, record: Mapping[str, Any], reason: str, **fields: Any) -> Result:
        """A redelivery of a handled item: answered with what the first delivery recorded."""
        repeated = {name: record.get(name) for name in _REPEATED_FIELDS}
        return cls(
            item.event_id,
            item.graph_name,
            item.execution_name,
            Outcome.DUPLICATE,
            reason,
            rule=repeated["rule"],
            status=repeated["status"],
            request_id=repeated["requestId"],
            execution_urn=repeated["executionUrn"],
            restored_at=repeated["restoredAt"],
            error_code=repeated["errorCode"],
            error_message=repeated["errorMessage"],
            **fields,
        )

    @classmethod
    def internal_error(cls, item: Item, exc: BaseException) -> Result:
        """An item whose processing raised: retried, so nothing is lost."""
        return cls(
            item.event_id,
            item.graph_name,
            item.execution_name,
            Outcome.RETRYABLE_ERROR,
            "unexpected error while processing this item; see the log line's exception",
            error_code="InternalError",
            error_message=type(exc).__name__,
        )

    @property
    def retry(self) -> bool:
        """Whether the delivery must come again for this item."""
        return self.redeliver or not self.outcome.final

    @property
    def level(self) -> int:
        """The log line's level: the outcome's, raised by ``severity`` and by ``--force``
        (rules skipped are worth a look)."""
        return max(self.outcome.level, self.severity or 0, logging.WARNING if self.forced else 0)

    @property
    def shown_reason(self) -> str:
        """The reason as answered and logged: who forced it first, the store's failure last."""
        parts = [self.forced.describe()] if self.forced else []
        if self.reason:
            parts.append(self.reason)
        if self.not_recorded is not None:
            parts.append(NOT_RECORDED)
        return "; ".join(parts)

    def unrecorded(self, problem: str) -> Result:
        """This result, saying that the store could not keep it; ``problem`` (it names the
        store's host or path) goes to the log line only."""
        return self._replace(not_recorded=problem)

    def answer(self) -> dict[str, Any]:
        """The item as callers and the sink see it, every field in this order."""
        return {
            "eventId": self.event_id,
            "graphName": self.graph_name,
            "executionName": self.execution_name,
            "outcome": self.outcome.value,
            "status": self.status,
            "requestId": self.request_id,
            "executionUrn": self.execution_urn,
            "restoredAt": self.restored_at,
            "errorCode": self.error_code,
            "errorMessage": self.error_message,
            "attempts": self.attempts,
            "reason": self.shown_reason,
            "rule": self.rule,
            "executionError": self.execution_error,
        }

    def line(self, invocation_id: str, duration_ms: float) -> dict[str, Any]:
        """The log line's fields (:data:`LINE_FIELDS`, then ``detail`` and ``forced``)."""
        answer = self.answer()
        fields = {name: answer.get(name) for name in LINE_FIELDS}
        fields.update(invocationId=invocation_id, durationMs=round(duration_ms, 3))
        detail = self.not_recorded if self.not_recorded is not None else self.detail
        if detail:
            fields["detail"] = detail
        if self.forced:
            fields["forced"] = self.forced.document()  # an operator's --force: who, and why
        return fields

    def record(self) -> dict[str, Any]:
        """What the store keeps: what a redelivery is answered with, which execution it was
        for (an id reused for another execution must not be answered with it), and who
        forced it, if anyone."""
        record = {
            "outcome": self.outcome.value,
            "status": self.status,
            "requestId": self.request_id,
            "executionUrn": self.execution_urn,
            "restoredAt": self.restored_at,
            "errorCode": self.error_code,
            "errorMessage": self.error_message,
            "reason": self.reason,
            "rule": self.rule,
            "graphName": self.graph_name,
            "executionName": self.execution_name,
        }
        if self.forced:
            record["forced"] = self.forced.document()
        return record


def recorded_for(record: Mapping[str, Any] | None) -> tuple[Any, Any] | None:
    """The (graph, execution) a record is for, or None when it does not say (written before
    records carried them)."""
    if not record or record.get("graphName") is None or record.get("executionName") is None:
        return None
    return record["graphName"], record["executionName"]


class Answer(NamedTuple):
    """The answer to one delivery: its results, a summary, and the status to report."""

    results: tuple[Result, ...] = ()
    error: Mapping[str, str] | None = None  # the delivery could not be used at all
    error_status: int | None = None

    @classmethod
    def refused(cls, code: str, message: str, status: int | None = None) -> Answer:
        """A delivery refused outright: no items, the error's code and message."""
        return cls((), {"code": code, "message": message}, status)

    @property
    def retry(self) -> bool:
        """Some item is not final: the platform should deliver again."""
        return any(result.retry for result in self.results)

    @property
    def summary(self) -> dict[str, int]:
        return dict(Counter(result.outcome.value for result in self.results))

    @property
    def status(self) -> int:
        if self.error_status is not None:
            return self.error_status
        if self.retry:  # an item not final, or a duplicate still in flight elsewhere
            return 503
        if self.results and all(r.outcome.http_status == 400 for r in self.results):
            return 400
        return 200

    def document(self) -> dict[str, Any]:
        """The JSON answer of every entry point."""
        document: dict[str, Any] = {
            "results": [result.answer() for result in self.results],
            "summary": self.summary,
        }
        if self.error:
            document["error"] = dict(self.error)
        return document


def error_document(code: str, message: str) -> dict[str, Any]:
    """The document of a call refused before any item was read (auth, method, a crash)."""
    return Answer.refused(code, message).document()
