"""The sweep: find the failed executions nobody reported, as restore items for the pipeline.

Huawei Cloud emits no event when a workflow execution fails, so a restore function that only
waits for events may wait forever. A sweep lists executions instead - one graph at a time,
one page at a time (pages are streamed, never all held) - and turns each failure that
stopped within the lookback window into an :class:`~handler.intake.Item` whose identity is
that failure (graph, execution and stop time): a redelivered or overlapping sweep finds the
same identity and the pipeline's dedupe answers ``duplicate``; a *new* failure of the same
execution has a new stop time and is restored again, within the restore budget.

The two APIs list differently: OBS has no state filter and orders by execution type and
name (every page is read, failures are picked on our side, ``x-workflow-next-marker``
pages); DWR filters ``status=fail`` and a time window on the server (offset pages).

This module only reads: it talks to the client stage for listing and leaves admitting,
restoring and reporting to :mod:`handler.pipeline`, which runs the sweep.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from handler.intake import IntakeError, Item
from handler.intake.identity import sweep_identity
from handler.intake.items import RESTORE
from handler.names import InvalidNameError, validate_name
from handler.settings import Settings, SettingsError, parse_duration

SWEEP = "sweep"  # Item.shape of what a sweep found
LIST_PAGE_SIZE = {"obs": 1000, "dwr": 200}  # the largest page each API serves
DWR_WINDOW_START_SLACK = timedelta(days=1)
DWR_WINDOW_END_SLACK = timedelta(minutes=1)
# Time kept back from the invocation's deadline for the items already found and the summary.
DEADLINE_RESERVE_SECONDS = 2.0
# How OBS (``FAILED``) and DWR (``fail``) spell a failure; anything else is normalised first.
_FAILED_WORDS = frozenset({"FAILED", "fail"})


@dataclass(frozen=True)
class SweepRequest:
    """What one sweep covers: settings' defaults, overridden per run (timer, HTTP, CLI)."""

    graphs: tuple[str, ...] = ()  # empty: every graph the list API returns, allowlist-filtered
    lookback: float = 86400.0
    max_restores: int = 50
    dry_run: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SweepRequest:
        return cls(
            graphs=settings.sweep_graphs,
            lookback=settings.sweep_lookback,
            max_restores=settings.sweep_max_restores,
            dry_run=settings.dry_run,
        )

    def overridden(self, overrides: Any) -> SweepRequest:
        """This request with a JSON object's ``graphs``, ``lookback`` and ``dryRun`` applied.

        Overrides come from outside (a timer's ``user_event``, an HTTP body), so a bad one is
        an :class:`~handler.intake.IntakeError` (400) naming the field; ``dryRun`` can only
        turn a dry run on, never off.
        """
        if overrides in (None, "", {}):
            return self
        if not isinstance(overrides, dict):
            raise IntakeError(400, "BadSweepRequest", "sweep overrides must be a JSON object")
        unknown = sorted(set(overrides) - {"graphs", "lookback", "dryRun"})
        if unknown:
            raise IntakeError(400, "BadSweepRequest", f"unknown sweep field(s): {unknown}")
        graphs, lookback, dry_run = self.graphs, self.lookback, self.dry_run
        if "graphs" in overrides:
            graphs = _graph_names(overrides["graphs"])
        if "lookback" in overrides:
            lookback = _lookback(overrides["lookback"])
        if "dryRun" in overrides:
            if not isinstance(overrides["dryRun"], bool):
                raise IntakeError(400, "BadSweepRequest", "dryRun must be true or false")
            dry_run = dry_run or overrides["dryRun"]
        return SweepRequest(graphs, lookback, self.max_restores, dry_run)


@dataclass(frozen=True)
class Failure:
    """One failed execution a listing found."""

    graph: str
    execution: str
    execution_urn: str | None
    stopped_at: str | None  # the service's text; None when it gave no stop time
    started_at: str | None

    def item(self) -> Item:
        """The restore item: its identity is this failure, not just the execution."""
        when = self.stopped_at or self.started_at or "unknown"
        event_id = sweep_identity(self.graph, self.execution, when)
        moment = _parse_time(self.stopped_at) if self.stopped_at else None
        return Item(
            RESTORE,
            event_id,
            SWEEP,
            self.graph,
            self.execution,
            source=SWEEP,
            failed_at=moment.timestamp() if moment else None,
        )

    def event_data(self) -> dict[str, Any]:
        """What the published ``…execution.failed`` CloudEvent carries."""
        return {
            "graphName": self.graph,
            "executionName": self.execution,
            "executionUrn": self.execution_urn,
            "stoppedAt": self.stopped_at,
            "startedAt": self.started_at,
        }


@dataclass
class SweepSummary:
    """The one summary line and document of a sweep."""

    graphs_scanned: int = 0
    pages: int = 0
    executions_listed: int = 0
    failures_found: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    waiting: int = 0  # failures left for the next sweep: the restore cap was reached
    errors: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None  # why the sweep ended early: "deadline", "sweep in progress"
    duration_ms: float = 0.0

    def document(self) -> dict[str, Any]:
        return {
            "graphsScanned": self.graphs_scanned,
            "pages": self.pages,
            "executionsListed": self.executions_listed,
            "failuresFound": self.failures_found,
            "outcomes": dict(self.outcomes),
            "waitingForNextSweep": self.waiting,
            "errors": list(self.errors),
            "stopped": self.stopped,
            "durationMs": round(self.duration_ms, 3),
        }


class ListingError(Exception):
    """A list call failed after the client's retries; the sweep reports it and goes on."""

    def __init__(self, graph: str | None, result: Any) -> None:
        super().__init__(f"listing {graph or 'graphs'} failed: {result.status}")
        self.graph = graph
        self.status = result.status
        self.error_code = result.errorCode


class Lister:
    """Lists one API's graphs and failures with a client, streaming page by page.

    ``time_left`` answers whether there is time for another call; ``max_pages`` bounds the
    pages read per graph, so one huge graph cannot take a whole sweep.
    """

    def __init__(
        self,
        client: Any,
        api: str,
        summary: SweepSummary,
        *,
        time_left: Callable[[], bool],
        deadline: float | None,
        max_pages: int,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self._client = client
        self._api = api
        self._summary = summary
        self._time_left = time_left
        self._deadline = deadline
        self._max_pages = max_pages
        self._now = now
        self._left_the_list = 0  # failures restored since the current page was read

    def restored(self) -> None:
        """Tell the lister the failure it last yielded was restored.

        DWR lists only what is failed *now*, by offset: each failure restored while a page is
        being worked through leaves that list, and the next page would start that many
        entries too far. OBS pages by a marker (type and name), which a restore does not move.
        """
        self._left_the_list += 1

    def graphs(self) -> Iterator[str]:
        """Every graph name the list-graphs API returns, page by page."""
        start = None
        while self._time_left():
            result = self._client.listWorkflow(start=start, limit=1000, deadline=self._deadline)
            if not result.ok or result.body is None:
                raise ListingError(None, result)
            yield from result.body.names
            if not result.body.is_truncated or result.body.next_start is None:
                return
            start = result.body.next_start

    def failures(self, graph: str, lookback: float) -> Iterator[Failure]:
        """The failures of ``graph`` that stopped (or started) within ``lookback`` seconds."""
        since = self._now() - timedelta(seconds=lookback)
        pages = self._dwr_pages(graph, since) if self._api == "dwr" else self._obs_pages(graph)
        not_failed: set[str | None] = set()
        for page in pages:
            self._summary.pages += 1
            self._summary.executions_listed += len(page.executions)
            for summary in page.executions:
                # A sweep checks every listed execution (10,000 in the benchmark) and a page
                # holds few distinct states: the services' words for a failure, and states
                # already seen not to be one, skip normalising the state again.
                state = summary.execution_state
                if state not in _FAILED_WORDS:
                    if state in not_failed:
                        continue
                    if summary.state != "FAILED":
                        not_failed.add(state)
                        continue
                if not summary.execution_name:
                    continue
                if not _within(summary.stopped_at or summary.started_at, since):
                    continue
                yield Failure(
                    graph,
                    summary.execution_name,
                    summary.execution_urn,
                    summary.stopped_at,
                    summary.started_at,
                )

    def _obs_pages(self, graph: str) -> Iterator[Any]:
        marker = None
        for _ in range(self._max_pages):
            if not self._time_left():
                return
            result = self._client.listWorkflowExecution(
                graph, nextMarker=marker, limit=LIST_PAGE_SIZE["obs"], deadline=self._deadline
            )
            if not result.ok or result.body is None:
                raise ListingError(graph, result)
            yield result.body
            if not result.body.is_truncated or not result.body.next_marker:
                return
            marker = result.body.next_marker

    def _dwr_pages(self, graph: str, since: datetime) -> Iterator[Any]:
        offset = None
        self._left_the_list = 0
        for _ in range(self._max_pages):
            if not self._time_left():
                return
            # The service's window may be on start time, in whole seconds: start a day early
            # (a run that started before the lookback may have failed inside it) and end a
            # minute late (a run from this very second is not cut off); the stop time is
            # then checked here, as for OBS.
            result = self._client.listWorkflowExecution(
                graph,
                status="fail",
                start_time=since - DWR_WINDOW_START_SLACK,
                end_time=self._now() + DWR_WINDOW_END_SLACK,
                limit=LIST_PAGE_SIZE["dwr"],
                offset=offset,
                deadline=self._deadline,
            )
            if not result.ok or result.body is None:
                raise ListingError(graph, result)
            yield result.body
            if not result.body.is_truncated or result.body.next_offset is None:
                return
            offset = max(1, result.body.next_offset - self._left_the_list)
            self._left_the_list = 0


def time_left_until(deadline: float | None) -> Callable[[], bool]:
    """Whether there is still time for another call before ``deadline`` (monotonic)."""
    if deadline is None:
        return lambda: True
    return lambda: deadline - time.monotonic() > DEADLINE_RESERVE_SECONDS


def parse_overrides(text: Any) -> Any:
    """A timer's ``user_event`` (a string, often empty) as JSON overrides."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        raise IntakeError(400, "BadSweepRequest", "user_event is not JSON") from None


def _within(timestamp: str | None, since: datetime) -> bool:
    """Whether an API timestamp (ISO 8601 or epoch milliseconds) is at or after ``since``.

    An execution whose time cannot be read is kept: restoring a failure a little outside the
    window is better than never restoring one the API dated oddly.
    """
    if not timestamp:
        return True
    moment = _parse_time(timestamp)
    return moment is None or moment >= since


def _parse_time(text: str) -> datetime | None:
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000.0, timezone.utc)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _graph_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise IntakeError(400, "BadSweepRequest", "graphs must be a list of graph names")
    try:
        return tuple(validate_name(name, "graphs[]") for name in value)
    except InvalidNameError as exc:
        raise IntakeError(400, "BadSweepRequest", str(exc)) from None


def _lookback(value: Any) -> float:
    try:
        return parse_duration(str(value), "lookback", minimum=60)
    except SettingsError as exc:
        raise IntakeError(400, "BadSweepRequest", str(exc)) from None
