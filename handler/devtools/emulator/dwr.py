"""The DWR (Data Workshop) v3 workflow API, as the emulator serves it.

Wire behaviour (as the reference notes on the DWR API describe it; every path starts with the
project id):

* ``POST /v3/{project}/workflows/{graph}/workflowexecution/{execution}/retry`` restores a
  ``fail`` execution (200 ``{"execution_urn", "restored_at", "execution_name"}``, status
  becomes ``running``); any other status answers 409 ``DWR.ExecutionNotFailed``, an unknown
  execution 404 ``DWR.ExecutionNotFound``.
* ``GET`` on the execution (without ``/retry``) answers the execution: ``status`` in DWR's
  words (``fail``, ``running``, ``success``, ``timeout``, ``cancel``), times, the graph as
  ``workflow_urn`` in the documented form
  ``urn:fss:<region>:<project>:workflow:default:<graph>:latest``, and
  ``node_execution_details`` whose failed node carries the seeded ``error_message``.
* ``GET /v3/{project}/workflowexecutions?graph_name&status&start_time&end_time&limit&offset``
  lists executions started in the window (``yyyy-MM-ddTHH:mm:ssZ``, UTC; the last 3 days
  when neither bound is given), oldest first, filtered by status on the server; ``limit`` is
  1-200 (default 10), ``offset`` the 1-based position the page starts at, at most 1000 (as
  DWR documents it: more is a 400 ``DWR.InvalidParameter``, so a window with more matches
  than offsets reach must be split by time); the answer carries ``count`` (all matches),
  ``is_truncated`` and ``next_offset``.
* ``GET /v3/{project}/workflows?prefix&offset&limit`` lists the graphs whose name starts
  with ``prefix``, by name, ``limit`` 1-1000 (default 10) from the 1-based ``offset``:
  ``{"count" (all matches), "graphs": [{"name", "graph_urn", "created_at", "id"}],
  "next_offset", "is_truncated"}``.
* Every request must carry an ``SDK-HMAC-SHA256`` signature (checked with
  :class:`handler.client.dwr_signing.DwrSigner` over the headers ``SignedHeaders`` names, which must
  include ``host`` and ``x-sdk-date``): malformed or wrong -> 401, unknown access key -> 401,
  ``X-Sdk-Date`` missing, unparsable or more than 15 minutes off the emulator's clock -> 401,
  a required security token missing or different -> 401 (all ``APIGW.0301``, the API
  gateway's "incorrect IAM authentication information", with a message saying which check
  failed). ``X-Project-Id`` and the path's project id must both be the emulator's project
  -> else 403 ``DWR.ProjectMismatch``. Bad names or list parameters -> 400
  ``DWR.InvalidParameter``. Checks run in that order: route, authentication, project, names
  and parameters, state.
* Errors are ``{"error_code", "error_msg", "request_id"}``; every answer carries
  ``X-Request-Id``. Error codes other than ``APIGW.0301`` are the emulator's own (the
  reference documents the shape, not the codes): clients should act on the status.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, ClassVar

from werkzeug.wrappers import Request

from handler.client.dwr_signing import DwrSigner
from handler.credentials import Credentials
from handler.devtools.emulator.core import EmulatorCore, Execution, iso
from handler.devtools.emulator.gateway import sdk_signature_problem
from handler.devtools.emulator.notify import NotifyRoutes
from handler.devtools.emulator.wire import Answer, json_answer
from handler.names import InvalidNameError, validate_name

STATES = ("running", "success", "fail", "timeout", "cancel")
MAX_LIMIT = 200
MAX_OFFSET = 1000  # documented: "start >= 1, at most 1000"
DEFAULT_LIMIT = 10
DEFAULT_WINDOW_SECONDS = 3 * 24 * 3600
DEFAULT_ERROR_MESSAGE = "node failed: the emulated task returned an error"
_EXECUTION = re.compile(r"/v3/([^/]*)/workflows/([^/]*)/workflowexecution/([^/]*)(/retry)?")
_LIST = re.compile(r"/v3/([^/]*)/workflowexecutions")
_GRAPHS = re.compile(r"/v3/([^/]*)/workflows")
MAX_GRAPH_LIMIT = 1000
_LIST_TIME = "%Y-%m-%dT%H:%M:%SZ"
_AUTH_FAILED = "APIGW.0301"


class DwrWorkflowEmulator(EmulatorCore):
    """In-memory DWR workflow executions behind the ``SDK-HMAC-SHA256``-signed v3 API.

    Takes the same arguments as :class:`~handler.devtools.emulator.Emulator`; ``project_id``
    is the project whose paths it serves. States are DWR's words (``fail``, ``running``, ...).
    """

    STATES: ClassVar[tuple[str, ...]] = STATES
    FAILED: ClassVar[str] = "fail"
    RUNNING: ClassVar[str] = "running"
    NOT_FOUND_CODE: ClassVar[str] = "DWR.ExecutionNotFound"
    NOT_FAILED_CODE: ClassVar[str] = "DWR.ExecutionNotFailed"

    def _signer_for(self, credentials: Credentials) -> DwrSigner:
        return DwrSigner(credentials)

    def _error(self, status: int, code: str, message: str, request_id: str) -> Answer:
        document = {"error_code": code, "error_msg": message, "request_id": request_id}
        return json_answer(status, document)

    def _target(self, request: Request) -> tuple[str | None, str | None]:
        """Graph and execution as sent (unchecked, shortened), for the call record."""
        route = _EXECUTION.fullmatch(request.path)
        if route:
            return route[2][:200], route[3][:200]
        graph = request.args.get("graph_name") if _LIST.fullmatch(request.path) else None
        return (graph[:200] if graph is not None else None), None

    def _operation(self, request: Request) -> str:
        route = _EXECUTION.fullmatch(request.path)
        if route:
            return "restore" if route[4] else "query"
        if _LIST.fullmatch(request.path):
            return "list"
        return "list_graphs" if _GRAPHS.fullmatch(request.path) else "other"

    def _dispatch(self, request: Request, request_id: str) -> Answer:
        route = _EXECUTION.fullmatch(request.path)
        listing = None if route else _LIST.fullmatch(request.path)
        graphs = None if route or listing else _GRAPHS.fullmatch(request.path)
        if graphs is not None:
            return self._dispatch_graphs(request, graphs[1], request_id)
        if route is None and listing is None:
            return self._error(404, "DWR.NoSuchResource", "no such API resource", request_id)
        allowed = "POST" if route and route[4] else "GET"
        if request.method != allowed:
            message = f"only {allowed} is allowed here"
            answer = self._error(405, "DWR.MethodNotAllowed", message, request_id)
            return replace(answer, headers=(("Allow", allowed),))
        denied = self._authenticate(request, request_id) or self._check_project(
            request, (route or listing)[1], request_id
        )
        if denied is not None:
            return denied
        if listing is not None:
            return self._list(request.args, request_id)
        try:
            graph = validate_name(route[2], "graph_name")
            execution = validate_name(route[3], "execution_name")
        except InvalidNameError as exc:
            return self._error(400, "DWR.InvalidParameter", str(exc), request_id)
        if route[4]:
            return self._restore(graph, execution, request_id)
        return self._describe(graph, execution, request_id)

    def _dispatch_graphs(self, request: Request, project: str, request_id: str) -> Answer:
        if request.method != "GET":
            answer = self._error(405, "DWR.MethodNotAllowed", "only GET is allowed", request_id)
            return replace(answer, headers=(("Allow", "GET"),))
        denied = self._authenticate(request, request_id) or self._check_project(
            request, project, request_id
        )
        if denied is not None:
            return denied
        try:
            return json_answer(200, self._list_graphs(request.args))
        except ValueError as exc:
            return self._error(400, "DWR.InvalidParameter", str(exc), request_id)

    # --- checks ---------------------------------------------------------------------------

    def _authenticate(self, request: Request, request_id: str) -> Answer | None:
        """None when the signature, X-Sdk-Date and security token are all good, else a 401."""
        why = sdk_signature_problem(
            request,
            self._signers,
            now=self._clock(),
            max_skew=self._max_skew,
            security_token=self._security_token,
        )
        return None if why is None else self._refused(why, request_id)

    def _refused(self, why: str, request_id: str) -> Answer:
        message = f"Incorrect IAM authentication information: {why}"
        return self._error(401, _AUTH_FAILED, message, request_id)

    def _check_project(self, request: Request, path_project: str, request_id: str) -> Answer | None:
        header = request.headers.get("X-Project-Id")
        if path_project == header == self.project_id:
            return None
        message = "X-Project-Id and the path's project id must both name this project"
        return self._error(403, "DWR.ProjectMismatch", message, request_id)

    # --- operations -----------------------------------------------------------------------

    def _list(self, args: Mapping[str, str], request_id: str) -> Answer:
        try:
            graph, status, start, end, limit, offset = self._list_parameters(args)
        except ValueError as exc:
            return self._error(400, "DWR.InvalidParameter", str(exc), request_id)
        with self._lock:
            if graph is None:
                candidates = self._executions.items()
            else:
                candidates = (((graph, n), e) for n, e in self._by_graph.get(graph, {}).items())
            matches = sorted(
                (current.started, name, (graph_name, name), replace(current))
                for (graph_name, name), current in candidates
                if (status is None or current.state == status) and start <= current.started <= end
            )
        page = matches[offset - 1 : offset - 1 + limit]
        truncated = offset - 1 + limit < len(matches)
        document = {
            "count": len(matches),
            "is_truncated": truncated,
            "next_offset": offset + limit if truncated else None,
            "executions": [self._summary(*key, current) for _, _, key, current in page],
        }
        return json_answer(200, document)

    def _list_graphs(self, args: Mapping[str, str]) -> dict[str, Any]:
        """One page of graphs by name; ValueError names a bad parameter."""
        prefix = args.get("prefix") or ""
        if prefix:
            validate_name(prefix, "prefix")
        limit = _list_int(args, "limit", DEFAULT_LIMIT, 1, MAX_GRAPH_LIMIT)
        offset = max(_list_int(args, "offset", 1, 0, None), 1)  # 0 reads as the first page
        with self._lock:
            names = sorted(name for name in self._graph_created if name.startswith(prefix))
            page = [(name, self._graph_created[name]) for name in names[offset - 1 :][:limit]]
        truncated = offset - 1 + limit < len(names)
        return {
            "count": len(names),
            "graphs": [
                {
                    "name": name,
                    "graph_urn": self._graph_urn(name),
                    "created_at": iso(created),
                    "id": uuid.uuid5(uuid.NAMESPACE_URL, name).hex,
                }
                for name, created in page
            ],
            "next_offset": offset + limit if truncated else None,
            "is_truncated": truncated,
        }

    def _list_parameters(
        self, args: Mapping[str, str]
    ) -> tuple[str | None, str | None, float, float, int, int]:
        """The list's filters, checked; ValueError names the bad one."""
        graph = args.get("graph_name")
        if graph is not None:
            validate_name(graph, "graph_name")
        status = args.get("status")
        if status is not None and status not in STATES:
            raise ValueError(f"status must be one of {', '.join(STATES)}")
        start, end = _list_time(args, "start_time"), _list_time(args, "end_time")
        if start is None and end is None:
            end = self._clock()
            start = end - DEFAULT_WINDOW_SECONDS
        limit = _list_int(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        # 0 reads as the first page; past MAX_OFFSET the service refuses, as documented
        offset = max(_list_int(args, "offset", 1, 0, MAX_OFFSET), 1)
        return graph, status, start or 0.0, end or float("inf"), limit, offset

    # --- answers --------------------------------------------------------------------------

    def _info(self, graph: str, execution: str, current: Execution) -> dict[str, Any]:
        failed = current.state == self.FAILED
        finished = current.state != self.RUNNING
        message = (current.error_message or DEFAULT_ERROR_MESSAGE) if failed else ""
        begin, updated = current.started, current.updated
        ended = current.stopped if current.stopped is not None else updated
        node = {
            "status": current.state,
            "input": "{}",
            "output": "" if failed or not finished else "{}",
            "begin_time": int(begin * 1000),
            "end_time": int(ended * 1000) if finished else None,
            "error_message": message,
            "request_id": uuid.uuid5(uuid.NAMESPACE_URL, f"{graph}/{execution}").hex,
        }
        return {
            "workflow_id": uuid.uuid5(uuid.NAMESPACE_URL, graph).hex,
            "workflow_urn": self._workflow_urn(graph),
            "execution_id": uuid.uuid5(uuid.NAMESPACE_URL, f"{graph}:{execution}").hex,
            "execution_name": execution,
            "status": current.state,
            "input": "{}",
            "output": "{}" if current.state == "success" else "",
            "begin_time": _list_stamp(begin),
            "end_time": _list_stamp(ended) if finished else None,
            "last_update_time": _list_stamp(updated),
            "created_by": "emulator",
            "restore_count": current.restore_count,
            "node_execution_details": [node],
        }

    def _query_answer(self, info: dict[str, Any]) -> dict[str, Any]:
        return info

    def _summary(self, graph: str, execution: str, current: Execution) -> dict[str, Any]:
        return {
            "graph_urn": self._graph_urn(graph),
            "execution_urn": self._execution_urn(graph, execution),
            "execution_name": execution,
            "execution_type": current.execution_type,
            "execution_state": current.state,
            "started_at": iso(current.started),
            "stopped_at": None if current.stopped is None else iso(current.stopped),
        }

    def _workflow_urn(self, graph: str) -> str:
        """The query answer's ``workflow_urn`` as DWR documents it: package ``default``,
        version ``latest``."""
        return f"urn:fss:{self.region}:{self.project_id}:workflow:default:{graph}:latest"

    def _graph_urn(self, graph: str) -> str:
        return f"urn:dwr:{self.region}:{self.project_id}:workflow:{graph}"

    def _execution_urn(self, graph: str, execution: str) -> str:
        return (
            f"urn:dwr:{self.region}:{self.project_id}:execution:"
            f"{graph}:{execution}:{self.domain_id}"
        )


class DwrEmulator(NotifyRoutes, DwrWorkflowEmulator):
    """The DWR emulator, serving SMN publish and Cloud Eye metric data beside the workflow API
    (:mod:`.notify`; ``topics=`` names the SMN topics that exist): what a function on DWR
    talks to, at one URL."""


def _list_stamp(timestamp: float) -> str:
    return time.strftime(_LIST_TIME, time.gmtime(timestamp))


def _list_time(args: Mapping[str, str], name: str) -> float | None:
    value = args.get(name)
    if value is None:
        return None
    try:
        parsed = datetime.strptime(value, _LIST_TIME).replace(tzinfo=timezone.utc)
    except ValueError:
        raise ValueError(f"{name} must be yyyy-MM-ddTHH:mm:ssZ (UTC)") from None
    return parsed.timestamp()


def _list_int(args: Mapping[str, str], name: str, default: int, low: int, high: int | None) -> int:
    value = args.get(name)
    if value is None:
        return default
    if not value.isdigit() or int(value) < low or (high is not None and int(value) > high):
        bounds = f"{low} to {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be a whole number, {bounds}")
    return int(value)
