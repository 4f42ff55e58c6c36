"""Entry points: the function's HTTP URL, a CloudEvent target and the FunctionGraph handler.

All are thin: authenticate what an outsider can reach, read the delivery with
:mod:`handler.intake`, run the items (or a sweep) through the shared
:class:`~handler.pipeline.Restorer`, and translate its answer into what each platform
understands.

* ``restore(request)`` - functions-framework HTTP target (the function URL)::

      functions-framework --source handler/main.py --target restore

  ``POST /sweep`` runs a sweep; ``GET``/``HEAD`` are liveness, ``GET /ready`` readiness.
* ``restore_cloudevent(cloud_event)`` - ``--signature-type cloudevent``; the caller is
  checked, and the request screened, before the framework parses the event
  (:mod:`handler.framework`); probes answer as on the URL; a delivery that must be retried
  is answered 503 so the platform delivers again, an unusable one with its typed 4xx.
* ``handler(event, context)`` - FunctionGraph event functions (``index.handler`` style):
  API Gateway events are authenticated like the URL, TIMER events run a sweep, platform
  triggers (SMN, EventGrid) need no token.

Settings are read and validated here, once, at import: a misconfigured function fails at
start-up with the variable's name. The pipeline (and with it ``requests``) is imported on the
first call instead, and this module never imports Flask or functions-framework, so the
FunctionGraph path starts fast.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import math
import os
import sys
import threading
import time
from typing import Any

if __name__ != "handler.main":  # loaded by path: functions-framework --source handler/main.py
    _ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)

from handler import __version__, intake
from handler.credentials import Credentials
from handler.intake.apigateway import is_apig_request
from handler.settings import Settings, load_settings
from handler.sweep import SweepRequest, read_user_event

JSON_HEADERS = {"Content-Type": "application/json"}
AUTH_CHALLENGE = 'Bearer realm="obs-workflow-restore"'
# Time kept back from FunctionGraph's remaining time to answer and log after the last try.
DEADLINE_MARGIN_SECONDS = 1.0
# How long a platform should wait before delivering a 503'd delivery again.
RETRY_AFTER_SECONDS = 5
# How long an event invocation waits for its sink events before it returns.
SINK_FLUSH_SECONDS = 2.0
# Methods answered without a token: health, readiness and CORS-style preflight.
PROBE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ALLOW = "GET, HEAD, OPTIONS, POST"

SETTINGS: Settings = load_settings()
_runtime: Any = None
_runtime_lock = threading.Lock()


def _install_framework_hooks() -> None:
    """When functions-framework loads this file, it does so inside its Flask app's context:
    hook the caller check and JSON error answers into that app (see :mod:`handler.framework`).
    Flask is never imported here, so the FunctionGraph event path stays free of it."""
    flask = sys.modules.get("flask")
    if flask is not None and flask.has_app_context():
        from handler.framework import install

        install(
            flask.current_app,
            authenticate_request,
            crash_answer,
            screen_cloudevent_request,
            _auth_mode(),
        )


def _auth_mode() -> str:
    """How a POST is checked, for the server's one start-up line."""
    if SETTINGS.auth_token:
        return "token"
    if SETTINGS.allow_unauthenticated:
        return "OFF (RESTORE_ALLOW_UNAUTHENTICATED=true)"
    return "token not set - every POST is refused with 403 (set RESTORE_AUTH_TOKEN)"


class RetryableDeliveryError(RuntimeError):
    """Raised to make the platform deliver again: some item ended ``retryable_error``.

    ``document`` is the delivery's result document, answered with 503 where we can answer.
    """

    def __init__(self, message: str, document: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.document = document or {}


class RefusedDeliveryError(RuntimeError):
    """Raised by the CloudEvent target to answer a 4xx: the framework answers a CloudEvent
    function's return with 200, so any other answer has to leave as an exception.

    ``document`` is the delivery's result document (with its ``error``), ``status`` the 4xx.
    """

    def __init__(self, document: dict[str, Any], status: int) -> None:
        super().__init__(f"delivery refused with {status}")
        self.document = document
        self.status = status


Answer = tuple[str, int, dict[str, str]]


def restore(request: Any) -> Answer:
    """HTTP target: authenticate, read the delivery, restore, answer with the result document."""
    if request.method in PROBE_METHODS:
        return _probe(request.method, request.path, request.args)
    refusal = _authenticate(
        request.headers.get("Authorization"), request.args.get("token"), _caller(request)
    )
    if refusal is not None:
        return refusal
    if request.method != "POST":
        return _refuse(405, "MethodNotAllowed", "use POST", _caller(request), {"Allow": ALLOW})
    request_id = request.headers.get("X-Cff-Request-Id") or request.headers.get("X-Request-ID")
    invocation = _invocation(request_id, _claim_deadline(), _header_credentials(request))
    runtime = _get_runtime()
    if request.path.rstrip("/").endswith("/sweep"):
        return _json(*_sweep(runtime, lambda: _sweep_body(request), invocation))
    try:
        body = _read_body(request)
        items = intake.from_http(body, dict(request.headers))
    except intake.IntakeError as exc:
        delivery = runtime.rejected(exc.code, exc.message, exc.status, invocation)
    else:
        delivery = runtime.run(items, invocation)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if delivery.status == 503 else {}
    return _json(delivery.document(), delivery.status, headers)


def restore_cloudevent(cloud_event: Any) -> None:
    """CloudEvent target: the framework has parsed the event; its data is the delivery.

    The caller was authenticated, and the request checked to be one CloudEvent the framework
    can read, before the framework parsed anything (:func:`screen_cloudevent_request`). A
    delivery that must be retried raises, answered 503; one that cannot be used (unreadable
    data, every item rejected) raises, answered with its 4xx - a redelivery of the same
    event cannot succeed, and a 4xx tells the platform not to try (a dead-letter queue keeps
    it), where a 200 would have dropped it without a trace on the sender's side.
    """
    runtime = _get_runtime()
    invocation = _invocation(None, _claim_deadline())
    try:
        items = intake.from_cloudevent(cloud_event.get_attributes(), cloud_event.data)
    except intake.IntakeError as exc:
        delivery = runtime.rejected(exc.code, exc.message, exc.status, invocation)
        raise RefusedDeliveryError(delivery.document(), exc.status) from None
    delivery = runtime.run(items, invocation)
    if delivery.retry:
        raise RetryableDeliveryError(
            f"retry this delivery: {delivery.summary}", delivery.document()
        )
    if delivery.status >= 400:
        raise RefusedDeliveryError(delivery.document(), delivery.status)


def screen_cloudevent_request(request: Any) -> Answer | None:
    """The CloudEvent target's door, after the caller check and before the framework parses.

    Probes are answered as on the HTTP target (the framework routes only POST there). A
    POST the framework's SDK could not read as one CloudEvent is refused with the intake's
    typed 4xx and a log line (:func:`handler.intake.check_cloudevent_request`); None lets the
    framework go ahead.
    """
    if request.method in PROBE_METHODS:
        return _probe(request.method, request.path, request.args)
    if request.method != "POST":
        return None  # the framework answers 405, as JSON
    limit = intake.MAX_BODY_BYTES
    try:
        if request.content_length is not None and request.content_length > limit:
            raise intake.IntakeError(413, "BodyTooLarge", f"body larger than {limit} bytes")
        # get_data() keeps the bytes: the framework parses these, not a second read.
        intake.check_cloudevent_request(request.get_data(), dict(request.headers))
    except intake.IntakeError as exc:
        delivery = _get_runtime().rejected(exc.code, exc.message, exc.status, _invocation(None))
        return _json(delivery.document(), exc.status)
    return None


def handler(event: Any, context: Any) -> dict[str, Any]:
    """FunctionGraph event function: same pipeline and result document as the HTTP target.

    Credentials come from the function's agency through ``context`` when it has them, else
    from the settings; the remaining execution time bounds every retry. An API Gateway event
    comes from outside, so it is authenticated like the HTTP URL and answered with an API
    Gateway response; other triggers (SMN, EventGrid, timer) can only be delivered by the
    platform and carry no token. For those, a delivery that must be retried raises
    :class:`RetryableDeliveryError`: FunctionGraph invokes them asynchronously and retries a
    failed call as often as the function's asynchronous settings allow (README: Deploy).
    """
    if is_apig_request(event):  # the intake's own test: whatever it unwraps is checked
        return _api_gateway(event, context)
    if _is_timer(event):
        return _timer(event, context)
    runtime = _get_runtime()
    delivery = _deliver_event(runtime, event, context)
    _flush_sink(runtime, context)
    if delivery.retry:
        raise RetryableDeliveryError(
            f"retry this delivery: {delivery.summary}", delivery.document()
        )
    return {"statusCode": delivery.status, **delivery.document()}


def _timer(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A TIMER event runs a sweep, and never raises: timer calls are asynchronous, so raising
    would have FunctionGraph repeat the sweep as often as its asynchronous settings allow,
    while the next timer already is the retry. Overrides the
    timer cannot mean (plain text in ``user_event``) are ignored with a WARNING line;
    overrides that are wrong are refused at ERROR, since nobody reads a timer's answer."""
    try:
        runtime = _get_runtime()
        invocation = _invocation(
            _context_call(context, "getRequestID"), _deadline(context), _agency_credentials(context)
        )

        def overrides() -> Any:
            value, ignored = read_user_event(event.get("user_event"))
            if ignored:
                runtime.reporter.sweep_overrides_ignored(ignored, invocation.id)
            return value

        document, status = _sweep(runtime, overrides, invocation, from_timer=True)
        _flush_sink(runtime, context)
        return {"statusCode": status, **document}
    except Exception as exc:  # whatever it was, the log has it and the timer returns
        with contextlib.suppress(Exception):
            _get_runtime().reporter.crashed(exc)
        return {"statusCode": 500, **_error("InternalError", "unexpected error; see the log")}


def _deliver_event(runtime: Any, event: Any, context: Any) -> Any:
    invocation = _invocation(
        _context_call(context, "getRequestID"), _deadline(context), _agency_credentials(context)
    )
    try:
        items = intake.from_event(event)
    except intake.IntakeError as exc:
        return runtime.rejected(exc.code, exc.message, exc.status, invocation)
    return runtime.run(items, invocation)


def _api_gateway(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """An API Gateway trigger: the HTTP contract, carried in the event."""
    headers = _lower_keys(event.get("headers"))
    query = _lower_keys(event.get("queryStringParameters"))
    method = str(event.get("httpMethod", "")).upper()
    caller = str((event.get("requestContext") or {}).get("sourceIp", "apig"))
    try:
        if method in PROBE_METHODS:
            answer = _probe(method, str(event.get("path", "/")), query)
        else:
            answer = _authenticate(headers.get("authorization"), query.get("token"), caller)
        if answer is None and method not in ("", "POST"):
            answer = _refuse(405, "MethodNotAllowed", "use POST", caller, {"Allow": ALLOW})
        if answer is None:
            runtime = _get_runtime()
            delivery = _deliver_event(runtime, event, context)
            _flush_sink(runtime, context)
            retry = {"Retry-After": str(RETRY_AFTER_SECONDS)} if delivery.status == 503 else {}
            answer = _json(delivery.document(), delivery.status, retry)
    except Exception as exc:  # the caller gets JSON, the log the traceback
        answer = crash_answer(exc)
    body, status, answer_headers = answer
    return {"statusCode": status, "isBase64Encoded": False, "headers": answer_headers, "body": body}


def crash_answer(exc: BaseException) -> Answer:
    """The JSON answer to an exception no stage handled, logged with its traceback."""
    if isinstance(exc, RetryableDeliveryError):
        return _json(exc.document, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)})
    if isinstance(exc, RefusedDeliveryError):
        return _json(exc.document, exc.status)
    _get_runtime().reporter.crashed(exc)
    return _json(_error("InternalError", "unexpected error; see the function's log"), 500)


def _sweep(
    runtime: Any, overrides: Any, invocation: Any, *, from_timer: bool = False
) -> tuple[dict[str, Any], int]:
    """Run one sweep; ``overrides()`` reads the caller's JSON overrides (may raise 4xx)."""
    try:
        request = SweepRequest.from_settings(SETTINGS).overridden(overrides())
    except intake.IntakeError as exc:
        if not from_timer:  # the caller reads the 400; the log line is a WARNING
            delivery = runtime.rejected(exc.code, exc.message, exc.status, invocation)
            return delivery.document(), exc.status
        from handler.pipeline import Delivery

        runtime.reporter.sweep_refused(exc.code, exc.message, invocation.id)
        refused = Delivery([], error={"code": exc.code, "message": exc.message})
        return refused.document(), exc.status
    delivery, summary = runtime.sweep(request, invocation)
    status = 503 if summary.stopped == "state store unavailable" else 200
    return {**delivery.document(), "sweep": summary.document()}, status


def _sweep_body(request: Any) -> Any:
    """The ``POST /sweep`` body as JSON overrides, under the limits of every other body."""
    from handler.intake.limits import parse_document, too_large

    body = _read_body(request)
    if len(body) > intake.MAX_BODY_BYTES:
        raise too_large("body", len(body))
    if not body.strip():
        return None
    return parse_document(body)


def _is_timer(event: Any) -> bool:
    return isinstance(event, dict) and str(event.get("trigger_type", "")).upper() == "TIMER"


def _get_runtime() -> Any:
    """Build the pipeline on first use, not at import: it pulls in ``requests``."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                from handler.pipeline import build_restorer

                _runtime = build_restorer(SETTINGS)
    return _runtime


def _authenticate(authorization: str | None, query_token: str | None, caller: str) -> Answer | None:
    """None when the caller may go on; otherwise the 401/403 answer. Nothing is parsed first.

    The token comes from ``Authorization: Bearer …`` or, for callers that cannot set headers
    (SMN HTTP subscriptions), the ``token`` query parameter; compared in constant time.
    """
    expected = SETTINGS.auth_token
    if not expected:
        if SETTINGS.allow_unauthenticated:
            return None
        message = "RESTORE_AUTH_TOKEN is not set: set it, or set RESTORE_ALLOW_UNAUTHENTICATED=true"
        return _refuse(403, "Forbidden", message, caller)
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        presented = query_token or ""
    if presented and hmac.compare_digest(presented.strip().encode(), expected.encode()):
        return None
    challenge = {"WWW-Authenticate": AUTH_CHALLENGE}
    return _refuse(401, "Unauthorized", "missing or wrong bearer token", caller, challenge)


def authenticate_request(request: Any) -> Answer | None:
    """:func:`_authenticate` for a Flask/werkzeug request (used by :mod:`handler.framework`)."""
    if request.method in PROBE_METHODS:
        return None
    return _authenticate(
        request.headers.get("Authorization"), request.args.get("token"), _caller(request)
    )


def _refuse(
    status: int, code: str, message: str, caller: str, headers: dict[str, str] | None = None
) -> Answer:
    """A refused call: answered, and logged with the caller's address (never its token)."""
    _get_runtime().reporter.refused(status, code, caller)
    return _json(_error(code, message), status, headers)


def _probe(method: str, path: str, query: Any) -> Answer:
    """GET/HEAD: liveness (``/``) or readiness (``/ready`` or ``?ready=1``); OPTIONS: the
    methods. No token needed, so load balancers and the platform can probe."""
    if method == "OPTIONS":
        return "", 204, {"Allow": ALLOW}
    if path.rstrip("/").endswith("/ready") or query.get("ready") in ("1", "true"):
        problem = _get_runtime().readiness_problem()
        if problem:
            return _json({**_health(), "status": "unready", "problem": problem}, 503)
        return _json({**_health(), "status": "ready"}, 200)
    return _json(_health(), 200)


def _read_body(request: Any) -> bytes:
    """The request body, refusing one larger than the intake limit before reading it all."""
    limit = intake.MAX_BODY_BYTES
    if request.content_length is not None and request.content_length > limit:
        raise intake.IntakeError(413, "BodyTooLarge", f"body larger than {limit} bytes")
    return request.stream.read(limit + 1)


def _invocation(
    request_id: str | None, deadline: float | None = None, credentials: Credentials | None = None
) -> Any:
    from handler.pipeline import Invocation

    if request_id:
        return Invocation(id=str(request_id)[:128], deadline=deadline, credentials=credentials)
    return Invocation(deadline=deadline, credentials=credentials)


def _claim_deadline() -> float:
    """Finish before the dedupe marker expires, so no second delivery can overtake this one."""
    return time.monotonic() + max(0.5, SETTINGS.claim_ttl - DEADLINE_MARGIN_SECONDS)


def _deadline(context: Any) -> float | None:
    remaining_ms = _context_call(context, "getRemainingTimeInMilliSeconds")
    if not isinstance(remaining_ms, (int, float)) or not math.isfinite(remaining_ms):
        return None  # a remaining time that is not a number of milliseconds says nothing
    return time.monotonic() + max(0.0, remaining_ms / 1000.0 - DEADLINE_MARGIN_SECONDS)


def _agency_credentials(context: Any) -> Credentials | None:
    access_key = _context_call(context, "getSecurityAccessKey")
    secret_key = _context_call(context, "getSecuritySecretKey")
    if not access_key or not secret_key:
        return None
    return Credentials(access_key, secret_key, _context_call(context, "getSecurityToken") or None)


def _header_credentials(request: Any) -> Credentials | None:
    """FunctionGraph HTTP functions get their agency's temporary keys as request headers
    ("Include Keys"); used only when RESTORE_CREDENTIALS_FROM_HEADERS is on, after auth."""
    if not SETTINGS.credentials_from_headers:
        return None
    headers = request.headers
    access_key = headers.get("X-CFF-Security-Access-Key")
    secret_key = headers.get("X-CFF-Security-Secret-Key")
    if not access_key or not secret_key:
        return None
    return Credentials(access_key, secret_key, headers.get("X-CFF-Security-Token") or None)


def _context_call(context: Any, method: str) -> Any:
    """Call an optional FunctionGraph context method; a missing or failing one gives None."""
    function = getattr(context, method, None)
    if not callable(function):
        return None
    try:
        return function()
    except Exception:  # some runtimes raise when the function has no agency
        return None


def _lower_keys(mapping: Any) -> dict[str, Any]:
    """Header or query mapping of an API Gateway event, names lower-cased, lists unwrapped."""
    if not isinstance(mapping, dict):
        return {}
    lowered = {}
    for key, value in mapping.items():
        if isinstance(value, list):
            value = value[0] if value else ""
        lowered[str(key).lower()] = value if isinstance(value, str) else str(value)
    return lowered


def _caller(request: Any) -> str:
    return str(getattr(request, "remote_addr", "") or "unknown")


def _flush_sink(runtime: Any, context: Any) -> None:
    """Give queued sink events a bounded chance before the platform freezes the instance."""
    remaining_ms = _context_call(context, "getRemainingTimeInMilliSeconds")
    budget = SINK_FLUSH_SECONDS
    if isinstance(remaining_ms, (int, float)):
        budget = min(budget, max(0.0, remaining_ms / 1000.0 - DEADLINE_MARGIN_SECONDS))
    runtime.flush_events(budget)


def _health() -> dict[str, Any]:
    return {
        "status": "ok",
        "service": "obs-workflow-restore",
        "version": __version__,
        "dryRun": SETTINGS.dry_run,
    }


def _error(code: str, message: str) -> dict[str, Any]:
    return {"results": [], "summary": {}, "error": {"code": code, "message": message}}


def _json(document: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Answer:
    return json.dumps(document), status, {**JSON_HEADERS, **(headers or {})}


_install_framework_hooks()
