"""The OBS workflow execution API (``/v2/workflowexecutions``), as the emulator serves it.

Wire behaviour (as the reference notes on the OBS workflow API describe it):

* ``PUT /v2/workflowexecutions/{execution}?x-workflow-graph-name={graph}`` restores a FAILED
  execution (200, state becomes RUNNING); any other state answers 409
  ``WF.ExecutionNotFailed``, an unknown execution 404 ``WF.ExecutionNotFound``.
* ``GET`` on the same resource answers ``{"execution_info": {...}}`` or 404.
* ``GET /v2/workflowexecutions?x-workflow-graph-name={graph}[&x-workflow-execution-type=
  APICALL|TRIGGERCAL][&x-workflow-next-marker=M][&x-workflow-limit=1..1000]`` lists a graph's
  executions (an unknown graph lists none) in lexicographic order of execution type + name,
  ``limit`` (default 10) a page, the page after marker ``M`` (that pair, e.g.
  ``APICALLrun-7``): ``{"count" (this page's), "is_truncated", "next_marker" (only when
  truncated), "executions": [{"graph_urn", "execution_urn", "execution_name",
  "execution_type", "execution_state", "started_at", "stopped_at"}]}``. No state filter: the
  service has none.
* ``GET /v2/workflows/{prefix}?x-workflow-prefix[&x-workflow-start=1..][&x-workflow-limit=
  1..1000]`` lists the graphs whose name starts with ``prefix``, by name, ``start`` the
  1-based position of the page (default 1, limit default 10): ``{"count" (this page's),
  "is_truncated", "next_start" (only when truncated), "graphs": [{"name", "graph_urn",
  "created_at"}]}``. Without ``x-workflow-prefix`` it is another API (get one graph),
  which the emulator does not serve: 404.
* Every request must carry an OBS V2 signature over its own ``Date`` (checked
  with the OBS signer): bad or missing -> 403 ``SignatureDoesNotMatch``, unknown access
  key -> 403 ``InvalidAccessKeyId``, a ``Date`` missing, unparsable or more than 15 minutes
  off the emulator's clock -> 403 ``RequestTimeTooSkewed``, and, when the emulator is given a
  security token, a missing or different ``x-obs-security-token`` -> 403
  ``InvalidSecurityToken``. The signed CanonicalizedResource is the path as received plus
  every ``x-workflow-*`` query parameter, sorted by name, decoded, a valueless one (the
  list's ``x-workflow-prefix``) as its bare name - as the official SDK signs them. Bad names,
  a missing graph query or bad list parameters -> 400 ``WF.InvalidParameter``. Checks run in
  that order: route, authentication, names and parameters, state.
* Every answer carries ``X-Request-ID`` and ``Content-Type: application/json`` (exactly, so
  the official SDK parses it), except where a fault says otherwise.

The wire facts are kept apart from handler.client on purpose: the emulator is what the client
is tested against, so it takes them from the reference, not from the code under test.
"""

from __future__ import annotations

import bisect
import hmac
from collections.abc import Mapping
from dataclasses import replace
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from werkzeug.wrappers import Request

from handler.client.obs_signing import SECURITY_TOKEN_HEADER, Credentials, Signer, string_to_sign
from handler.devtools.emulator.core import EXECUTION_TYPES, EmulatorCore, Execution, iso
from handler.devtools.emulator.wire import Answer, json_answer
from handler.names import InvalidNameError, validate_name

EXECUTIONS_PATH = "/v2/workflowexecutions/"
LIST_PATH = "/v2/workflowexecutions"
GRAPHS_PATH = "/v2/workflows/"
GRAPH_QUERY = "x-workflow-graph-name"
TYPE_QUERY = "x-workflow-execution-type"
MARKER_QUERY = "x-workflow-next-marker"
LIMIT_QUERY = "x-workflow-limit"
PREFIX_QUERY = "x-workflow-prefix"
START_QUERY = "x-workflow-start"
SIGNED_QUERY_PREFIX = "x-workflow-"
STATES = ("RUNNING", "SUCCESS", "FAILED")
DEFAULT_LIMIT = 10
MAX_LIMIT = 1000


class Emulator(EmulatorCore):
    """In-memory OBS workflow executions behind the OBS V2-signed API on loopback.

    ``credentials`` maps access key ids to secret keys. ``security_token``, when set, must be
    carried by every request. ``clock`` (seconds since the epoch) is what ``Date`` headers are
    checked against and what timestamps are made from; tests can pin it.
    """

    STATES: ClassVar[tuple[str, ...]] = STATES
    FAILED: ClassVar[str] = "FAILED"
    RUNNING: ClassVar[str] = "RUNNING"
    NOT_FOUND_CODE: ClassVar[str] = "WF.ExecutionNotFound"
    NOT_FAILED_CODE: ClassVar[str] = "WF.ExecutionNotFailed"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per graph: (the graph's version, its executions' list keys in order), rebuilt only
        # when an execution is added or changes type, so paging a large graph stays cheap.
        self._order: dict[str, tuple[int, list[tuple[str, str]]]] = {}

    def _signer_for(self, credentials: Credentials) -> Signer:
        return Signer(credentials)

    def _error(self, status: int, code: str, message: str, request_id: str) -> Answer:
        return json_answer(status, {"code": code, "message": message, "request_id": request_id})

    def _target(self, request: Request) -> tuple[str | None, str | None]:
        """Graph and execution as sent (unchecked, shortened), for the call record."""
        graph = request.args.get(GRAPH_QUERY)
        path = request.path
        execution = path[len(EXECUTIONS_PATH) :] if path.startswith(EXECUTIONS_PATH) else None
        return (
            graph[:200] if graph is not None else None,
            execution[:200] if execution is not None else None,
        )

    def _operation(self, request: Request) -> str:
        path = request.path
        if path == LIST_PATH:
            return "list"
        if path.startswith(GRAPHS_PATH) and PREFIX_QUERY in request.args:
            return "list_graphs"
        if path.startswith(EXECUTIONS_PATH):
            return "restore" if request.method == "PUT" else "query"
        return "other"

    def _dispatch(self, request: Request, request_id: str) -> Answer:
        operation = self._operation(request)
        if operation in ("list", "list_graphs"):
            return self._dispatch_list(request, operation, request_id)
        if not request.path.startswith(EXECUTIONS_PATH):
            return self._error(404, "NoSuchResource", "no such API resource", request_id)
        if request.method not in ("GET", "PUT"):
            answer = self._error(
                405, "MethodNotAllowed", "only GET and PUT are allowed", request_id
            )
            return replace(answer, headers=(("Allow", "GET, PUT"),))
        graph = request.args.get(GRAPH_QUERY)
        denied = self._authenticate(request, request_id)
        if denied is not None:
            return denied
        execution = request.path[len(EXECUTIONS_PATH) :]
        if graph is None:
            message = f"query parameter {GRAPH_QUERY} is required"
            return self._error(400, "WF.InvalidParameter", message, request_id)
        try:
            validate_name(graph, "graphName")
            validate_name(execution, "executionName")
        except InvalidNameError as exc:
            return self._error(400, "WF.InvalidParameter", str(exc), request_id)
        if request.method == "PUT":
            return self._restore(graph, execution, request_id)
        return self._describe(graph, execution, request_id)

    def _dispatch_list(self, request: Request, operation: str, request_id: str) -> Answer:
        if request.method != "GET":
            answer = self._error(405, "MethodNotAllowed", "only GET is allowed", request_id)
            return replace(answer, headers=(("Allow", "GET"),))
        denied = self._authenticate(request, request_id)
        if denied is not None:
            return denied
        try:
            if operation == "list":
                document = self._list_executions(request.args)
            else:
                document = self._list_graphs(request.path[len(GRAPHS_PATH) :], request.args)
        except ValueError as exc:
            return self._error(400, "WF.InvalidParameter", str(exc), request_id)
        return json_answer(200, document)

    def _list_executions(self, args: Mapping[str, str]) -> dict[str, Any]:
        """One page of a graph's executions, ordered by type + name; ValueError if bad."""
        graph = args.get(GRAPH_QUERY)
        if graph is None:
            raise ValueError(f"query parameter {GRAPH_QUERY} is required")
        validate_name(graph, "graphName")
        kind = args.get(TYPE_QUERY)
        if kind is not None and kind not in EXECUTION_TYPES:
            raise ValueError(f"{TYPE_QUERY} must be one of {', '.join(EXECUTION_TYPES)}")
        marker = args.get(MARKER_QUERY) or ""
        limit = _bounded(args, LIMIT_QUERY, DEFAULT_LIMIT, 1, MAX_LIMIT)
        with self._lock:
            executions = self._by_graph.get(graph, {})
            order = self._ordered(graph, executions)
            # A type filter is a key prefix: the filtered keys are one contiguous run.
            low = bisect.bisect_right(order, (marker, "\uffff")) if marker else 0
            if kind is not None:
                low = max(low, bisect.bisect_left(order, (kind, "")))
            page, truncated = [], False
            for key, name in order[low:]:
                if kind is not None and not key.startswith(kind):
                    break
                if len(page) == limit:
                    truncated = True
                    break
                page.append((key, name, replace(executions[name])))
        document: dict[str, Any] = {
            "count": len(page),
            "is_truncated": truncated,
            "executions": [self._summary(graph, name, current) for _, name, current in page],
        }
        if truncated:
            document["next_marker"] = page[-1][0]
        return document

    def _ordered(self, graph: str, executions: Mapping[str, Execution]) -> list[tuple[str, str]]:
        """The graph's ``(type + name, name)`` keys in list order; the caller holds the lock."""
        version = self._graph_version.get(graph, 0)
        cached = self._order.get(graph)
        if cached is None or cached[0] != version:
            keys = sorted((e.execution_type + name, name) for name, e in executions.items())
            cached = self._order[graph] = (version, keys)
        return cached[1]

    def _list_graphs(self, prefix: str, args: Mapping[str, str]) -> dict[str, Any]:
        """One page of graph names starting with ``prefix``, by name; ValueError if bad."""
        if prefix:
            validate_name(prefix, "graphNamePrefix")
        start = _bounded(args, START_QUERY, 1, 1, None)
        limit = _bounded(args, LIMIT_QUERY, DEFAULT_LIMIT, 1, MAX_LIMIT)
        with self._lock:
            names = sorted(name for name in self._graph_created if name.startswith(prefix))
            page = [(name, self._graph_created[name]) for name in names[start - 1 :][:limit]]
        truncated = start - 1 + limit < len(names)
        document: dict[str, Any] = {
            "count": len(page),
            "is_truncated": truncated,
            "graphs": [
                {"name": name, "graph_urn": self._graph_urn(name), "created_at": iso(created)}
                for name, created in page
            ],
        }
        if truncated:
            document["next_start"] = start + limit
        return document

    def _authenticate(self, request: Request, request_id: str) -> Answer | None:
        """None when the V2 signature, Date and security token are all good, else a 403."""
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        access_key, colon, signature = credential.rpartition(":")
        if scheme != "OBS" or not colon or not access_key:
            message = "missing or malformed Authorization"
            return self._error(403, "SignatureDoesNotMatch", message, request_id)
        signer = self._signers.get(access_key)
        if signer is None:
            message = "the access key id does not exist"
            return self._error(403, "InvalidAccessKeyId", message, request_id)
        sent = _timestamp(request.headers.get("Date", ""))
        if sent is None or abs(self._clock() - sent) > self._max_skew:
            message = "the difference between the request time and the server's time is too large"
            return self._error(403, "RequestTimeTooSkewed", message, request_id)
        if not hmac.compare_digest(signature, signer.signature(_string_to_sign(request))):
            message = (
                "the request signature we calculated does not match the signature you provided"
            )
            return self._error(403, "SignatureDoesNotMatch", message, request_id)
        token = request.headers.get(SECURITY_TOKEN_HEADER)
        if self._security_token and not hmac.compare_digest(token or "", self._security_token):
            message = "the security token is missing or not valid"
            return self._error(403, "InvalidSecurityToken", message, request_id)
        return None

    def _info(self, graph: str, execution: str, current: Execution) -> dict[str, Any]:
        return {
            "execution_name": execution,
            "execution_urn": self._execution_urn(graph, execution),
            "graph_name": graph,
            "graph_urn": self._graph_urn(graph),
            "execution_type": current.execution_type,
            "execution_state": current.state,
            "started_at": iso(current.started),
            "stopped_at": _iso_or_none(current.stopped),
            "updated_at": iso(current.updated),
            "restored_at": _iso_or_none(current.restored),
            "restore_count": current.restore_count,
        }

    def _summary(self, graph: str, execution: str, current: Execution) -> dict[str, Any]:
        """An execution as the list shows it."""
        return {
            "graph_urn": self._graph_urn(graph),
            "execution_urn": self._execution_urn(graph, execution),
            "execution_name": execution,
            "execution_type": current.execution_type,
            "execution_state": current.state,
            "started_at": iso(current.started),
            "stopped_at": _iso_or_none(current.stopped),
        }

    def _graph_urn(self, graph: str) -> str:
        return f"urn:fgs:{self.region}:{self.project_id}:graph:{graph}"

    def _query_answer(self, info: dict[str, Any]) -> dict[str, Any]:
        return {"execution_info": info}

    def _execution_urn(self, graph: str, execution: str) -> str:
        return (
            f"urn:fgs:{self.region}:{self.project_id}:execution:"
            f"{graph}:{execution}:{self.domain_id}"
        )


def _string_to_sign(request: Request) -> str:
    """The StringToSign for this request: CanonicalizedResource uses the path as received."""
    raw = urlsplit(request.environ.get("RAW_URI") or request.path)
    resource = raw.path + _sub_resources(raw.query)
    obs_headers = {
        name.lower(): value
        for name, value in request.headers.items()
        if name.lower().startswith("x-obs-")
    }
    return string_to_sign(
        request.method,
        resource,
        request.headers.get("Date", ""),
        request.headers.get("Content-Type", ""),
        request.headers.get("Content-MD5", ""),
        obs_headers,
    )


def _sub_resources(query: str) -> str:
    """The signed part of a raw query: ``x-workflow-*`` parameters sorted by name, decoded;
    a parameter sent without ``=`` signs as its bare name (``?x-workflow-prefix&...``)."""
    parts = []
    for field in query.split("&"):
        name, equals, value = field.partition("=")
        name = unquote(name)
        if name.lower().startswith(SIGNED_QUERY_PREFIX):
            parts.append((name, f"{name}={unquote(value)}" if equals else name))
    return "?" + "&".join(text for _, text in sorted(parts)) if parts else ""


def _bounded(args: Mapping[str, str], name: str, default: int, low: int, high: int | None) -> int:
    """A whole-number query parameter within bounds, or ``default``; ValueError names it."""
    value = args.get(name)
    if value is None:
        return default
    if not value.isascii() or not value.isdigit() or int(value) < low:
        raise ValueError(_bounds_message(name, low, high))
    if high is not None and int(value) > high:
        raise ValueError(_bounds_message(name, low, high))
    return int(value)


def _bounds_message(name: str, low: int, high: int | None) -> str:
    bounds = f"{low} to {high}" if high is not None else f"at least {low}"
    return f"{name} must be a whole number, {bounds}"


def _iso_or_none(timestamp: float | None) -> str | None:
    return None if timestamp is None else iso(timestamp)


def _timestamp(date: str) -> float | None:
    """Seconds since the epoch from an RFC 1123 ``Date``, or None when it does not parse."""
    if not date:
        return None
    try:
        parsed = parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()
