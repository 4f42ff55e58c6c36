"""The OBS workflow execution API (``/v2/workflowexecutions``), as the emulator serves it.

Wire behaviour (as the reference notes on the OBS workflow API describe it):

* ``PUT /v2/workflowexecutions/{execution}?x-workflow-graph-name={graph}`` restores a FAILED
  execution (200, state becomes RUNNING); any other state answers 409
  ``WF.ExecutionNotFailed``, an unknown execution 404 ``WF.ExecutionNotFound``.
* ``GET`` on the same resource answers ``{"execution_info": {...}}`` or 404.
* Every request must carry an OBS V2 signature over its own ``Date`` (checked
  with the OBS signer): bad or missing -> 403 ``SignatureDoesNotMatch``, unknown access
  key -> 403 ``InvalidAccessKeyId``, a ``Date`` missing, unparsable or more than 15 minutes
  off the emulator's clock -> 403 ``RequestTimeTooSkewed``, and, when the emulator is given a
  security token, a missing or different ``x-obs-security-token`` -> 403
  ``InvalidSecurityToken``. Bad names or a missing graph query -> 400 ``WF.InvalidParameter``.
  Checks run in that order: route, authentication, names, state.
* Every answer carries ``X-Request-ID`` and ``Content-Type: application/json`` (exactly, so
  the official SDK parses it), except where a fault says otherwise.

The wire facts are kept apart from handler.client on purpose: the emulator is what the client
is tested against, so it takes them from the reference, not from the code under test.
"""

from __future__ import annotations

import hmac
from dataclasses import replace
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

from werkzeug.wrappers import Request

from handler.client.obs_signing import SECURITY_TOKEN_HEADER, Credentials, Signer, string_to_sign
from handler.devtools.emulator.core import EmulatorCore, Execution
from handler.devtools.emulator.wire import Answer, json_answer
from handler.names import InvalidNameError, validate_name

EXECUTIONS_PATH = "/v2/workflowexecutions/"
GRAPH_QUERY = "x-workflow-graph-name"
STATES = ("RUNNING", "SUCCESS", "FAILED")


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

    def _dispatch(self, request: Request, request_id: str) -> Answer:
        if not request.path.startswith(EXECUTIONS_PATH):
            return self._error(404, "NoSuchResource", "no such API resource", request_id)
        if request.method not in ("GET", "PUT"):
            answer = self._error(
                405, "MethodNotAllowed", "only GET and PUT are allowed", request_id
            )
            return replace(answer, headers=(("Allow", "GET, PUT"),))
        graph = request.args.get(GRAPH_QUERY)
        denied = self._authenticate(request, graph, request_id)
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

    def _authenticate(self, request: Request, graph: str | None, request_id: str) -> Answer | None:
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
        if not hmac.compare_digest(signature, signer.signature(_string_to_sign(request, graph))):
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
            "graph_urn": f"urn:fgs:{self.region}:{self.project_id}:graph:{graph}",
            "execution_state": current.state,
            "started_at": current.started_at,
            "updated_at": current.updated_at,
            "restored_at": current.restored_at,
            "restore_count": current.restore_count,
        }

    def _query_answer(self, info: dict[str, Any]) -> dict[str, Any]:
        return {"execution_info": info}

    def _execution_urn(self, graph: str, execution: str) -> str:
        return (
            f"urn:fgs:{self.region}:{self.project_id}:execution:"
            f"{graph}:{execution}:{self.domain_id}"
        )


def _string_to_sign(request: Request, graph: str | None) -> str:
    """The StringToSign for this request: CanonicalizedResource uses the path as received."""
    raw_path = urlsplit(request.environ.get("RAW_URI") or request.path).path
    resource = raw_path if graph is None else f"{raw_path}?{GRAPH_QUERY}={graph}"
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
