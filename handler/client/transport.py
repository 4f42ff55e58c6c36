"""The transport both API clients share: one keep-alive session, bounded retries, typed results.

An API client (:mod:`handler.client.obs`, :mod:`handler.client.dwr`) knows its paths and
signs its requests; everything on the wire is here, so both APIs behave alike and are fixed
in one place:

* one keep-alive ``requests`` session per client, proxies read once, the adapter called
  directly (``Session.send`` would add cookie, hook and redirect work a signed API call never
  uses) and told once which connection pool and CA check serve the endpoint
  (:class:`EndpointAdapter`), and redirects never followed, so signed requests never reach
  another host;
* retries of connection errors, timeouts, 429 and 5xx with full-jitter backoff, honouring
  ``Retry-After`` and an optional caller deadline, every attempt signed afresh - except that
  an operation that is not idempotent (a restore) is never sent again once it may have
  reached the service: the caller must ask the service what happened first;
* always a :class:`~handler.client.results.WorkflowResult`: unparsable, HTML or truncated
  bodies become an ``errorMessage``, transport failures a result with ``status == 0``, and no
  message ever carries a secret.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from xml.etree import ElementTree

import requests
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from handler import __version__
from handler.client.results import WorkflowResult, text_or_none
from handler.endpoint import normalise_endpoint

JSON = "application/json"
MAX_BODY_BYTES = 1 << 20  # an answer larger than this is not a workflow API answer
DEADLINE_EXCEEDED = "DeadlineExceeded"  # errorCode of a call the deadline stopped before sending
USER_AGENT = f"obs-workflow-restore/{__version__}"


@dataclass(frozen=True)
class RetrySchedule:
    """How hard the client tries before it hands a transient failure back to its caller.

    Backoff is "full jitter": attempt *n* sleeps a uniform random time in
    ``[0, min(cap, base * 2**n)]``; a ``Retry-After`` answer raises that to the server's value.
    A server asking for more than ``max_retry_after`` seconds ends the retries instead - a
    function should hand the event back to its platform rather than sleep that long.
    """

    max_attempts: int = 4
    backoff_base: float = 0.2
    backoff_cap: float = 5.0
    max_retry_after: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")


class Transport:
    """Sends one API client's requests to its endpoint: see the module docstring.

    ``timeout`` is ``(connect, read)`` seconds; ``verify`` is ``True``, ``False`` or a CA
    bundle path; ``sleep`` is replaceable so retry tests need not wait.
    """

    def __init__(
        self,
        server: str,
        *,
        timeout: tuple[float, float],
        retry: RetrySchedule | None,
        verify: bool | str,
        sleep: Callable[[float], None],
    ) -> None:
        self.server = normalise_endpoint(server)
        self.timeout = timeout
        self.retry = retry or RetrySchedule()
        self._sleep = sleep
        self._session = requests.Session()
        # Proxy settings are read from the environment once, here, instead of on every call:
        # requests' per-call environment merge is a measurable share of a restore's cost.
        self._session.trust_env = False
        proxies = requests.utils.get_environ_proxies(self.server)
        self._adapter = EndpointAdapter(self.server, direct=not proxies)
        self._session.mount(self.server, self._adapter)
        self._send_options = {"verify": verify, "proxies": proxies, "stream": True}

    def close(self) -> None:
        """Close the keep-alive connections."""
        self._session.close()

    def call(
        self,
        method: str,
        url: str,
        signed_headers: Callable[[], dict[str, str]],
        deadline: float | None,
        *,
        resend_unanswered: bool,
        body: bytes | None = None,
    ) -> WorkflowResult:
        """Send ``method url`` with bounded retries; ``signed_headers()`` signs each attempt.

        ``resend_unanswered=False`` is for operations that are not idempotent (restore): an
        attempt that got no answer after the request left may have been applied, and sending
        it again blindly could restore twice, so such a result is returned at once.
        ``body`` is sent as it is (the signer has hashed exactly these bytes).
        """
        attempt = 0
        while True:
            attempt += 1
            request = _prepared(method, url, signed_headers(), body)
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


class EndpointAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter for one endpoint, minus per-call work whose answer never changes.

    For every call ``HTTPAdapter.send`` parses the URL several times to find the connection
    pool, looks for a proxy, and checks that the CA bundle path exists (three ``stat`` calls)
    - about a sixth of our client's CPU per restore when profiled over TLS. For a client
    that talks to one endpoint without a proxy the pool, the checked CA settings and the path
    prefix are the same on every call, so they are found once and remembered; a client with
    a proxy takes requests' own path unchanged. Everything else - the pool's keep-alive,
    timeouts, TLS verification, the response - is requests' and urllib3's.

    The three methods overridden are requests' documented hooks for subclasses ("only exposed
    for use when subclassing the HTTPAdapter"). Measured by ``make bench``: without them a
    restore's client time over TLS is about a tenth longer (OBS 0.30x -> 0.33-0.35x of the
    SDK's, DWR 0.57x -> 0.61x).
    """

    def __init__(self, server: str, *, direct: bool) -> None:
        super().__init__()
        self._server = server  # scheme://host[:port], as normalise_endpoint makes it
        self._direct = direct
        self._pools: dict[tuple[Any, Any], Any] = {}
        self._checked: set[tuple[int, Any, Any]] = set()

    def get_connection_with_tls_context(
        self,
        request: requests.PreparedRequest,
        verify: bool | str | None,
        proxies: Any = None,
        cert: Any = None,
    ) -> Any:
        if not self._direct or not _under(request.url, self._server):
            return super().get_connection_with_tls_context(request, verify, proxies, cert)
        key = (verify, cert)
        pool = self._pools.get(key)
        if pool is None or pool.pool is None:  # never made, or closed by close()
            pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
            self._pools[key] = pool
        return pool

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # The check sets the pool's CA and certificate attributes; once per pool is enough.
        key = (id(conn), verify, cert)
        if key not in self._checked:
            super().cert_verify(conn, url, verify, cert)
            self._checked.add(key)

    def request_url(self, request: requests.PreparedRequest, proxies: Any) -> str:
        if self._direct and _under(request.url, self._server):
            return request.url[len(self._server) :] or "/"
        return super().request_url(request, proxies)

    def close(self) -> None:
        super().close()
        self._pools.clear()
        self._checked.clear()


def _under(url: str | None, server: str) -> bool:
    """Whether ``url`` is on ``server`` (and not, say, ``server``-lookalike.example)."""
    return (
        url is not None
        and url.startswith(server)
        and url[len(server) : len(server) + 1] in ("/", "?", "")
    )


def _send(
    adapter: requests.adapters.BaseAdapter,
    request: requests.PreparedRequest,
    timeout: tuple[float, float],
    deadline: float | None,
    send_options: dict[str, Any],
) -> WorkflowResult:
    """One attempt on the wire, any failure mapped to a result; shared by every API's client.

    No attempt starts past ``deadline``, and none is allowed to outlive it.
    """
    if deadline is not None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return WorkflowResult(
                status=0,
                reason=DEADLINE_EXCEEDED,
                errorCode=DEADLINE_EXCEEDED,
                errorMessage="the caller's deadline passed before sending",
            )
        timeout = (min(timeout[0], remaining), min(timeout[1], remaining))
    try:
        response = adapter.send(request, timeout=timeout, **send_options)
    except requests.ConnectionError as exc:
        # A refused or failed connect never reached the service; anything else might have.
        sent = not isinstance(exc, requests.ConnectTimeout) and not _is_connect_failure(exc)
        return _transport_failure("ConnectionError", exc, maybe_applied=sent)
    except requests.Timeout as exc:
        return _transport_failure("ReadTimeout", exc, maybe_applied=True)
    except requests.RequestException as exc:
        return _transport_failure("RequestError", exc, maybe_applied=True)
    with response:
        return _read_result(response)


def _backoff_delay(schedule: RetrySchedule, attempt: int, result: WorkflowResult) -> float | None:
    """Seconds to wait before the next attempt, or None when waiting is pointless."""
    delay = random.uniform(0, min(schedule.backoff_cap, schedule.backoff_base * 2**attempt))  # noqa: S311 - jitter, not crypto
    retry_after = _retry_after(result.header)
    if retry_after is not None:
        if retry_after > schedule.max_retry_after:
            return None
        delay = max(delay, retry_after)
    return delay


def _prepared(
    method: str, url: str, headers: dict[str, str], body: bytes | None = None
) -> requests.PreparedRequest:
    """A prepared request built field by field instead of by ``PreparedRequest.prepare``.

    ``prepare`` re-parses and re-quotes the URL and merges cookies and hooks on every call
    (about 12% of a restore's client time when profiled). Our URL is built from the endpoint
    and names that passed :func:`validate_name` (or were quoted by their client), so it needs
    no quoting, and there are no cookies or auth hooks; a body is already encoded bytes.
    """
    request = requests.PreparedRequest()
    request.method = method
    request.url = url
    if body is not None:
        headers["Content-Length"] = str(len(body))
        request.body = body
    elif method == "PUT":
        headers["Content-Length"] = "0"
        request.body = b""
    request.headers = requests.structures.CaseInsensitiveDict(headers)
    return request


def _fits(deadline: float | None, delay: float) -> bool:
    return deadline is None or time.monotonic() + delay < deadline


def _is_connect_failure(exc: requests.ConnectionError) -> bool:
    text = repr(exc.args[0] if exc.args else exc)
    return "NewConnectionError" in text or "ConnectTimeoutError" in text


def _transport_failure(kind: str, exc: Exception, *, maybe_applied: bool) -> WorkflowResult:
    # The exception text carries only host, port and the OS error; requests never puts request
    # headers into it, so no credential can leak through this message.
    return WorkflowResult(
        status=0,
        reason=kind,
        errorCode=kind,
        errorMessage=f"{type(exc).__name__}: {_first_line(exc)}",
        maybe_applied=maybe_applied,
    )


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [""])[0][:300]


def _read_result(response: requests.Response) -> WorkflowResult:
    header = list(response.headers.items())
    result = WorkflowResult(
        status=response.status_code, reason=response.reason or "", header=header
    )
    headers = response.headers
    result.requestId = headers.get("X-Request-ID") or headers.get("x-obs-request-id")
    result.indicator = headers.get("x-reserved-indicator")
    try:
        raw = response.raw.read(MAX_BODY_BYTES + 1, decode_content=True)
    except (Urllib3HTTPError, OSError, requests.RequestException) as exc:
        result.errorCode = result.errorCode if result.ok else "IncompleteBody"
        result.errorMessage = f"response body was cut off: {_first_line(exc)}"
        return result
    if len(raw) > MAX_BODY_BYTES:
        result.errorMessage = f"response body larger than {MAX_BODY_BYTES} bytes was not read"
        return result
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if result.ok:
        _parse_success(result, raw, content_type)
    elif 300 <= result.status < 400:
        location = headers.get("Location", "")
        result.errorCode = "Redirect"
        result.errorMessage = f"redirect to {location[:200]!r} not followed"
    else:
        _parse_error(result, raw, content_type)
    return result


def _parse_success(result: WorkflowResult, raw: bytes, content_type: str) -> None:
    document = _json_object(raw)
    if document is None:
        result.errorMessage = f"answer was not a JSON object ({_describe(raw, content_type)})"
    else:
        result.body = document


def _parse_error(result: WorkflowResult, raw: bytes, content_type: str) -> None:
    document = _json_object(raw) if content_type in ("", JSON) or raw[:1] == b"{" else None
    if document is not None:
        code = document.get("code") or document.get("error_code")
        message = document.get("message") or document.get("error_msg")
        # Cloud Eye's v1 API nests the real code and text one level down, in either of two
        # documented shapes: {"code": 400, "message": "…", "details": {"details", "code"}}
        # and {"http_code": "403", "message": {"details", "code"}}.
        nested = document.get("details") if isinstance(document.get("details"), dict) else message
        if isinstance(nested, dict):
            code = nested.get("code") or code
            message = nested.get("details") or (message if isinstance(message, str) else None)
        result.errorCode = text_or_none(code)
        result.errorMessage = text_or_none(message)
        result.requestId = result.requestId or text_or_none(document.get("request_id"))
    elif raw.lstrip()[:6] in (b"<?xml ", b"<Error"):
        _parse_xml_error(result, raw)
    if not result.errorCode:
        result.errorCode = f"HTTP{result.status}"
    if not result.errorMessage:
        result.errorMessage = f"{result.status} {result.reason} ({_describe(raw, content_type)})"


def _parse_xml_error(result: WorkflowResult, raw: bytes) -> None:
    try:
        # The body comes from the configured endpoint and is capped at MAX_BODY_BYTES; expat
        # (>= 2.4.1, bundled by every supported Python) refuses entity-expansion bombs.
        root = ElementTree.fromstring(raw)  # noqa: S314
    except ElementTree.ParseError:
        return
    result.errorCode = text_or_none(root.findtext("Code"))
    result.errorMessage = text_or_none(root.findtext("Message"))
    result.requestId = result.requestId or text_or_none(root.findtext("RequestId"))
    result.hostId = text_or_none(root.findtext("HostId"))
    result.resource = text_or_none(root.findtext("Resource"))


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def _describe(raw: bytes, content_type: str) -> str:
    if not raw:
        return "empty body"
    return f"{len(raw)} bytes of {content_type or 'untyped content'}"


def _retry_after(header: list[tuple[str, str]]) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), if any."""
    value = next((v for k, v in header if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def bounded_int(value: object, name: str, low: int, high: int | None) -> int:
    """``value`` when it is an integer within bounds, else ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"invalid {name}: must be an integer")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"invalid {name}: must be {bounds}, got {value}")
    return value
