"""Listings that take more than one call: a graph's failures since a time, and every graph name.

Both APIs list one page per call, and they page differently - OBS by a marker of execution
type and name, with no state filter (every page is read and failures are picked here); DWR
by an offset that stops at 1000, with ``status=fail`` and a time window on the server, so a
window holding more failures than offsets reach is split by time. Each client pages its own
way (:meth:`~handler.client.api.ApiClient._failure_pages`); what both share lives here:

* :class:`FailureListing` - iterating it yields, page by page, the failed executions of one
  graph that stopped (or started) since a moment, each once; it counts the pages and rows it
  read, bounds the pages, and raises :class:`ListingError` when a list cannot be followed;
* :func:`graph_names` - every graph name, page by page, by the list-graphs call both APIs
  answer alike.

Both are lazy: a page is read only when the caller asks for the next one, so a caller that is
out of time simply stops asking - nothing here calls back up to find out.

A listing only reads: it never restores, and what its rows become is its caller's business.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from handler.client.results import ExecutionPage, ExecutionSummary, WorkflowResult
from handler.timestamps import parse_api_time

GRAPH_PAGE_SIZE = 1000  # the largest page of graph names both APIs serve
# How OBS (``FAILED``) and DWR (``fail``) spell a failure; anything else is normalised first.
_FAILED_WORDS = frozenset({"FAILED", "fail"})


class ListingError(Exception):
    """A listing cannot go on: a list call failed after the client's retries, or its answer
    cannot be followed (a repeated or refused marker, a page limit).

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
    def from_result(cls, graph: str | None, result: WorkflowResult) -> ListingError:
        """A list call that failed after the client's retries."""
        return cls(graph, result.status, result.errorCode)

    @classmethod
    def unfollowable(cls, graph: str | None, error_code: str, message: str) -> ListingError:
        """A list call that was answered, but whose answer cannot be followed further."""
        return cls(graph, None, error_code, message)

    def document(self) -> dict[str, Any]:
        """What a summary names: graph (None: the list of graphs), status, code, message."""
        entry: dict[str, Any] = {"graph": self.graph}
        if self.status is not None:
            entry["status"] = self.status
        entry["errorCode"] = self.error_code
        if self.message:
            entry["message"] = self.message
        return entry


def read_page(graph: str | None, call: Callable[..., WorkflowResult], **options: Any) -> Any:
    """One list call's page (its ``body``), or the :class:`ListingError` that ends the listing.

    A ``ValueError`` is the client refusing what the previous page handed out (a marker it
    does not accept): the list cannot be followed past it."""
    try:
        result = call(**options)
    except ValueError as exc:
        raise ListingError.unfollowable(graph, "BadListMarker", str(exc)[:200]) from None
    if not result.ok or result.body is None:
        raise ListingError.from_result(graph, result)
    return result.body


class FailureListing:
    """The failed executions of one graph that stopped (or started) at or after ``since``.

    Iterate it for one tuple of :class:`~handler.client.results.ExecutionSummary` rows per
    page read, each failure once (pages that overlap - DWR windows and offsets re-read around
    their edges - yield a row only the first time); the next page is read when the next
    tuple is asked for. ``pages`` and ``listed`` count the pages and rows read so far; more
    than ``max_pages`` pages end the listing with a :class:`ListingError`. Call
    :meth:`restored` after restoring a yielded failure (see there).
    """

    def __init__(
        self,
        graph: str,
        since: datetime,
        pages: Callable[[FailureListing], Iterator[ExecutionPage]],
        *,
        deadline: float | None,
        max_pages: int,
        now: datetime,
    ) -> None:
        self.graph = graph
        self.since = since
        self.deadline = deadline
        self.now = now
        self.pages = 0
        self.listed = 0
        self.left_the_list = 0  # failures restored since the current page was read
        self._max_pages = max_pages
        self._pages = pages

    def restored(self) -> None:
        """The failure last yielded was restored.

        DWR lists only what is failed *now*, by offset: each failure restored while a page is
        worked through leaves that list, and the next page would start that many entries too
        far. OBS pages by a marker (type and name), which a restore does not move.
        """
        self.left_the_list += 1

    def take_page(self) -> bool:
        """Whether another page may be read (True), or the :class:`ListingError` of a listing
        past ``max_pages``."""
        if self.pages >= self._max_pages:
            raise ListingError.unfollowable(
                self.graph,
                "PageLimitReached",
                f"read {self._max_pages} pages "
                "(RESTORE_SWEEP_MAX_PAGES) and more remain: the rest was not swept",
            )
        return True

    def read(self, call: Callable[..., WorkflowResult], **options: Any) -> ExecutionPage:
        """One page of this graph's executions, counted."""
        page = read_page(self.graph, call, deadline=self.deadline, **options)
        self.pages += 1
        self.listed += len(page.executions)
        return page

    def __iter__(self) -> Iterator[tuple[ExecutionSummary, ...]]:
        not_failed: set[str | None] = set()
        seen: set[tuple[str, str | None, str | None]] = set()
        for page in self._pages(self):
            failures = []
            for row in page.executions:
                # A sweep checks every listed execution (10,000 in the benchmark) and a page
                # holds few distinct states: the services' words for a failure, and states
                # already seen not to be one, skip normalising the state again.
                state = row.execution_state
                if state not in _FAILED_WORDS:
                    if state in not_failed:
                        continue
                    if row.state != "FAILED":
                        not_failed.add(state)
                        continue
                if not within(row.stopped_at or row.started_at, self.since):
                    continue
                key = (row.execution_name or "", row.stopped_at, row.started_at)
                if key in seen:
                    continue
                seen.add(key)
                failures.append(row)
            yield tuple(failures)


def graph_names(
    list_workflow: Callable[..., WorkflowResult], *, deadline: float | None, max_pages: int
) -> Iterator[tuple[str, ...]]:
    """Every graph name the list-graphs call returns, one tuple per page (``next_start``),
    the next page read when the next tuple is asked for.

    At most ``max_pages`` pages: a next start seen before, a truncated page without one, or
    more pages than that end the list with a :class:`ListingError` (the names already
    yielded stand)."""
    start = None
    seen: set[int] = set()
    for _ in range(max_pages):
        page = read_page(None, list_workflow, start=start, limit=GRAPH_PAGE_SIZE, deadline=deadline)
        yield page.names
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
        f"the graph list has more than {max_pages} "
        "pages (RESTORE_SWEEP_MAX_PAGES): the graphs after them were not swept",
    )


def within(timestamp: str | None, since: datetime) -> bool:
    """Whether an API timestamp (ISO 8601 or epoch milliseconds) is at or after ``since``.

    An execution whose time cannot be read is kept: restoring a failure a little outside the
    window is better than never restoring one the API dated oddly.
    """
    if not timestamp:
        return True
    moment = parse_api_time(timestamp)
    return moment is None or moment >= since
