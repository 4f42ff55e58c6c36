"""What every workflow API call answers with, whichever API answered.

The types mirror the official OBS SDK's ``GetResult`` so code written against its
documentation keeps working, and the DWR client answers with the same types, so nothing
downstream of :mod:`handler.client` needs to know which API is in use. Only the standard
library is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "ExecutionInfo",
    "ExecutionPage",
    "ExecutionSummary",
    "GraphPage",
    "RestoreBody",
    "WorkflowResult",
    "normalise_state",
]

# DWR's status words and the OBS state names the rest of the function speaks.
_DWR_STATUS_TO_STATE = {
    "fail": "FAILED",
    "success": "SUCCESS",
    "running": "RUNNING",
    "timeout": "TIMEOUT",
    "cancel": "CANCELED",
}
DWR_STATUSES = frozenset(_DWR_STATUS_TO_STATE)


def normalise_state(state: object) -> str | None:
    """An execution state in OBS terms (``FAILED``, ``RUNNING``, ...), from either API.

    DWR's words (``fail``, ...) are mapped; an OBS state or an unknown word passes through
    upper-cased, so a new state is shown rather than hidden; a missing one is None.
    """
    if state is None or state == "":
        return None
    text = str(state).strip()
    return _DWR_STATUS_TO_STATE.get(text.lower(), text.upper())


class RestoreBody(NamedTuple):
    """What a successful restore answers with."""

    executionUrn: str | None
    restoredAt: str | None
    executionName: str | None


class ExecutionInfo(NamedTuple):
    """What a successful execution query answers with: the service's execution object.

    ``executionInfo["execution_state"]`` is the state in OBS terms for both APIs.
    ``errorMessages`` are the failed nodes' ``error_message`` values (DWR only: the OBS API
    says nothing about why an execution failed). ``stoppedAt`` is when the execution last
    stopped, in epoch seconds, never later than the true moment (DWR only: the OBS query
    documents no stop time); it tells a run that stopped after a restore was sent from the
    failure the restore was for.
    """

    executionInfo: dict[str, Any]
    status: str | None = None  # the service's own word for the state (DWR: ``fail``, ...)
    errorMessages: tuple[str, ...] = ()
    stoppedAt: float | None = None

    @property
    def executionState(self) -> str | None:
        return self.executionInfo.get("execution_state")


class ExecutionSummary(NamedTuple):
    """One execution in a list page; field names follow both APIs' list answers.

    A named tuple rather than a frozen dataclass: a sweep builds one per listed execution
    (10,000 in the benchmark), and ``_make`` builds it at a third of the dataclass's cost.
    """

    execution_name: str | None
    execution_urn: str | None = None
    graph_urn: str | None = None
    execution_type: str | None = None
    execution_state: str | None = None
    started_at: str | None = None
    stopped_at: str | None = None

    @property
    def state(self) -> str | None:
        """``execution_state`` in OBS terms (``FAILED``, ``SUCCESS``, ...)."""
        return normalise_state(self.execution_state)


class ExecutionPage(NamedTuple):
    """One page of a graph's executions.

    The next page starts at ``next_marker`` (OBS) or ``next_offset`` (DWR) when truncated.
    """

    executions: tuple[ExecutionSummary, ...] = ()
    count: int | None = None
    is_truncated: bool = False
    next_offset: int | None = None
    next_marker: str | None = None


class GraphPage(NamedTuple):
    """One page of graph names; the next page starts at ``next_start`` when truncated."""

    names: tuple[str, ...] = ()
    is_truncated: bool = False
    next_start: int | None = None


@dataclass
class WorkflowResult:
    """The outcome of one API operation, shaped like the SDK's ``GetResult``.

    ``status`` is the HTTP status of the last attempt, or ``0`` when no answer arrived
    (connection refused, reset, timed out). ``attempts`` counts the tries made.
    ``maybe_applied`` is true when no answer arrived but the request may have reached the
    service (a read timeout or a reset after sending): the operation's effect is unknown.
    """

    status: int
    reason: str = ""
    errorCode: str | None = None
    errorMessage: str | None = None
    requestId: str | None = None
    indicator: str | None = None
    hostId: str | None = None
    resource: str | None = None
    header: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None
    attempts: int = 1
    maybe_applied: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        """True for failures that may succeed later: no answer, 429 or 5xx."""
        return self.status == 0 or self.status == 429 or self.status >= 500


def text_or_none(value: object, limit: int = 500) -> str | None:
    """A service-supplied value as a bounded string; empty and missing are None."""
    if value is None or value == "":
        return None
    return str(value)[:limit]


def int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def execution_summaries(payload: dict[str, Any]) -> tuple[ExecutionSummary, ...]:
    """The ``executions`` of a list answer (the same fields in both APIs), each value
    bounded exactly as :func:`text_or_none` bounds it, with a short path for the usual
    non-empty string: a sweep reads every listed execution."""
    executions = payload.get("executions")
    if not isinstance(executions, list):
        return ()
    make, names = ExecutionSummary._make, ExecutionSummary._fields
    return tuple(
        make(
            [
                (value[:500] or None)
                if (value := item.get(name)).__class__ is str
                else text_or_none(value)
                for name in names
            ]
        )
        for item in executions
        if isinstance(item, dict)
    )


def restore_body(payload: dict[str, Any]) -> RestoreBody:
    return RestoreBody(
        executionUrn=text_or_none(payload.get("execution_urn")),
        restoredAt=text_or_none(payload.get("restored_at")),
        executionName=text_or_none(payload.get("execution_name")),
    )


def graph_names(payload: dict[str, Any]) -> tuple[str, ...]:
    """The graph names of a list-graphs answer (``graphs[].name`` in both APIs)."""
    graphs = payload.get("graphs")
    return tuple(
        name
        for graph in (graphs if isinstance(graphs, list) else ())
        if isinstance(graph, dict) and (name := text_or_none(graph.get("name")))
    )
