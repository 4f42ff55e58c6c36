"""The client for the DWR (Data Workshop) v3 workflow API, on the OBS client's transport.

DWR is where Huawei Cloud moved the OBS workflows; its restore, query and list operations
mirror the OBS ones under ``/v3/{project_id}/...`` paths, signed with ``SDK-HMAC-SHA256``
(:mod:`handler.dwr_signing`). Everything on the wire - the keep-alive session, the hand-built
prepared request, transport failure mapping, body parsing, full-jitter backoff with
``Retry-After`` - is the OBS client's, so both APIs behave alike and are fixed in one place.

Guarantees, as for the OBS client: names (and the project id) are validated before any I/O,
redirects are never followed, every attempt is signed afresh, secrets stay out of reprs and
messages, and every call returns a :class:`~handler.client.WorkflowResult`. One is stronger:
a restore (``POST .../retry``) that may have been applied - sent, but no answer came - is never
sent again by the client; it is returned at once with ``maybe_applied`` set, so the caller
decides (a query shows whether it took). Queries and lists are retried as usual.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import requests

from handler import __version__
from handler.client import (
    JSON,
    ExecutionInfo,
    RestoreBody,
    RetryPolicy,
    WorkflowResult,
    _backoff_delay,
    _fits,
    _prepared,
    _send,
    _text,
)
from handler.dwr_signing import DATE_HEADER, DwrSigner, canonical_query, sdk_date
from handler.endpoint import normalise_endpoint
from handler.names import InvalidNameError, validate_name
from handler.signing import Credentials

__all__ = [
    "DWR_STATUSES",
    "DwrClient",
    "DwrExecutionInfo",
    "ExecutionPage",
    "ExecutionSummary",
    "InvalidNameError",
    "normalise_status",
]

# DWR's status words and the OBS state names the rest of the function already speaks.
_STATUS_TO_STATE = {
    "fail": "FAILED",
    "success": "SUCCESS",
    "running": "RUNNING",
    "timeout": "TIMEOUT",
    "cancel": "CANCELED",
}
DWR_STATUSES = frozenset(_STATUS_TO_STATE)
MAX_LIST_LIMIT = 200
_LIST_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_LIST_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def normalise_status(status: object) -> str | None:
    """The OBS-style state (``FAILED``, ``SUCCESS``, ...) for a DWR status (``fail``, ...).

    An OBS-style value passes through upper-cased, and so does an unknown word, so a new
    status is shown rather than hidden; a missing one is None.
    """
    if status is None or status == "":
        return None
    text = str(status).strip()
    return _STATUS_TO_STATE.get(text.lower(), text.upper())


@dataclass(frozen=True)
class DwrExecutionInfo(ExecutionInfo):
    """A queried execution: still an :class:`ExecutionInfo`, so code written for the OBS answer
    works unchanged.

    ``executionInfo`` is the service's answer with ``execution_state`` added in OBS terms
    (``fail`` becomes ``FAILED``); ``status`` is DWR's own word; ``errorMessages`` are the
    failed nodes' ``error_message`` values in node order - the only place either API says why
    an execution failed.
    """

    status: str | None = None
    errorMessages: tuple[str, ...] = ()

    @property
    def executionState(self) -> str | None:
        return self.executionInfo.get("execution_state")


@dataclass(frozen=True)
class ExecutionSummary:
    """One execution in a list page; field names follow the DWR SDK's list model."""

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
        return normalise_status(self.execution_state)


@dataclass(frozen=True)
class ExecutionPage:
    """One page of a list: ``next_offset`` is where the next page starts when truncated."""

    executions: tuple[ExecutionSummary, ...] = field(default_factory=tuple)
    count: int | None = None
    is_truncated: bool = False
    next_offset: int | None = None


class DwrClient:
    """Client for the DWR v3 workflow execution API.

    ``server`` is the regional endpoint, e.g. ``https://dwr.cn-south-1.myhuaweicloud.com``
    (``https://`` is assumed for a bare host; ``http://`` is accepted for local emulators);
    ``project_id`` is the project the workflows live in (every path starts with it).
    ``timeout`` is ``(connect, read)`` seconds; ``verify`` is ``True``, ``False`` or a CA
    bundle path. Every call takes an optional ``deadline``: a ``time.monotonic()`` value past
    which no attempt starts and no backoff sleeps.
    """

    def __init__(
        self,
        access_key_id: str,
        secret_access_key: str,
        project_id: str,
        server: str,
        security_token: str | None = None,
        *,
        timeout: tuple[float, float] = (3.05, 10.0),
        retry: RetryPolicy | None = None,
        verify: bool | str = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # The project id goes into every path and a signed header; the name rule admits every
        # id Huawei Cloud issues (32 hex digits) and nothing that needs escaping.
        self.project_id = validate_name(project_id, "project_id")
        self._signer = DwrSigner(Credentials(access_key_id, secret_access_key, security_token))
        self.server = normalise_endpoint(server)
        # The Host header is set, and signed, explicitly: what is signed is then exactly what
        # is sent, whatever the transport would have derived from the URL.
        self._host = urlsplit(self.server).netloc
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._session = requests.Session()
        # As in the OBS client: proxies read once, and the adapter called directly.
        self._session.trust_env = False
        self._adapter = self._session.get_adapter(self.server)
        self._send_options = {
            "verify": verify,
            "proxies": requests.utils.get_environ_proxies(self.server),
            "stream": True,
        }
        self._user_agent = f"obs-workflow-restore/{__version__}"
        self._base_path = f"/v3/{self.project_id}"

    def __repr__(self) -> str:
        return (
            f"DwrClient(server={self.server!r}, project_id={self.project_id!r}, "
            f"signer={self._signer!r})"
        )

    def __enter__(self) -> DwrClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the keep-alive connections; the client is not used afterwards."""
        self._session.close()

    def restoreFailedWorkflowExecution(
        self, executionName: str, graphName: str, *, deadline: float | None = None
    ) -> WorkflowResult:
        """Resume a failed execution from its failed node (``POST``); ``body`` is a RestoreBody.

        Never sent twice when it may have been applied: see the module docstring.
        """
        path = self._execution_path(executionName, graphName) + "/retry"
        result = self._call("POST", path, {}, deadline, resend_unanswered=False)
        if result.ok and isinstance(result.body, dict):
            payload = result.body
            result.body = RestoreBody(
                executionUrn=_text(payload.get("execution_urn")),
                restoredAt=_text(payload.get("restored_at")),
                executionName=_text(payload.get("execution_name")),
            )
        return result

    def getWorkflowExecution(
        self, executionName: str, graphName: str, *, deadline: float | None = None
    ) -> WorkflowResult:
        """Query one execution (``GET``); ``body`` is a :class:`DwrExecutionInfo`."""
        path = self._execution_path(executionName, graphName)
        result = self._call("GET", path, {}, deadline, resend_unanswered=True)
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
        page starts - pass the previous page's ``next_offset`` to go on. Bad values raise
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
            query["limit"] = str(_bounded_int(limit, "limit", 1, MAX_LIST_LIMIT))
        if offset is not None:
            query["offset"] = str(_bounded_int(offset, "offset", 0, None))
        path = f"{self._base_path}/workflowexecutions"
        result = self._call("GET", path, query, deadline, resend_unanswered=True)
        if result.ok and isinstance(result.body, dict):
            result.body = _execution_page(result.body)
        return result

    # Thin snake_case aliases for code that is not copied from the SDK's documentation.
    restore_failed_workflow_execution = restoreFailedWorkflowExecution
    get_workflow_execution = getWorkflowExecution
    list_workflow_execution = listWorkflowExecution

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
        resend_unanswered: bool,
    ) -> WorkflowResult:
        """Send with bounded retries; ``resend_unanswered`` is False for non-idempotent calls.

        Valid names need no escaping, and the query is the canonical (already encoded) one,
        so the URL goes out exactly as signed.
        """
        encoded_query = canonical_query(query)
        url = self.server + path + (f"?{encoded_query}" if encoded_query else "")
        attempt = 0
        while True:
            attempt += 1
            request = _prepared(method, url, self._headers(method, path, query))
            result = _send(self._adapter, request, self.timeout, deadline, self._send_options)
            result.attempts = attempt
            if result.maybe_applied and not resend_unanswered:
                return result
            if not result.retryable or attempt >= self.retry.max_attempts:
                return result
            delay = _backoff_delay(self.retry, attempt, result)
            if delay is None or not _fits(deadline, delay):
                return result
            self._sleep(delay)

    def _headers(self, method: str, path: str, query: dict[str, str]) -> dict[str, str]:
        signed = {
            "Content-Type": JSON,
            "Host": self._host,
            "X-Project-Id": self.project_id,
            DATE_HEADER: sdk_date(),
        }
        headers = {**signed, "Accept": JSON, "User-Agent": self._user_agent}
        headers.update(self._signer.sign(method, path, query, signed))
        return headers


def _execution_info(payload: dict[str, Any]) -> DwrExecutionInfo:
    status = _text(payload.get("status"))
    # An answer in the OBS shape (``execution_state`` only) keeps its state rather than losing it.
    state = normalise_status(status if status is not None else payload.get("execution_state"))
    nodes = payload.get("node_execution_details")
    messages = tuple(
        message
        for node in (nodes if isinstance(nodes, list) else ())
        if isinstance(node, dict) and (message := _text(node.get("error_message")))
    )
    info = {**payload, "execution_state": state}
    return DwrExecutionInfo(executionInfo=info, status=status, errorMessages=messages)


def _execution_page(payload: dict[str, Any]) -> ExecutionPage:
    executions = payload.get("executions")
    summaries = tuple(
        ExecutionSummary(
            execution_name=_text(item.get("execution_name")),
            execution_urn=_text(item.get("execution_urn")),
            graph_urn=_text(item.get("graph_urn")),
            execution_type=_text(item.get("execution_type")),
            execution_state=_text(item.get("execution_state")),
            started_at=_text(item.get("started_at")),
            stopped_at=_text(item.get("stopped_at")),
        )
        for item in (executions if isinstance(executions, list) else ())
        if isinstance(item, dict)
    )
    return ExecutionPage(
        executions=summaries,
        count=_int_or_none(payload.get("count")),
        is_truncated=payload.get("is_truncated") is True,
        next_offset=_int_or_none(payload.get("next_offset")),
    )


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _list_time(value: datetime | str, name: str) -> str:
    """``yyyy-MM-ddTHH:mm:ssZ`` in UTC, as the list filter takes it."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc).strftime(_LIST_TIME_FORMAT)
    if isinstance(value, str) and _LIST_TIME.fullmatch(value):
        return value
    raise ValueError(f"invalid {name}: give a datetime or a yyyy-MM-ddTHH:mm:ssZ UTC string")


def _bounded_int(value: object, name: str, low: int, high: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"invalid {name}: must be an integer")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"invalid {name}: must be {bounds}, got {value}")
    return value
