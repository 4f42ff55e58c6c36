"""A small, stateful local stand-in for the OBS workflow execution API.

Demos, the CLI, integration tests and benchmarks need something that answers like the real
service - signed requests checked byte for byte, executions that really change state, the
documented JSON answers - without a cloud account. pytest-httpserver answers one canned reply
at a time; this emulator keeps executions in memory, so a restore loop can be watched end to
end, and it injects the faults a client must survive (5xx, resets, garbage, redirects, latency).

Wire behaviour (as the reference notes on the OBS workflow API describe it):

* ``PUT /v2/workflowexecutions/{execution}?x-workflow-graph-name={graph}`` restores a FAILED
  execution (200, state becomes RUNNING); any other state answers 409
  ``WF.ExecutionNotFailed``, an unknown execution 404 ``WF.ExecutionNotFound``.
* ``GET`` on the same resource answers ``{"execution_info": {...}}`` or 404.
* Every request must carry an OBS V2 signature over its own ``Date`` (checked with
  :mod:`handler.signing`): bad or missing -> 403 ``SignatureDoesNotMatch``, unknown access
  key -> 403 ``InvalidAccessKeyId``, a ``Date`` missing, unparsable or more than 15 minutes
  off the emulator's clock -> 403 ``RequestTimeTooSkewed``, and, when the emulator is given a
  security token, a missing or different ``x-obs-security-token`` -> 403
  ``InvalidSecurityToken``. Bad names or a missing graph query -> 400 ``WF.InvalidParameter``.
  Checks run in that order: route, authentication, names, state.
* Every answer carries ``X-Request-ID`` and ``Content-Type: application/json`` (exactly, so
  the official SDK parses it), except where a fault says otherwise.
* HTTP/1.1 keep-alive works. werkzeug's stock request handler forces ``Connection: close``
  and spends 10 ms draining the socket after every answer, so :class:`_Handler` keeps
  werkzeug's server, request parsing and ``Request`` object but writes answers itself.

Python use::

    from handler.emulator import Emulator

    with Emulator(credentials={"AK": "SK"}) as emu:     # starts on a free loopback port
        emu.seed("graph-1", "exec-1", "FAILED")
        ...  # point a client at emu.url
        assert emu.state("graph-1", "exec-1") == "RUNNING"

``emu.start(host, port)`` / ``emu.stop()`` do the same by hand; ``with emu.start(port=9000):``
also works (entering a running emulator does not start it again).

Faults (thread-safe, one queue, first in first out; each consumes one request, whatever its
path or method, before authentication and before any state change unless said otherwise):

* ``fail_next(n, status, retry_after, body, content_type)`` - answer with that status;
  the default body is a JSON error ``{"code", "message", "request_id"}``.
* ``garbage_next(n, body, status, content_type, declared_length)`` - HTML or other non-JSON
  bodies; a ``declared_length`` larger than the body sends a short body and then closes the
  connection, so the client sees a truncated answer.
* ``redirect_next(n, location, status)`` - a 3xx with ``Location``.
* ``reset_next(n, partial=b"", applied=False)`` - reads the request, writes ``partial`` (by
  default nothing; e.g. a status line and half the headers), then closes the socket with
  ``SO_LINGER`` 0, so the client gets a TCP reset, never a complete answer. With
  ``applied=True`` the request is carried out first (a restore really happens) and only the
  answer is lost - the "maybe applied" case.
* ``latency(seconds)`` - every answer is delayed by that much *after* the request was carried
  out (a client that times out has still restored the execution). ``latency(0)`` ends it.

Observability: ``calls`` (a snapshot list of :class:`Call` records; a reset is recorded with
status 0), ``restores(graph, execution)``, ``state(graph, execution)``,
``execution_info(graph, execution)`` and ``connections_opened`` (TCP connections accepted:
two calls over one keep-alive connection count one).

Background transition: ``after_restore=("FAILED", 0.5)`` flips a restored execution from
RUNNING to FAILED (or SUCCESS) after 0.5 s, unless it was restored again or re-seeded meanwhile.

Seed file (JSON; every key but ``credentials`` is optional, unknown keys are rejected)::

    {
      "credentials": {"AK": "SK"},
      "security_token": null,
      "region": "cn-north-4", "project_id": "...", "domain_id": "...",
      "after_restore": {"state": "FAILED", "delay": 0.5},
      "executions": [{"graph": "graph-1", "execution": "exec-1", "state": "FAILED"}]
    }

Command line (``main``)::

    EMULATOR_SECRET_ACCESS_KEY=SK python -m handler.emulator --port 9000 --seed seed.json \\
        --execution graph-1/exec-1=FAILED --access-key AK --fail-next 2 --fail-status 503

prints its URL as the only line on stdout, then serves until SIGINT or SIGTERM. The secret
key is never printed or logged; give it in ``EMULATOR_SECRET_ACCESS_KEY`` rather than with
``--secret-key`` (which still works), so it does not show in ``ps``. The faults can be queued
from the command line too - ``--fail-next N [--fail-status S] [--retry-after S]``,
``--reset-next N [--reset-applied]``, ``--garbage-next N``, ``--redirect-next N
[--redirect-location URL]`` - and are served in that order.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import http
import json
import logging
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request

from handler.client.obs_signing import (
    SECURITY_TOKEN_HEADER,
    Credentials,
    Signer,
    http_date,
    string_to_sign,
)
from handler.names import InvalidNameError, validate_name

__all__ = ["STATES", "Call", "Emulator", "main", "read_seed"]

# Kept apart from handler.client on purpose: the emulator is what the client is tested against,
# so it takes the wire facts from the reference, not from the code under test.
EXECUTIONS_PATH = "/v2/workflowexecutions/"
GRAPH_QUERY = "x-workflow-graph-name"
STATES = ("RUNNING", "SUCCESS", "FAILED")
JSON = "application/json"
MAX_SKEW_SECONDS = 15 * 60
MAX_REQUEST_BODY = 64 * 1024
IDLE_TIMEOUT_SECONDS = 30.0
SERVER_NAME = "obs-workflow-emulator"
DEFAULT_REGION = "cn-north-4"
DEFAULT_PROJECT_ID = "emulator-project"
DEFAULT_DOMAIN_ID = "emulator-domain"
SEED_KEYS = frozenset(
    {"credentials", "security_token", "region", "project_id", "domain_id"}
    | {"after_restore", "executions"}
)

logger = logging.getLogger(__name__)


class Call(NamedTuple):
    """One request the emulator answered; ``status`` is 0 when the connection was reset."""

    method: str
    graph: str | None
    execution: str | None
    status: int


@dataclass
class _Execution:
    state: str
    started_at: str
    updated_at: str
    restore_count: int = 0
    restored_at: str | None = None


@dataclass(frozen=True)
class _Answer:
    """What to put on the wire for one request; the handler turns it into bytes."""

    status: int
    body: bytes | None = b""  # None: the standard JSON error for ``status``, filled per request
    content_type: str = JSON  # "" sends no Content-Type header
    headers: tuple[tuple[str, str], ...] = ()
    declared_length: int | None = None  # a Content-Length other than len(body): truncation
    close: bool = False
    reset: bytes | None = None  # send these bytes, then reset the connection instead


@dataclass(frozen=True)
class _Fault:
    answer: _Answer
    applied: bool = False  # carry the request out first, then give this answer instead


class Emulator:
    """In-memory OBS workflow executions behind a signed HTTP API on loopback.

    ``credentials`` maps access key ids to secret keys. ``security_token``, when set, must be
    carried by every request. ``clock`` (seconds since the epoch) is what ``Date`` headers are
    checked against and what timestamps are made from; tests can pin it.
    """

    def __init__(
        self,
        credentials: Mapping[str, str],
        security_token: str | None = None,
        *,
        region: str = DEFAULT_REGION,
        project_id: str = DEFAULT_PROJECT_ID,
        domain_id: str = DEFAULT_DOMAIN_ID,
        after_restore: tuple[str, float] | None = None,
        clock: Callable[[], float] = time.time,
        max_skew: float = MAX_SKEW_SECONDS,
    ) -> None:
        if not credentials:
            raise ValueError("at least one access key / secret key pair is required")
        self._signers = {ak: Signer(Credentials(ak, sk)) for ak, sk in credentials.items()}
        self._security_token = security_token or None
        self.region, self.project_id, self.domain_id = region, project_id, domain_id
        self._clock = clock
        self._max_skew = max_skew
        self._lock = threading.Lock()
        self._executions: dict[tuple[str, str], _Execution] = {}
        self._faults: deque[_Fault] = deque()
        self._latency = 0.0
        self._calls: list[Call] = []
        self._open: set[socket.socket] = set()
        self._connections_opened = 0
        self._timers: set[threading.Timer] = set()
        self._after_restore: tuple[str, float] | None = None
        self.after_restore = after_restore
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"Emulator({where}, access_keys={sorted(self._signers)!r})"

    # --- construction from a seed -------------------------------------------------------

    @classmethod
    def from_seed(cls, seed: Mapping[str, Any], **options: Any) -> Emulator:
        """Build from a seed document (the JSON format in the module docstring).

        ``options`` are constructor arguments that win over the seed's; ``credentials`` given
        here are added to the seed's, so a command line can add a key to a shared seed file.
        """
        seed = _mapping(seed, "seed")
        unknown = set(seed) - SEED_KEYS
        if unknown:
            raise ValueError(f"unknown seed keys: {sorted(unknown)}")
        names = ("security_token", "region", "project_id", "domain_id")
        settings: dict[str, Any] = {name: seed[name] for name in names if name in seed}
        if seed.get("after_restore") is not None:
            settings["after_restore"] = _after_restore_from_seed(seed["after_restore"])
        credentials = {**_mapping(seed.get("credentials") or {}, "credentials")}
        credentials.update(options.pop("credentials", None) or {})
        settings.update(options)
        emulator = cls(credentials, **settings)
        emulator.load_executions(seed.get("executions") or [])
        return emulator

    @classmethod
    def from_seed_file(cls, path: str | Path, **options: Any) -> Emulator:
        """Build from a seed file; see :meth:`from_seed`."""
        return cls.from_seed(read_seed(path), **options)

    def load_executions(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Seed each ``{"graph", "execution", "state"}`` entry (state defaults to FAILED)."""
        for entry in entries:
            entry = _mapping(entry, "execution entry")
            self.seed(entry.get("graph"), entry.get("execution"), entry.get("state", "FAILED"))

    # --- state ----------------------------------------------------------------------------

    def seed(self, graph: str, execution: str, state: str = "FAILED") -> None:
        """Create an execution, or set the state of an existing one (its history is kept)."""
        validate_name(graph, "graph")
        validate_name(execution, "execution")
        _check_state(state)
        now = self._now()
        with self._lock:
            current = self._executions.get((graph, execution))
            if current is None:
                self._executions[(graph, execution)] = _Execution(state, now, now)
            else:
                current.state, current.updated_at = state, now

    def state(self, graph: str, execution: str) -> str | None:
        """The execution's state, or None when it does not exist."""
        with self._lock:
            current = self._executions.get((graph, execution))
            return current.state if current else None

    def restores(self, graph: str, execution: str) -> int:
        """How many restores of this execution were accepted (answered 200 or applied)."""
        with self._lock:
            current = self._executions.get((graph, execution))
            return current.restore_count if current else 0

    def execution_info(self, graph: str, execution: str) -> dict[str, Any] | None:
        """What a GET of this execution answers inside ``execution_info``, or None."""
        with self._lock:
            current = self._executions.get((graph, execution))
            return self._info(graph, execution, current) if current else None

    @property
    def calls(self) -> list[Call]:
        """A snapshot of every request answered so far, oldest first."""
        with self._lock:
            return list(self._calls)

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted since start: tells keep-alive apart from reconnecting."""
        with self._lock:
            return self._connections_opened

    @property
    def after_restore(self) -> tuple[str, float] | None:
        return self._after_restore

    @after_restore.setter
    def after_restore(self, value: tuple[str, float] | None) -> None:
        """Set or clear the background transition that follows each accepted restore."""
        if value is not None:
            target, delay = value
            _check_state(target)
            if target == "RUNNING" or not delay >= 0:
                raise ValueError("after_restore must be (FAILED or SUCCESS, delay >= 0 seconds)")
            value = (target, float(delay))
        self._after_restore = value

    # --- faults ---------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        retry_after: float | str | None = None,
        body: bytes | str | Mapping[str, Any] | None = None,
        content_type: str = JSON,
    ) -> None:
        """Answer the next ``n`` requests with ``status`` (a JSON error unless ``body``)."""
        headers = () if retry_after is None else (("Retry-After", _retry_after(retry_after)),)
        answer = _Answer(status, _body_bytes(body), content_type, headers)
        self._queue(n, _Fault(answer))

    def garbage_next(
        self,
        n: int = 1,
        body: bytes | str = b"<html><body><h1>502 Bad Gateway</h1></body></html>",
        status: int = 502,
        content_type: str = "text/html",
        declared_length: int | None = None,
    ) -> None:
        """Answer with a non-JSON body; ``declared_length`` > len(body) truncates the answer."""
        answer = _Answer(status, _body_bytes(body), content_type, (), declared_length)
        self._queue(n, _Fault(answer))

    def redirect_next(
        self, n: int = 1, location: str = "http://127.0.0.1:9/", status: int = 302
    ) -> None:
        """Answer with a redirect: a client must not follow it with its signed request."""
        if not 300 <= status < 400:
            raise ValueError("a redirect status is 3xx")
        answer = _Answer(status, b"", "", (("Location", location),))
        self._queue(n, _Fault(answer))

    def reset_next(self, n: int = 1, partial: bytes = b"", *, applied: bool = False) -> None:
        """Reset the connection of the next ``n`` requests after sending ``partial`` bytes.

        With ``applied`` the request is carried out first, so only its answer is lost.
        """
        self._queue(n, _Fault(_Answer(0, reset=bytes(partial)), applied=applied))

    def latency(self, seconds: float) -> None:
        """Delay every answer by ``seconds`` (after the request took effect); 0 ends it."""
        if not seconds >= 0:
            raise ValueError("latency must be >= 0 seconds")
        with self._lock:
            self._latency = float(seconds)

    def clear_faults(self) -> None:
        """Drop queued faults and latency."""
        with self._lock:
            self._faults.clear()
            self._latency = 0.0

    def _queue(self, n: int, fault: _Fault) -> None:
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self._faults.extend([fault] * n)

    # --- serving --------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Emulator:
        """Listen on ``host:port`` (0: a free port) in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError(f"already running at {self.url}")
        try:
            server = make_server(host, port, _not_used, threaded=True, request_handler=_Handler)
        except SystemExit:  # werkzeug prints the reason and exits when it cannot bind
            raise OSError(f"cannot listen on {host}:{port}") from None
        server.emulator = self
        with self._lock:
            self._connections_opened = 0
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() waits at most this long for the loop
            name=f"{SERVER_NAME}:{server.port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    @property
    def url(self) -> str:
        """``http://host:port`` of the running emulator."""
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        host = self._server.server_address[0]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self._server.port}"

    def stop(self) -> None:
        """Stop listening, drop open keep-alive connections and pending transitions."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections, timers = list(self._open), list(self._timers)
            self._timers.clear()
        for connection in connections:
            _shutdown_quietly(connection)
        for timer in timers:
            timer.cancel()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Emulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- one request ----------------------------------------------------------------------

    def _handle(self, request: Request) -> _Answer:
        """Decide the answer to one request, record it, and apply latency."""
        request_id = uuid.uuid4().hex.upper()
        graph, execution = _target(request)
        answer = _consume_body(request, request_id)
        if answer is None:
            fault = self._next_fault()
            if fault is None or fault.applied:
                answer = self._dispatch(request, request_id)
            if fault is not None:
                answer = fault.answer
        answer = _finish(answer, request_id)
        status = 0 if answer.reset is not None else answer.status
        call = Call(request.method, graph, execution, status)
        with self._lock:
            self._calls.append(call)
            delay = self._latency
        logger.debug("%s %s/%s -> %s", *call)
        if delay:
            time.sleep(delay)
        return answer

    def _next_fault(self) -> _Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _dispatch(self, request: Request, request_id: str) -> _Answer:
        if not request.path.startswith(EXECUTIONS_PATH):
            return _error(404, "NoSuchResource", "no such API resource", request_id)
        if request.method not in ("GET", "PUT"):
            answer = _error(405, "MethodNotAllowed", "only GET and PUT are allowed", request_id)
            return replace(answer, headers=(("Allow", "GET, PUT"),))
        graph = request.args.get(GRAPH_QUERY)
        denied = self._authenticate(request, graph, request_id)
        if denied is not None:
            return denied
        execution = request.path[len(EXECUTIONS_PATH) :]
        if graph is None:
            message = f"query parameter {GRAPH_QUERY} is required"
            return _error(400, "WF.InvalidParameter", message, request_id)
        try:
            validate_name(graph, "graphName")
            validate_name(execution, "executionName")
        except InvalidNameError as exc:
            return _error(400, "WF.InvalidParameter", str(exc), request_id)
        if request.method == "PUT":
            return self._restore(graph, execution, request_id)
        return self._describe(graph, execution, request_id)

    def _authenticate(self, request: Request, graph: str | None, request_id: str) -> _Answer | None:
        """None when the V2 signature, Date and security token are all good, else a 403."""
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        access_key, colon, signature = credential.rpartition(":")
        if scheme != "OBS" or not colon or not access_key:
            return _error(
                403, "SignatureDoesNotMatch", "missing or malformed Authorization", request_id
            )
        signer = self._signers.get(access_key)
        if signer is None:
            return _error(403, "InvalidAccessKeyId", "the access key id does not exist", request_id)
        date = request.headers.get("Date", "")
        sent = _timestamp(date)
        if sent is None or abs(self._clock() - sent) > self._max_skew:
            message = "the difference between the request time and the server's time is too large"
            return _error(403, "RequestTimeTooSkewed", message, request_id)
        if not hmac.compare_digest(signature, signer.signature(_string_to_sign(request, graph))):
            message = (
                "the request signature we calculated does not match the signature you provided"
            )
            return _error(403, "SignatureDoesNotMatch", message, request_id)
        token = request.headers.get(SECURITY_TOKEN_HEADER)
        if self._security_token and not hmac.compare_digest(token or "", self._security_token):
            message = "the security token is missing or not valid"
            return _error(403, "InvalidSecurityToken", message, request_id)
        return None

    def _restore(self, graph: str, execution: str, request_id: str) -> _Answer:
        now = self._now()
        with self._lock:
            current = self._executions.get((graph, execution))
            if current is None:
                return _not_found(graph, execution, request_id)
            if current.state != "FAILED":
                message = (
                    f"execution state is {current.state}; only FAILED executions can be restored"
                )
                return _error(409, "WF.ExecutionNotFailed", message, request_id)
            current.state, current.updated_at, current.restored_at = "RUNNING", now, now
            current.restore_count += 1
            generation, transition = current.restore_count, self._after_restore
        if transition is not None:
            self._schedule(graph, execution, generation, *transition)
        document = {
            "execution_urn": self._execution_urn(graph, execution),
            "restored_at": now,
            "execution_name": execution,
        }
        return _json_answer(200, document)

    def _describe(self, graph: str, execution: str, request_id: str) -> _Answer:
        info = self.execution_info(graph, execution)
        if info is None:
            return _not_found(graph, execution, request_id)
        return _json_answer(200, {"execution_info": info})

    def _info(self, graph: str, execution: str, current: _Execution) -> dict[str, Any]:
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

    def _execution_urn(self, graph: str, execution: str) -> str:
        return (
            f"urn:fgs:{self.region}:{self.project_id}:execution:"
            f"{graph}:{execution}:{self.domain_id}"
        )

    def _now(self) -> str:
        return _iso(self._clock())

    # --- background transitions -----------------------------------------------------------

    def _schedule(
        self, graph: str, execution: str, generation: int, target: str, delay: float
    ) -> None:
        timer = threading.Timer(
            delay, self._transition, args=(graph, execution, generation, target)
        )
        timer.daemon = True
        with self._lock:
            self._timers.add(timer)
        timer.start()

    def _transition(self, graph: str, execution: str, generation: int, target: str) -> None:
        """Finish a restored run, unless a later restore or a re-seed has overtaken it."""
        with self._lock:
            self._timers.discard(threading.current_thread())  # type: ignore[arg-type]
            current = self._executions.get((graph, execution))
            if current and current.state == "RUNNING" and current.restore_count == generation:
                current.state, current.updated_at = target, _iso(self._clock())

    # --- connection bookkeeping, called by the handler ------------------------------------

    def _opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._open.add(connection)
            self._connections_opened += 1

    def _closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._open.discard(connection)


class _Handler(WSGIRequestHandler):
    """werkzeug's request handler with working keep-alive; answers come from the Emulator.

    werkzeug parses the request line, headers and environ; ``run_wsgi`` (which werkzeug calls
    for every method) is replaced so the answer goes out in one write, with an exact
    ``Content-Length`` and without werkzeug's forced ``Connection: close``.
    """

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # one write per answer: no Nagle/delayed-ACK stalls
    timeout = IDLE_TIMEOUT_SECONDS  # an idle keep-alive connection is dropped after this

    def setup(self) -> None:
        super().setup()
        self.server.emulator._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emulator._closed(self.connection)

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").strip().lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request = Request(self.make_environ())
        try:
            answer = self.server.emulator._handle(request)
        except Exception:
            # A bug in the emulator must read as a 500, not as a dropped connection.
            logger.exception("emulator failed on %s %s", self.command, self.path[:200])
            answer = _finish(_Answer(500, None, close=True), uuid.uuid4().hex.upper())
        if answer.reset is not None:
            self._reset(answer.reset)
        else:
            self._send(answer)

    def _send(self, answer: _Answer) -> None:
        body = answer.body or b""
        length = len(body) if answer.declared_length is None else answer.declared_length
        if answer.close or length != len(body):
            self.close_connection = True  # a truncated body cannot be followed by another answer
        lines = [
            f"HTTP/1.1 {answer.status} {_phrase(answer.status)}",
            f"Date: {http_date()}",
            f"Server: {SERVER_NAME}",
            f"Content-Length: {length}",
        ]
        if answer.content_type:
            lines.append(f"Content-Type: {answer.content_type}")
        lines.extend(f"{name}: {value}" for name, value in answer.headers)
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head if self.command == "HEAD" else head + body)

    def _reset(self, partial: bytes) -> None:
        """Send ``partial``, then close with SO_LINGER 0: the peer gets RST, not a clean FIN."""
        self.close_connection = True
        if partial:
            self.wfile.write(partial)
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def log(self, type: str, message: str, *args: Any) -> None:
        # Keep werkzeug's access log off stderr; the emulator logs its own calls at DEBUG.
        logger.debug("%s: " + message, type, *args)


def _not_used(environ: Mapping[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """make_server wants a WSGI app; _Handler answers every request itself, so this never runs."""
    start_response("500 Internal Server Error", [("Content-Length", "0")])
    return [b""]


# --- answers ------------------------------------------------------------------------------


def _json_answer(status: int, document: Mapping[str, Any]) -> _Answer:
    return _Answer(status, json.dumps(document, separators=(",", ":")).encode())


def _error(status: int, code: str, message: str, request_id: str) -> _Answer:
    return _json_answer(status, {"code": code, "message": message, "request_id": request_id})


def _not_found(graph: str, execution: str, request_id: str) -> _Answer:
    message = f"execution {execution} of graph {graph} does not exist"
    return _error(404, "WF.ExecutionNotFound", message, request_id)


_FAULT_CODES = {
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


def _finish(answer: _Answer, request_id: str) -> _Answer:
    """Fill a fault's standard error body and add the request id every answer carries."""
    if answer.body is None:
        code = _FAULT_CODES.get(answer.status) or _phrase(answer.status).replace(" ", "")
        message = f"injected fault: {answer.status} {_phrase(answer.status)}"
        answer = replace(answer, body=_error(answer.status, code, message, request_id).body)
    return replace(answer, headers=(*answer.headers, ("X-Request-ID", request_id)))


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _body_bytes(body: bytes | str | Mapping[str, Any] | None) -> bytes | None:
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def _retry_after(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


# --- request helpers ----------------------------------------------------------------------


def _consume_body(request: Request, request_id: str) -> _Answer | None:
    """Read the request body so the next request on the connection starts at its first byte."""
    request.max_content_length = MAX_REQUEST_BODY
    try:
        request.get_data()
    except RequestEntityTooLarge:
        # The unread body is still on the socket, so this connection cannot carry another request.
        answer = _error(413, "EntityTooLarge", "request body too large", request_id)
        return replace(answer, close=True)
    return None


def _target(request: Request) -> tuple[str | None, str | None]:
    """Graph and execution as sent (unchecked, shortened), for the call record."""
    graph = request.args.get(GRAPH_QUERY)
    path = request.path
    execution = path[len(EXECUTIONS_PATH) :] if path.startswith(EXECUTIONS_PATH) else None
    return (
        graph[:200] if graph is not None else None,
        execution[:200] if execution is not None else None,
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


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_state(state: object) -> None:
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, got {state!r}")


def _shutdown_quietly(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by its handler
        connection.shutdown(socket.SHUT_RDWR)


# --- seeds ----------------------------------------------------------------------------------


def read_seed(path: str | Path) -> dict[str, Any]:
    """Load and shape-check a seed file (see the module docstring for the format)."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    return _mapping(document, "seed")


def _mapping(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a JSON object")
    return dict(value)


def _after_restore_from_seed(value: object) -> tuple[str, float]:
    settings = _mapping(value, "after_restore")
    return (settings.get("state", "FAILED"), float(settings.get("delay", 0.0)))


# --- command line -------------------------------------------------------------------------


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the emulator until SIGINT or SIGTERM; returns the process exit code.

    ``environ`` (default: the process environment) may carry the secret key as
    ``EMULATOR_SECRET_ACCESS_KEY``.
    """
    from handler.settings import emulator_secret_key

    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help or a usage error; argparse has printed why
        return int(exc.code or 0)
    if args.access_key and not args.secret_key:
        args.secret_key = emulator_secret_key(environ)
    try:
        emulator = _emulator_from_args(args).start(args.host, args.port)
    except (OSError, ValueError) as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    with _call_log(enabled=args.verbose):
        _serve_until_signalled(emulator)
    return 0


def _serve_until_signalled(emulator: Emulator) -> None:
    """Print the URL - the one line a wrapper waits for - and serve until SIGINT or SIGTERM."""
    stop = threading.Event()
    previous = _on_signals((signal.SIGINT, signal.SIGTERM), lambda *_: stop.set())
    try:
        print(emulator.url, flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:  # main() run off the main thread has no signal handlers
        pass
    finally:
        emulator.stop()
        _on_signals(previous, None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m handler.emulator",
        description="Local stand-in for the OBS workflow execution API (prints its URL).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9000, help="port; 0 picks a free one")
    parser.add_argument("--seed", metavar="FILE", help="JSON seed file")
    parser.add_argument(
        "--execution",
        action="append",
        default=[],
        metavar="GRAPH/EXECUTION[=STATE]",
        help="seed an execution (state defaults to FAILED); repeatable",
    )
    parser.add_argument("--access-key", help="access key id to accept")
    parser.add_argument(
        "--secret-key",
        help="its secret key (never printed); prefer the EMULATOR_SECRET_ACCESS_KEY "
        "environment variable, which `ps` does not show",
    )
    parser.add_argument("--security-token", help="require this x-obs-security-token")
    parser.add_argument("--region")
    parser.add_argument("--project-id")
    parser.add_argument("--domain-id")
    parser.add_argument(
        "--after-restore",
        metavar="STATE:SECONDS",
        help="after each restore, flip RUNNING to STATE (FAILED or SUCCESS) after SECONDS",
    )
    parser.add_argument("--latency", type=float, default=0.0, help="delay every answer (s)")
    parser.add_argument("--verbose", action="store_true", help="log each call to stderr")
    faults = parser.add_argument_group(
        "faults", "answers for the next requests, whatever they are, served in this order"
    )
    faults.add_argument("--fail-next", type=int, default=0, metavar="N", help="fail N requests")
    faults.add_argument(
        "--fail-status", type=int, default=503, metavar="S", help="their status (default: 503)"
    )
    faults.add_argument("--retry-after", metavar="S", help="their Retry-After header")
    faults.add_argument(
        "--reset-next", type=int, default=0, metavar="N", help="reset N connections"
    )
    faults.add_argument(
        "--reset-applied",
        action="store_true",
        help="carry those requests out before resetting (only the answer is lost)",
    )
    faults.add_argument(
        "--garbage-next", type=int, default=0, metavar="N", help="answer N with an HTML 502"
    )
    faults.add_argument(
        "--redirect-next", type=int, default=0, metavar="N", help="answer N with a 302"
    )
    faults.add_argument("--redirect-location", default="http://127.0.0.1:9/", metavar="URL")
    return parser


def _emulator_from_args(args: argparse.Namespace) -> Emulator:
    if bool(args.access_key) != bool(args.secret_key):
        raise ValueError(
            "--access-key needs its secret key: set EMULATOR_SECRET_ACCESS_KEY (or give "
            "--secret-key), and --secret-key needs --access-key"
        )
    seed = read_seed(args.seed) if args.seed else {}
    options: dict[str, Any] = {}
    if args.access_key:
        options["credentials"] = {args.access_key: args.secret_key}
    for name in ("security_token", "region", "project_id", "domain_id"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.after_restore:
        options["after_restore"] = _after_restore_from_flag(args.after_restore)
    if not seed.get("credentials") and "credentials" not in options:
        raise ValueError("no credentials: give --access-key/--secret-key or a seed with them")
    emulator = Emulator.from_seed(seed, **options)
    emulator.load_executions(_execution_from_flag(flag) for flag in args.execution)
    emulator.latency(args.latency)
    _queue_faults_from_args(emulator, args)
    return emulator


def _queue_faults_from_args(emulator: Emulator, args: argparse.Namespace) -> None:
    if not 100 <= args.fail_status <= 599:
        raise ValueError(f"--fail-status wants an HTTP status, got {args.fail_status}")
    emulator.fail_next(args.fail_next, args.fail_status, retry_after=args.retry_after)
    emulator.reset_next(args.reset_next, applied=args.reset_applied)
    emulator.garbage_next(args.garbage_next)
    emulator.redirect_next(args.redirect_next, location=args.redirect_location)


def _execution_from_flag(flag: str) -> dict[str, str]:
    target, _, state = flag.partition("=")
    graph, slash, execution = target.partition("/")
    if not slash:
        raise ValueError(f"--execution wants GRAPH/EXECUTION[=STATE], got {flag!r}")
    return {"graph": graph, "execution": execution, "state": state or "FAILED"}


def _after_restore_from_flag(flag: str) -> tuple[str, float]:
    state, _, delay = flag.partition(":")
    try:
        return (state.upper(), float(delay or 0))
    except ValueError:
        raise ValueError(f"--after-restore wants STATE:SECONDS, got {flag!r}") from None


def _on_signals(
    signals: Sequence[signal.Signals] | Mapping[signal.Signals, Any], handler: Any
) -> dict[signal.Signals, Any]:
    """Install ``handler`` (or restore a previous mapping); only the main thread may."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    targets = signals.items() if isinstance(signals, Mapping) else ((s, handler) for s in signals)
    return {sig: signal.signal(sig, action) for sig, action in targets}


@contextlib.contextmanager
def _call_log(*, enabled: bool) -> Iterator[None]:
    """Log each call to stderr while serving, and undo it so a wrapper's logging is untouched."""
    if not enabled:
        yield
        return
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    level = logger.level
    logger.addHandler(stream)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(stream)
        logger.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
