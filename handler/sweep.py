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
pages); DWR filters ``status=fail`` and a time window on the server (offset pages). DWR's
``offset`` only goes up to 1000, so a window holding more failures than offsets reach is
split in two by time, again and again, until each part fits: every failure in the lookback
is reached however many there are.

Whatever a list answers, the damage stays local: a graph whose name breaks the naming rule, a
row that cannot be restored, a next marker that repeats or that the client refuses, a page
that says it is truncated but not where to go on - each is named in the summary's ``errors``
and that graph (or row) is skipped; the other graphs are swept.

This module only reads: it talks to the client stage for listing and leaves admitting,
restoring and reporting to :mod:`handler.pipeline`, which runs the sweep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from handler.intake import MAX_BODY_BYTES, IntakeError, Item
from handler.intake.identity import sweep_identity
from handler.intake.items import RESTORE
from handler.intake.limits import check_value, parse_json_text
from handler.names import InvalidNameError, validate_name
from handler.settings import MAX_SWEEP_LOOKBACK, Settings, SettingsError, parse_duration

SWEEP = "sweep"  # Item.shape of what a sweep found
LIST_PAGE_SIZE = {"obs": 1000, "dwr": 200}  # the largest page each API serves
DWR_WINDOW_START_SLACK = timedelta(days=1)
DWR_WINDOW_END_SLACK = timedelta(minutes=1)
# DWR documents its list offset as 1-1000 ("start >= 1, at most 1000") and refuses more.
DWR_MAX_OFFSET = 1000
# An override may name at most this many graphs: more than one page of the graph list, and
# each is listed in turn, so a longer list is a mistake rather than a plan.
MAX_OVERRIDE_GRAPHS = 1000
# The summary names at most this many errors (and counts the rest): a graph with thousands of
# unusable rows must not make one log line megabytes long.
MAX_SUMMARY_ERRORS = 50
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
        an :class:`~handler.intake.IntakeError` (400) naming the field, under the limits of
        every other body (depth, size); ``dryRun`` can only turn a dry run on, never off.
        ``graphs`` names 1 to ``MAX_OVERRIDE_GRAPHS`` graphs, ``lookback`` is 60 s to
        ``MAX_SWEEP_LOOKBACK``.
        """
        if overrides is None or overrides == "":
            return self
        check_value(overrides, "sweep overrides")
        if not isinstance(overrides, dict):
            raise IntakeError(400, "BadSweepRequest", "sweep overrides must be a JSON object")
        if not overrides:
            return self
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
    errors_left_off: int = 0  # errors beyond MAX_SUMMARY_ERRORS: counted, not listed
    stopped: str | None = None  # why the sweep ended early: "deadline", "sweep in progress"
    duration_ms: float = 0.0

    def error(self, entry: dict[str, Any]) -> None:
        """Name one error (a graph or row skipped), or count it once the list is full."""
        if len(self.errors) < MAX_SUMMARY_ERRORS:
            self.errors.append(entry)
        else:
            self.errors_left_off += 1

    def document(self) -> dict[str, Any]:
        return {
            "graphsScanned": self.graphs_scanned,
            "pages": self.pages,
            "executionsListed": self.executions_listed,
            "failuresFound": self.failures_found,
            "outcomes": dict(self.outcomes),
            "waitingForNextSweep": self.waiting,
            "errors": list(self.errors),
            **({"errorsLeftOff": self.errors_left_off} if self.errors_left_off else {}),
            "stopped": self.stopped,
            "durationMs": round(self.duration_ms, 3),
        }


class ListingError(Exception):
    """A listing cannot go on: a list call failed after the client's retries, or its answer
    cannot be followed (a repeated or refused marker, a page limit). The sweep reports it in
    the summary's ``errors`` and goes on with the next graph.

    ``status`` is the HTTP status of a failed call (None when the call succeeded but its
    answer cannot be followed); ``message`` says what went wrong in words safe to log.
    """

    def __init__(
        self,
        graph: str | None,
        status: int | None,
        error_code: str | None,
        message: str | None = None,
    ) -> None:
        super().__init__(message or f"listing {graph or 'graphs'} failed: {status}")
        self.graph = graph
        self.status = status
        self.error_code = error_code
        self.message = message

    @classmethod
    def from_result(cls, graph: str | None, result: Any) -> ListingError:
        """A list call that failed after the client's retries."""
        return cls(graph, result.status, result.errorCode)

    @classmethod
    def unfollowable(cls, graph: str | None, error_code: str, message: str) -> ListingError:
        """A list call that was answered, but whose answer cannot be followed further."""
        return cls(graph, None, error_code, message)

    def document(self) -> dict[str, Any]:
        """The summary's ``errors`` entry: graph (None: the list of graphs), status, code."""
        entry: dict[str, Any] = {"graph": self.graph}
        if self.status is not None:
            entry["status"] = self.status
        entry["errorCode"] = self.error_code
        if self.message:
            entry["message"] = self.message
        return entry


def shown_name(value: object) -> str:
    """A name the service gave that breaks the naming rule, as the summary may show it:
    printable, short, never the raw (possibly hostile) text."""
    text = value if isinstance(value, str) else repr(value)
    return ascii(text[:64])[1:-1]


class Lister:
    """Lists one API's graphs and failures with a client, streaming page by page.

    ``time_left`` answers whether there is time for another call; ``max_pages`` bounds the
    pages read per graph (and of the list of graphs), so one huge graph cannot take a whole
    sweep and a list that never ends cannot hold one forever. Listing problems are raised as
    :class:`ListingError`; a row that cannot become a restore item is named in the summary's
    ``errors`` and skipped.
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
        self._pages_left = max_pages  # of the graph being listed

    def restored(self) -> None:
        """Tell the lister the failure it last yielded was restored.

        DWR lists only what is failed *now*, by offset: each failure restored while a page is
        being worked through leaves that list, and the next page would start that many
        entries too far. OBS pages by a marker (type and name), which a restore does not move.
        """
        self._left_the_list += 1

    def graphs(self) -> Iterator[str]:
        """Every graph name the list-graphs API returns, page by page.

        At most ``max_pages`` pages: a next marker seen before, a truncated page without one,
        or more pages than that end the list with a :class:`ListingError` (the graphs already
        listed are still swept)."""
        start = None
        seen: set[int] = set()
        for _ in range(self._max_pages):
            if not self._time_left():
                return
            page = self._read(
                None, self._client.listWorkflow, start=start, limit=1000, deadline=self._deadline
            )
            yield from page.names
            if not page.is_truncated:
                return
            if page.next_start is None:
                raise ListingError.unfollowable(
                    None,
                    "NoNextMarker",
                    "a page of the graph list is truncated but "
                    "says no next start: the graphs after it were not swept",
                )
            if page.next_start in seen:
                raise ListingError.unfollowable(
                    None,
                    "RepeatedListMarker",
                    "the graph list handed out a next "
                    "start it had handed out before: the graphs after it were not swept",
                )
            seen.add(page.next_start)
            start = page.next_start
        raise ListingError.unfollowable(
            None,
            "PageLimitReached",
            f"the graph list has more than {self._max_pages} "
            "pages (RESTORE_SWEEP_MAX_PAGES): the graphs after them were not swept",
        )

    def failures(self, graph: str, lookback: float) -> Iterator[Failure]:
        """The failures of ``graph`` that stopped (or started) within ``lookback`` seconds.

        Each failure is yielded once, even where the pages overlap (DWR windows and offsets
        re-read around their edges); a failed row whose execution name breaks the naming
        rule cannot be restored, so it is named in ``errors`` instead."""
        since = self._now() - timedelta(seconds=lookback)
        self._pages_left = self._max_pages
        pages = self._dwr_pages(graph, since) if self._api == "dwr" else self._obs_pages(graph)
        not_failed: set[str | None] = set()
        seen: set[tuple[str, str | None, str | None]] = set()
        for page in pages:
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
                if not _within(summary.stopped_at or summary.started_at, since):
                    continue
                key = (summary.execution_name or "", summary.stopped_at, summary.started_at)
                if key in seen:
                    continue
                seen.add(key)
                try:
                    validate_name(summary.execution_name, "executionName")
                except InvalidNameError as exc:
                    self._summary.error(
                        {
                            "graph": graph,
                            "execution": shown_name(summary.execution_name),
                            "errorCode": "InvalidExecutionName",
                            "message": str(exc),
                        }
                    )
                    continue
                yield Failure(
                    graph,
                    summary.execution_name,
                    summary.execution_urn,
                    summary.stopped_at,
                    summary.started_at,
                )

    def _read(self, graph: str | None, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One list call's page, or the :class:`ListingError` that ends this listing; a page
        of a graph's executions is counted in the summary's ``pages``."""
        try:
            result = call(*args, **kwargs)
        except ValueError as exc:  # the client refused what the last page handed us
            raise ListingError.unfollowable(graph, "BadListMarker", str(exc)[:200]) from None
        if not result.ok or result.body is None:
            raise ListingError.from_result(graph, result)
        if graph is not None:
            self._summary.pages += 1
        return result.body

    def _take_page(self, graph: str) -> bool:
        """Whether this graph may read another page: time left and within ``max_pages``."""
        if not self._time_left():
            return False
        if self._pages_left <= 0:
            raise ListingError.unfollowable(
                graph,
                "PageLimitReached",
                f"read {self._max_pages} pages "
                "(RESTORE_SWEEP_MAX_PAGES) and more remain: the rest was not swept",
            )
        self._pages_left -= 1
        return True

    def _obs_pages(self, graph: str) -> Iterator[Any]:
        marker = None
        seen: set[str] = set()
        while self._take_page(graph):
            page = self._read(
                graph,
                self._client.listWorkflowExecution,
                graph,
                nextMarker=marker,
                limit=LIST_PAGE_SIZE["obs"],
                deadline=self._deadline,
            )
            yield page
            if not page.is_truncated:
                return
            if not page.next_marker:
                raise ListingError.unfollowable(
                    graph,
                    "NoNextMarker",
                    "a page is truncated but says no next "
                    "marker: the executions after it were not swept",
                )
            if page.next_marker in seen:
                raise ListingError.unfollowable(
                    graph,
                    "RepeatedListMarker",
                    "the list handed out a next marker it "
                    "had handed out before: the executions after it were not swept",
                )
            seen.add(page.next_marker)
            marker = page.next_marker

    def _dwr_pages(self, graph: str, since: datetime) -> Iterator[Any]:
        """Every page of failures in the window, splitting it where offsets cannot reach.

        The service's window may be on start time, in whole seconds: it starts a day early (a
        run that started before the lookback may have failed inside it) and ends a minute
        late (a run from this very second is not cut off); the stop time is then checked
        here, as for OBS. Windows are worked through oldest first, as the service lists.
        """
        start = (since - DWR_WINDOW_START_SLACK).replace(microsecond=0)
        end = (self._now() + DWR_WINDOW_END_SLACK).replace(microsecond=0) + timedelta(seconds=1)
        windows = [(start, end)]  # a stack: the older half of a split is on top
        while windows:
            low, high = windows.pop()
            split = yield from self._dwr_window(graph, low, high)
            if split is not None:
                windows.extend(reversed(split))

    def _dwr_window(
        self, graph: str, low: datetime, high: datetime
    ) -> Generator[Any, None, list[tuple[datetime, datetime]] | None]:
        """The pages of one window; returns its two halves instead when offsets cannot reach
        all of it (the rows already yielded are yielded again there, and skipped as seen).

        A page of at most ``limit`` rows starts at an offset of at most ``DWR_MAX_OFFSET``, so
        one window reaches ``DWR_MAX_OFFSET - 1 + limit`` rows. A window whose first page
        counts more, or whose pages are still truncated at the last offset, is split in two
        at its middle second (both halves keep that second: whichever way the service reads
        its bounds, no row falls between them). A one-second window cannot be split: what it
        cannot reach is named in ``errors``.
        """
        limit = LIST_PAGE_SIZE["dwr"]
        reach = DWR_MAX_OFFSET - 1 + limit
        halves = _halves(low, high)
        offset, first = 1, True
        self._left_the_list = 0
        while self._take_page(graph):
            page = self._read(
                graph,
                self._client.listWorkflowExecution,
                graph,
                status="fail",
                start_time=low,
                end_time=high,
                limit=limit,
                offset=offset,
                deadline=self._deadline,
            )
            if first and halves and page.count is not None and page.count > reach:
                return halves  # this page is read again as part of the older half
            first = False
            yield page
            if not page.is_truncated:
                return None
            if page.next_offset is not None and page.next_offset <= offset:
                raise ListingError.unfollowable(
                    graph,
                    "RepeatedListMarker",
                    f"the list's next offset "
                    f"{page.next_offset} does not move past {offset}: the rest was not swept",
                )
            # No next_offset on a truncated page: go on by position (what this page held).
            following = page.next_offset or offset + len(page.executions)
            if following == offset:
                raise ListingError.unfollowable(
                    graph,
                    "NoNextMarker",
                    "an empty page is truncated but says no next offset: the rest was not swept",
                )
            following = max(1, following - self._left_the_list)
            self._left_the_list = 0
            if following > DWR_MAX_OFFSET:
                if offset < DWR_MAX_OFFSET:
                    following = DWR_MAX_OFFSET  # the overlap is skipped as seen
                elif halves:
                    return halves
                else:
                    raise ListingError.unfollowable(
                        graph,
                        "WindowTooDense",
                        f"more than {reach} failures started "
                        f"within one second ({_list_second(low)}): the rest was not swept",
                    )
            offset = following
        return None


def time_left_until(deadline: float | None) -> Callable[[], bool]:
    """Whether there is still time for another call before ``deadline`` (monotonic)."""
    if deadline is None:
        return lambda: True
    return lambda: deadline - time.monotonic() > DEADLINE_RESERVE_SECONDS


def read_user_event(user_event: Any) -> tuple[Any, str | None]:
    """A timer's ``user_event`` as ``(overrides, why it was ignored)``.

    The console fills a timer's additional information with plain text (``User Event``) by
    default, and a timer's answer reaches nobody: text that is not meant as a JSON object
    must not stop every sweep, so it is ignored (the default sweep runs, and the caller logs
    why at WARNING). Text that starts like a JSON object is meant as overrides: one that does
    not parse, nests too deep or is too large is an :class:`~handler.intake.IntakeError`.
    """
    if user_event is None:
        return None, None
    if not isinstance(user_event, str):  # a platform that passes decoded JSON
        if isinstance(user_event, dict):
            return user_event, None
        return None, f"user_event is {type(user_event).__name__}, not a JSON object"
    text = user_event.removeprefix("\ufeff").strip()
    if not text:
        return None, None
    if not text.startswith("{"):
        return None, "user_event is not a JSON object"
    if len(text) > MAX_BODY_BYTES:
        raise IntakeError(413, "BodyTooLarge", f"user_event is larger than {MAX_BODY_BYTES} bytes")
    try:
        return parse_json_text(text, "user_event"), None
    except IntakeError as exc:
        if exc.code == "NotJSON":  # meant as overrides, but unreadable: say which field
            raise IntakeError(400, "BadSweepRequest", exc.message) from None
        raise


def parse_overrides(user_event: Any) -> Any:
    """A timer's ``user_event`` as JSON overrides (None when there are none or it is ignored);
    see :func:`read_user_event`."""
    return read_user_event(user_event)[0]


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
    """An API timestamp as a UTC datetime; None when it is not a time a datetime can hold
    (garbage, or epoch milliseconds such as ``99999999999999999``, years past 9999)."""
    try:
        if text.isdigit():
            return datetime.fromtimestamp(int(text) / 1000.0, timezone.utc)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _halves(low: datetime, high: datetime) -> list[tuple[datetime, datetime]] | None:
    """A list window split at its middle second, older half first; None below two seconds.

    Both halves keep the middle second, so no row falls between them whether the service
    reads a bound as inclusive or not (a row listed twice is skipped as seen)."""
    seconds = int((high - low).total_seconds())
    if seconds < 2:
        return None
    middle = low + timedelta(seconds=seconds // 2)
    return [(low, middle), (middle, high)]


def _list_second(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _graph_names(value: Any) -> tuple[str, ...]:
    """1 to ``MAX_OVERRIDE_GRAPHS`` valid names, each once. An empty list is refused rather
    than read as "every graph" (what leaving ``graphs`` out means): asking to sweep no graph
    and sweeping all of them would be the opposite of what was asked."""
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise IntakeError(400, "BadSweepRequest", "graphs must be a list of graph names")
    if not value:
        message = "graphs must name at least one graph (leave it out to sweep every graph)"
        raise IntakeError(400, "BadSweepRequest", message)
    if len(value) > MAX_OVERRIDE_GRAPHS:
        message = f"graphs names {len(value)} graphs, at most {MAX_OVERRIDE_GRAPHS} are allowed"
        raise IntakeError(400, "BadSweepRequest", message)
    try:
        return tuple(dict.fromkeys(validate_name(name, "graphs[]") for name in value))
    except InvalidNameError as exc:
        raise IntakeError(400, "BadSweepRequest", str(exc)) from None


def _lookback(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise IntakeError(400, "BadSweepRequest", "lookback must be a duration like 6h or 7d")
    try:
        return parse_duration(str(value), "lookback", minimum=60, maximum=MAX_SWEEP_LOOKBACK)
    except SettingsError as exc:
        raise IntakeError(400, "BadSweepRequest", str(exc)) from None
