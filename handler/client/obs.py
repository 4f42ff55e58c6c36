"""The client for the OBS workflow API (``/v2/workflowexecutions``), signed with OBS V2.

Its surface mirrors the official SDK's ``WorkflowClient`` (``esdk-obs-python``), so code
written against its documentation works unchanged, but unlike the SDK it validates names
before any I/O (the SDK sends ``a/../b`` as a path), keeps one keep-alive session per
instance (the SDK is a process-wide singleton that re-keys itself when a second client is
built, and opens a new connection per call) and never follows redirects. The wire behaviour
- retries, deadlines, parsing - is :mod:`handler.client.transport`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from handler.client.api import ApiClient
from handler.client.listing import FailureListing, ListingError
from handler.client.obs_signing import Signer, http_date
from handler.client.results import (
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

EXECUTIONS_PATH = "/v2/workflowexecutions"
GRAPHS_PATH = "/v2/workflows/"
GRAPH_QUERY = "x-workflow-graph-name"
MAX_LIST_LIMIT = 1000
FAILURE_PAGE_SIZE = MAX_LIST_LIMIT  # a sweep reads every page: the largest there is
EXECUTION_TYPES = frozenset({"APICALL", "TRIGGERCAL"})
# A list marker is the service's own "<type><name>" pair; nothing in it needs escaping.
_MARKER_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class WorkflowClient(ApiClient):
    """Client for the OBS workflow execution API.

    ``server`` is the regional endpoint, e.g. ``https://obs.cn-north-4.myhuaweicloud.com``
    (``https://`` is assumed for a bare host; ``http://`` is accepted for local emulators).
    ``timeout`` is ``(connect, read)`` seconds. ``verify`` is ``True``, ``False`` or a CA
    bundle path. Every call takes an optional ``deadline``: a ``time.monotonic()`` value past
    which no attempt starts and no backoff sleeps.
    """

    def __init__(
        self,
        access_key_id: str,
        secret_access_key: str,
        security_token: str | None = None,
        server: str = "",
        *,
        timeout: tuple[float, float] = (3.05, 10.0),
        retry: RetrySchedule | None = None,
        verify: bool | str = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._signer = Signer(Credentials(access_key_id, secret_access_key, security_token))
        self._transport = Transport(
            server, timeout=timeout, retry=retry, verify=verify, sleep=sleep
        )
        self.server = self._transport.server

    def __repr__(self) -> str:
        return f"WorkflowClient(server={self.server!r}, signer={self._signer!r})"

    def restoreFailedWorkflowExecution(
        self, executionName: str, graphName: str, *, deadline: float | None = None
    ) -> WorkflowResult:
        """Resume a failed execution from its failed state (``PUT``); ``body`` is a RestoreBody.

        Never sent twice when it may have been applied (see :mod:`handler.client.transport`).
        """
        path = self._execution_path(executionName, graphName)
        query = {GRAPH_QUERY: graphName}
        result = self._call("PUT", path, query, deadline, resend_unanswered=False)
        if result.ok and isinstance(result.body, dict):
            result.body = restore_body(result.body)
        return result

    def getWorkflowExecution(
        self, executionName: str, graphName: str, *, deadline: float | None = None
    ) -> WorkflowResult:
        """Query one execution (``GET``); ``body`` is an :class:`ExecutionInfo`."""
        path = self._execution_path(executionName, graphName)
        result = self._call("GET", path, {GRAPH_QUERY: graphName}, deadline)
        if result.ok and isinstance(result.body, dict):
            info = result.body.get("execution_info")
            info = dict(info) if isinstance(info, dict) else {}
            state = normalise_state(info.get("execution_state"))
            result.body = ExecutionInfo({**info, "execution_state": state})
        return result

    def listWorkflowExecution(
        self,
        graphName: str,
        *,
        executionType: str | None = None,
        nextMarker: str | None = None,
        limit: int | None = None,
        deadline: float | None = None,
    ) -> WorkflowResult:
        """One page of a graph's executions (``GET``); ``body`` is an :class:`ExecutionPage`.

        The service has no state filter and orders by execution type and name, not time: a
        caller looking for failures reads every page (pass ``body.next_marker`` on) and
        filters itself. ``limit`` is 1-1000. Bad values raise ``ValueError`` before any I/O.
        """
        query = {GRAPH_QUERY: validate_name(graphName, "graphName")}
        if executionType is not None:
            if executionType not in EXECUTION_TYPES:
                raise ValueError("invalid executionType: must be APICALL or TRIGGERCAL")
            query["x-workflow-execution-type"] = executionType
        if nextMarker is not None:
            if not nextMarker or not set(nextMarker) <= _MARKER_SAFE or len(nextMarker) > 200:
                raise ValueError("invalid nextMarker: not a marker this API hands out")
            query["x-workflow-next-marker"] = nextMarker
        if limit is not None:
            query["x-workflow-limit"] = str(bounded_int(limit, "limit", 1, MAX_LIST_LIMIT))
        result = self._call("GET", EXECUTIONS_PATH, query, deadline)
        if result.ok and isinstance(result.body, dict):
            payload = result.body
            truncated = payload.get("is_truncated") is True
            result.body = ExecutionPage(
                executions=execution_summaries(payload),
                count=int_or_none(payload.get("count")),
                is_truncated=truncated,
                next_marker=text_or_none(payload.get("next_marker")) if truncated else None,
            )
        return result

    def listWorkflow(
        self,
        graphNamePrefix: str = "",
        *,
        start: int | None = None,
        limit: int | None = None,
        deadline: float | None = None,
    ) -> WorkflowResult:
        """One page of graph names (``GET``); ``body`` is a :class:`GraphPage`.

        Pass ``body.next_start`` as ``start`` for the next page; ``limit`` is 1-1000.
        """
        if graphNamePrefix:
            validate_name(graphNamePrefix, "graphNamePrefix")
        query = {"x-workflow-prefix": None}
        if start is not None:
            query["x-workflow-start"] = str(bounded_int(start, "start", 1, None))
        if limit is not None:
            query["x-workflow-limit"] = str(bounded_int(limit, "limit", 1, MAX_LIST_LIMIT))
        result = self._call("GET", GRAPHS_PATH + graphNamePrefix, query, deadline)
        if result.ok and isinstance(result.body, dict):
            payload = result.body
            truncated = payload.get("is_truncated") is True
            result.body = GraphPage(
                names=graph_names(payload),
                is_truncated=truncated,
                next_start=int_or_none(payload.get("next_start")) if truncated else None,
            )
        return result

    def _failure_pages(self, listing: FailureListing) -> Iterator[ExecutionPage]:
        """Every page of the graph's executions, by marker: the service has no state filter
        and orders by execution type and name, so failures are picked from all of them."""
        graph = listing.graph
        marker = None
        seen: set[str] = set()
        while listing.take_page():
            page = listing.read(
                self.listWorkflowExecution,
                graphName=graph,
                nextMarker=marker,
                limit=FAILURE_PAGE_SIZE,
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

    @staticmethod
    def _execution_path(execution_name: str, graph_name: str) -> str:
        validate_name(graph_name, "graphName")
        validate_name(execution_name, "executionName")
        return f"{EXECUTIONS_PATH}/{execution_name}"

    def _call(
        self,
        method: str,
        path: str,
        query: dict[str, Any],
        deadline: float | None,
        *,
        resend_unanswered: bool = True,
    ) -> WorkflowResult:
        # Every x-workflow-* parameter is a signed sub-resource, listed sorted by name; valid
        # names and markers need no escaping, so the resource signed is the one sent.
        resource = path + _sub_resources(query)
        return self._transport.call(
            method,
            self.server + resource,
            lambda: self._headers(method, resource),
            deadline,
            resend_unanswered=resend_unanswered,
        )

    def _headers(self, method: str, resource: str) -> dict[str, str]:
        date = http_date()
        headers = {"Content-Type": JSON, "Date": date, "Accept": JSON, "User-Agent": USER_AGENT}
        headers.update(self._signer.sign(method, resource, date, JSON))
        return headers


def _sub_resources(query: dict[str, Any]) -> str:
    """``?k=v&flag`` sorted by name, as OBS V2 signs and the SDK sends them."""
    if not query:
        return ""
    parts = [name if value is None else f"{name}={value}" for name, value in sorted(query.items())]
    return "?" + "&".join(parts)
