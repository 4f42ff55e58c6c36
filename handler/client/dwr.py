"""The client for the DWR (Data Workshop) v3 workflow API, signed with ``SDK-HMAC-SHA256``.

DWR is where Huawei Cloud moved the OBS workflows; its restore, query and list operations
mirror the OBS ones under ``/v3/{project_id}/...`` paths (:mod:`handler.client.dwr_signing`
signs them). Everything on the wire is :mod:`handler.client.transport`'s, shared with the
OBS client, so both APIs behave alike: names (and the project id) validated before any I/O,
redirects never followed, every attempt signed afresh, secrets out of reprs and messages, a
restore that may have been applied never sent again, and every call answered with a
:class:`~handler.client.results.WorkflowResult`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Generator, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from handler.client.api import ApiClient
from handler.client.dwr_signing import DATE_HEADER, DwrSigner, canonical_query, sdk_date
from handler.client.listing import FailureListing, ListingError
from handler.client.results import (
    DWR_STATUSES,
    ExecutionInfo,
    ExecutionPage,
    GraphPage,
    WorkflowResult,
    execution_summaries,
    graph_names,
    int_or_none,
    normalise_state,
    restore_body,
    text_or_none,
)
from handler.client.transport import (
    JSON,
    USER_AGENT,
    RetrySchedule,
    Transport,
    bounded_int,
)
from handler.credentials import Credentials
from handler.names import validate_name

__all__ = ["DwrClient"]

MAX_LIST_LIMIT = 200
MAX_LIST_OFFSET = 1000  # documented 1-1000 ("start >= 1, at most 1000"); the service refuses more
FAILURE_PAGE_SIZE = MAX_LIST_LIMIT  # the largest page of failures the service serves
# The list window may be on start time, in whole seconds: it starts a day before the lookback
# (a run that started earlier may have failed inside it) and ends a minute after now.
WINDOW_START_SLACK = timedelta(days=1)
WINDOW_END_SLACK = timedelta(minutes=1)
_LIST_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_LIST_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class DwrClient(ApiClient):
    """Client for the DWR v3 workflow execution API.

    ``server`` is the regional endpoint, e.g. ``https://dwr.cn-south-1.myhuaweicloud.com``
    (``https://`` is assumed for a bare host; ``http://`` is accepted for local emulators);
    ``project_id`` is the project the workflows live in (every path starts with it).
    ``timeout`` is ``(connect, read)`` seconds; ``verify`` is ``True``, ``False`` or a CA
    bundle path. Every call takes an optional ``deadline``: a ``time.monotonic()`` value past
    which no attempt starts and no backoff sleeps.
    """

    gives_error_text = True  # the query names each failed node's error_message

    def __init__(
        self,
        access_key_id: str,
        secret_access_key: str,
        project_id: str,
        server: str,
        security_token: str | None = None,
        *,
        timeout: tuple[float, float] = (3.05, 10.0),
        retry: RetrySchedule | None = None,
        verify: bool | str = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # The project id goes into every path and a signed header; the name rule admits every
        # id Huawei Cloud issues (32 hex digits) and nothing that needs escaping.
        self.project_id = validate_name(project_id, "project_id")
        self._signer = DwrSigner(Credentials(access_key_id, secret_access_key, security_token))
        self._transport = Transport(
            server, timeout=timeout, retry=retry, verify=verify, sleep=sleep
        )
        self.server = self._transport.server
        # The Host header is set, and signed, explicitly: what is signed is then exactly what
        # is sent, whatever the transport would have derived from the URL.
        self._host = urlsplit(self.server).netloc
        self._base_path = f"/v3/{self.project_id}"

    def __repr__(self) -> str:
        return (
            f"DwrClient(server={self.server!r}, project_id={self.project_id!r}, "
            f"signer={self._signer!r})"
        )

    def restoreFailedWorkflowExecution(
        self, executionName: str, graphName: str, *, deadline: float | None = None
    ) -> WorkflowResult:
        """Resume a failed execution from its failed node (``POST``); ``body`` is a RestoreBody.

        Never sent twice when it may have been applied: see the module docstring.
        """
        path = self._execution_path(executionName, graphName) + "/retry"
        result = self._call("POST", path, {}, deadline, resend_unanswered=False)
        if result.ok and isinstance(result.body, dict):
            result.body = restore_body(result.body)
        return result

    def getWorkflowExecution(
        self, executionName: str, graphName: str, *, deadline: float | None = None
    ) -> WorkflowResult:
        """Query one execution (``GET``); ``body`` is an :class:`ExecutionInfo` (with the failed
        nodes' ``errorMessages``)."""
        path = self._execution_path(executionName, graphName)
        result = self._call("GET", path, {}, deadline)
        if result.ok and isinstance(result.body, dict):
            result.body = _execution_info(result.body)
        return result

    def listWorkflowExecution(
        self,
        graphName: str,
        *,
        status: str | None = None,
        start_time: datetime | str | None = None,
        end_time: datetime | str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        deadline: float | None = None,
    ) -> WorkflowResult:
        """One page of a graph's executions (``GET``); ``body`` is an :class:`ExecutionPage`.

        ``status`` filters on the server (``fail`` for failed executions); ``start_time`` and
        ``end_time`` bound the window (UTC; a naive datetime is taken as UTC) and without
        either the service shows the last 3 days; ``limit`` is 1-200; ``offset`` is where the
        page starts, at most 1000 - pass the previous page's ``next_offset`` to go on (a
        window holding more than offsets reach must be split by time). Bad values raise
        ``ValueError`` before any I/O.
        """
        query = {"graph_name": validate_name(graphName, "graphName")}
        if status is not None:
            if not isinstance(status, str) or status not in DWR_STATUSES:
                raise ValueError(
                    f"invalid status: must be one of {', '.join(sorted(DWR_STATUSES))}"
                )
            query["status"] = status
        for name, value in (("start_time", start_time), ("end_time", end_time)):
            if value is not None:
                query[name] = _list_time(value, name)
        if limit is not None:
            query["limit"] = str(bounded_int(limit, "limit", 1, MAX_LIST_LIMIT))
        if offset is not None:
            query["offset"] = str(bounded_int(offset, "offset", 0, MAX_LIST_OFFSET))
        path = f"{self._base_path}/workflowexecutions"
        result = self._call("GET", path, query, deadline)
        if result.ok and isinstance(result.body, dict):
            result.body = _execution_page(result.body)
        return result

    def listWorkflow(
        self,
        graphNamePrefix: str = "",
        *,
        start: int | None = None,
        limit: int | None = None,
        deadline: float | None = None,
    ) -> WorkflowResult:
        """One page of graph names (``GET .../workflows``); ``body`` is a :class:`GraphPage`.

        The same call as :meth:`WorkflowClient.listWorkflow`: pass ``body.next_start`` (DWR's
        ``next_offset``) as ``start`` for the next page; ``limit`` is 1-1000.
        """
        query: dict[str, str] = {}
        if graphNamePrefix:
            query["prefix"] = validate_name(graphNamePrefix, "graphNamePrefix")
        if start is not None:
            query["offset"] = str(bounded_int(start, "start", 1, None))
        if limit is not None:
            query["limit"] = str(bounded_int(limit, "limit", 1, 1000))
        result = self._call("GET", f"{self._base_path}/workflows", query, deadline)
        if result.ok and isinstance(result.body, dict):
            truncated = result.body.get("is_truncated") is True
            result.body = GraphPage(
                names=graph_names(result.body),
                is_truncated=truncated,
                next_start=int_or_none(result.body.get("next_offset")) if truncated else None,
            )
        return result

    def _failure_pages(self, listing: FailureListing) -> Iterator[ExecutionPage]:
        """Every page of failures in the window, splitting it where offsets cannot reach.

        The service filters ``status=fail`` and a time window; its window may be on start
        time, in whole seconds: it starts a day early and ends a minute late, and the stop
        time is checked by the listing, as for OBS. Windows are worked through oldest first,
        as the service lists.
        """
        start = (listing.since - WINDOW_START_SLACK).replace(microsecond=0)
        end = (listing.now + WINDOW_END_SLACK).replace(microsecond=0) + timedelta(seconds=1)
        windows = [(start, end)]  # a stack: the older half of a split is on top
        while windows:
            low, high = windows.pop()
            split = yield from self._window_pages(listing, low, high)
            if split is not None:
                windows.extend(reversed(split))

    def _window_pages(
        self, listing: FailureListing, low: datetime, high: datetime
    ) -> Generator[ExecutionPage, None, list[tuple[datetime, datetime]] | None]:
        """The pages of one window; returns its two halves instead when offsets cannot reach
        all of it (the rows already yielded are yielded again there, and skipped as seen).

        A page of at most ``limit`` rows starts at an offset of at most ``MAX_LIST_OFFSET``,
        so one window reaches ``MAX_LIST_OFFSET - 1 + limit`` rows. A window whose first page
        counts more, or whose pages are still truncated at the last offset, is split in two
        at its middle second (both halves keep that second: whichever way the service reads
        its bounds, no row falls between them). A one-second window cannot be split: what it
        cannot reach ends the listing with ``WindowTooDense``.
        """
        graph = listing.graph
        limit = FAILURE_PAGE_SIZE
        reach = MAX_LIST_OFFSET - 1 + limit
        halves = _halves(low, high)
        offset, first = 1, True
        listing.left_the_list = 0
        while listing.take_page():
            page = listing.read(
                self.listWorkflowExecution,
                graphName=graph,
                status="fail",
                start_time=low,
                end_time=high,
                limit=limit,
                offset=offset,
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
            following = max(1, following - listing.left_the_list)
            listing.left_the_list = 0
            if following > MAX_LIST_OFFSET:
                if offset < MAX_LIST_OFFSET:
                    following = MAX_LIST_OFFSET  # the overlap is skipped as seen
                elif halves:
                    return halves
                else:
                    raise ListingError.unfollowable(
                        graph,
                        "WindowTooDense",
                        f"more than {reach} failures started "
                        f"within one second ({low.strftime(_LIST_TIME_FORMAT)}): "
                        "the rest was not swept",
                    )
            offset = following
        return None

    def _execution_path(self, execution_name: str, graph_name: str) -> str:
        validate_name(graph_name, "graphName")
        validate_name(execution_name, "executionName")
        return f"{self._base_path}/workflows/{graph_name}/workflowexecution/{execution_name}"

    def _call(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        deadline: float | None,
        *,
        resend_unanswered: bool = True,
    ) -> WorkflowResult:
        """Send with bounded retries; ``resend_unanswered`` is False for non-idempotent calls.

        Valid names need no escaping, and the query is the canonical (already encoded) one,
        so the URL goes out exactly as signed.
        """
        encoded_query = canonical_query(query)
        url = self.server + path + (f"?{encoded_query}" if encoded_query else "")
        return self._transport.call(
            method,
            url,
            lambda: self._headers(method, path, query),
            deadline,
            resend_unanswered=resend_unanswered,
        )

    def _headers(self, method: str, path: str, query: dict[str, str]) -> dict[str, str]:
        signed = {
            "Content-Type": JSON,
            "Host": self._host,
            "X-Project-Id": self.project_id,
            DATE_HEADER: sdk_date(),
        }
        headers = {**signed, "Accept": JSON, "User-Agent": USER_AGENT}
        headers.update(self._signer.sign(method, path, query, signed))
        return headers


def _execution_info(payload: dict[str, Any]) -> ExecutionInfo:
    status = text_or_none(payload.get("status"))
    # An answer in the OBS shape (``execution_state`` only) keeps its state rather than losing it.
    state = normalise_state(status if status is not None else payload.get("execution_state"))
    nodes = payload.get("node_execution_details")
    messages = tuple(
        message
        for node in (nodes if isinstance(nodes, list) else ())
        if isinstance(node, dict) and (message := text_or_none(node.get("error_message")))
    )
    info = {**payload, "execution_state": state}
    return ExecutionInfo(
        executionInfo=info, status=status, errorMessages=messages, stoppedAt=_stopped_at(payload)
    )


def _stopped_at(payload: dict[str, Any]) -> float | None:
    """When the execution last stopped (epoch seconds), or None when the answer does not say.

    The latest of the execution's ``end_time`` (``yyyy-MM-ddTHH:mm:ssZ``: whole seconds) and
    its nodes' ``end_time`` (epoch milliseconds), whichever is more precise; the
    ``last_update_time`` only when neither is given. Each is cut, never rounded up, so the
    value is never later than the true moment: "stopped after X" is then never claimed
    wrongly because of the answer's precision.
    """
    nodes = payload.get("node_execution_details")
    moments = [_moment(payload.get("end_time"))]
    moments += [
        _moment(node.get("end_time"))
        for node in (nodes if isinstance(nodes, list) else ())
        if isinstance(node, dict)
    ]
    known = [moment for moment in moments if moment is not None]
    if known:
        return max(known)
    return _moment(payload.get("last_update_time"))


# Epoch milliseconds from 2001 to 9999: anything else in a time field is not a time we can use.
_EPOCH_MS_RANGE = (978307200000, 253402300799999)


def _moment(value: object) -> float | None:
    """Epoch seconds from a DWR time: epoch milliseconds, or ``yyyy-MM-ddTHH:mm:ssZ`` text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int):
        low, high = _EPOCH_MS_RANGE
        return value / 1000.0 if low <= value <= high else None
    if isinstance(value, str) and _LIST_TIME.fullmatch(value):
        try:
            moment = datetime.strptime(value, _LIST_TIME_FORMAT)
        except ValueError:  # the right shape, but no date (month 13)
            return None
        return moment.replace(tzinfo=timezone.utc).timestamp()
    return None


def _execution_page(payload: dict[str, Any]) -> ExecutionPage:
    return ExecutionPage(
        executions=execution_summaries(payload),
        count=int_or_none(payload.get("count")),
        is_truncated=payload.get("is_truncated") is True,
        next_offset=int_or_none(payload.get("next_offset")),
    )


def _halves(low: datetime, high: datetime) -> list[tuple[datetime, datetime]] | None:
    """A list window split at its middle second, older half first; None below two seconds.

    Both halves keep the middle second, so no row falls between them whether the service
    reads a bound as inclusive or not (a row listed twice is skipped as seen)."""
    seconds = int((high - low).total_seconds())
    if seconds < 2:
        return None
    middle = low + timedelta(seconds=seconds // 2)
    return [(low, middle), (middle, high)]


def _list_time(value: datetime | str, name: str) -> str:
    """``yyyy-MM-ddTHH:mm:ssZ`` in UTC, as the list filter takes it."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc).strftime(_LIST_TIME_FORMAT)
    if isinstance(value, str) and _LIST_TIME.fullmatch(value):
        return value
    raise ValueError(f"invalid {name}: give a datetime or a yyyy-MM-ddTHH:mm:ssZ UTC string")
