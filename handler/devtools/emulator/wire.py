"""The emulator's HTTP layer: one answer per request, written in one piece, with keep-alive.

Both emulated APIs decide *what* to answer (an :class:`Answer`); this module decides how it goes
on the wire. werkzeug's stock request handler forces ``Connection: close`` and spends 10 ms
draining the socket after every answer, so :class:`RequestHandler` keeps werkzeug's server,
request parsing and ``Request`` object but writes answers itself - with an exact
``Content-Length``, or a deliberately wrong one, or a TCP reset, as a fault asks.

Imports nothing from the emulated APIs: it serves whatever object the server carries as
``server.emulator`` (anything with ``_handle``, ``_error``, ``_opened`` and ``_closed``).
"""

from __future__ import annotations

import contextlib
import http
import json
import logging
import socket
import struct
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.serving import WSGIRequestHandler
from werkzeug.wrappers import Request

from handler.client.obs_signing import http_date

JSON = "application/json"
MAX_REQUEST_BODY = 64 * 1024
IDLE_TIMEOUT_SECONDS = 30.0
SERVER_NAME = "obs-workflow-emulator"

logger = logging.getLogger("handler.devtools.emulator")

# Builds an API's JSON error answer: (status, code, message, request id) -> Answer.
ErrorAnswer = Callable[[int, str, str, str], "Answer"]


@dataclass(frozen=True)
class Answer:
    """What to put on the wire for one request; the handler turns it into bytes."""

    status: int
    body: bytes | None = b""  # None: the API's standard JSON error for ``status``, per request
    content_type: str = JSON  # "" sends no Content-Type header
    headers: tuple[tuple[str, str], ...] = ()
    declared_length: int | None = None  # a Content-Length other than len(body): truncation
    close: bool = False
    reset: bytes | None = None  # send these bytes, then reset the connection instead


class RequestHandler(WSGIRequestHandler):
    """werkzeug's request handler with working keep-alive; answers come from the emulator.

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
        emulator = self.server.emulator
        try:
            answer = emulator._handle(request)
        except Exception:
            # A bug in the emulator must read as a 500, not as a dropped connection.
            logger.exception("emulator failed on %s %s", self.command, self.path[:200])
            answer = finish(
                Answer(500, None, close=True), uuid.uuid4().hex.upper(), emulator._error
            )
        if answer.reset is not None:
            self._reset(answer.reset)
        else:
            self._send(answer)

    def _send(self, answer: Answer) -> None:
        body = answer.body or b""
        length = len(body) if answer.declared_length is None else answer.declared_length
        if answer.close or length != len(body):
            self.close_connection = True  # a truncated body cannot be followed by another answer
        lines = [
            f"HTTP/1.1 {answer.status} {phrase(answer.status)}",
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


def not_used(environ: Mapping[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """make_server wants a WSGI app; RequestHandler answers every request itself: never runs."""
    start_response("500 Internal Server Error", [("Content-Length", "0")])
    return [b""]


def shutdown_quietly(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by its handler
        connection.shutdown(socket.SHUT_RDWR)


# --- answers ------------------------------------------------------------------------------


def json_answer(status: int, document: Mapping[str, Any]) -> Answer:
    return Answer(status, json.dumps(document, separators=(",", ":")).encode())


_FAULT_CODES = {
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


def finish(answer: Answer, request_id: str, error: ErrorAnswer) -> Answer:
    """Fill a fault's standard error body and add the request id every answer carries."""
    if answer.body is None:
        code = _FAULT_CODES.get(answer.status) or phrase(answer.status).replace(" ", "")
        message = f"injected fault: {answer.status} {phrase(answer.status)}"
        answer = replace(answer, body=error(answer.status, code, message, request_id).body)
    return replace(answer, headers=(*answer.headers, ("X-Request-ID", request_id)))


def phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def body_bytes(body: bytes | str | Mapping[str, Any] | None) -> bytes | None:
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def retry_after_value(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def consume_body(
    request: Request, request_id: str, error: ErrorAnswer, limit: int = MAX_REQUEST_BODY
) -> Answer | None:
    """Read the request body so the next request on the connection starts at its first byte."""
    request.max_content_length = limit
    try:
        request.get_data()
    except RequestEntityTooLarge:
        # The unread body is still on the socket, so this connection cannot carry another request.
        return replace(
            error(413, "EntityTooLarge", "request body too large", request_id), close=True
        )
    return None
