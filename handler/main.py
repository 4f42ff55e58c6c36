"""Entry points: the function's HTTP URL, a CloudEvent target and the FunctionGraph handler.

All three are thin: read the delivery, hand it to :mod:`handler.intake`, run the items through
the shared :class:`~handler.pipeline.Restorer`, and translate its :class:`Delivery` into the
answer each platform understands.

* ``restore(request)`` - functions-framework HTTP target (the function URL)::

      functions-framework --source handler/main.py --target restore

* ``restore_cloudevent(cloud_event)`` - ``--signature-type cloudevent``; a delivery that must be
  retried raises, so the framework answers 500 and the platform delivers again.
* ``handler(event, context)`` - FunctionGraph event functions (``index.handler`` style).

Settings are read and validated here, once, at import: a misconfigured function fails at
start-up with the variable's name. The pipeline (and with it ``requests``) is imported on the
first call instead, and this module never imports Flask or functions-framework, so the
FunctionGraph path starts fast.
"""

from __future__ import annotations

import hmac
import json
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
from handler.settings import Settings, load_settings
from handler.signing import Credentials

JSON_HEADERS = {"Content-Type": "application/json"}
AUTH_CHALLENGE = 'Bearer realm="obs-workflow-restore"'
# Time kept back from FunctionGraph's remaining time to answer and log after the last try.
DEADLINE_MARGIN_SECONDS = 1.0
# How long a platform should wait before delivering a 503'd delivery again.
RETRY_AFTER_SECONDS = 5

SETTINGS: Settings = load_settings()
_runtime: Any = None
_runtime_lock = threading.Lock()


class RetryableDeliveryError(RuntimeError):
    """Raised to make the platform deliver again: some item ended ``retryable_error``."""


def restore(request: Any) -> tuple[str, int, dict[str, str]]:
    """HTTP target: authenticate, read the delivery, restore, answer with the result document."""
    if request.method == "GET":
        return _json(_health(), 200)
    refusal = _authenticate(request)
    if refusal is not None:
        return refusal
    if request.method != "POST":
        return _json(_error("MethodNotAllowed", "use POST"), 405, {"Allow": "GET, POST"})
    request_id = request.headers.get("X-Cff-Request-Id") or request.headers.get("X-Request-ID")
    invocation = _invocation(request_id, _claim_deadline(), _header_credentials(request))
    runtime = _get_runtime()
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
    """CloudEvent target: the framework has parsed the event; its data is the delivery."""
    runtime = _get_runtime()
    invocation = _invocation(None, _claim_deadline())
    try:
        items = intake.from_cloudevent(cloud_event.get_attributes(), cloud_event.data)
    except intake.IntakeError as exc:
        runtime.rejected(exc.code, exc.message, exc.status, invocation)
        return  # a redelivery of an unreadable event cannot succeed: acknowledge it
    delivery = runtime.run(items, invocation)
    if delivery.retry:
        raise RetryableDeliveryError(f"retry this delivery: {delivery.summary}")


def handler(event: Any, context: Any) -> dict[str, Any]:
    """FunctionGraph event function: same pipeline and result document as the HTTP target.

    Credentials come from the function's agency through ``context`` when it has them, else
    from the settings; the remaining execution time bounds every retry. For an API Gateway
    trigger the answer is an API Gateway response; for other triggers a delivery that must be
    retried raises :class:`RetryableDeliveryError`, which makes FunctionGraph retry it.
    """
    runtime = _get_runtime()
    invocation = _invocation(
        _context_call(context, "getRequestID"), _deadline(context), _agency_credentials(context)
    )
    try:
        items = intake.from_event(event)
    except intake.IntakeError as exc:
        delivery = runtime.rejected(exc.code, exc.message, exc.status, invocation)
    else:
        delivery = runtime.run(items, invocation)
    document = {"statusCode": delivery.status, **delivery.document()}
    if _is_api_gateway(event):
        headers = dict(JSON_HEADERS)
        if delivery.status == 503:
            headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return {
            "statusCode": delivery.status,
            "isBase64Encoded": False,
            "headers": headers,
            "body": json.dumps(delivery.document()),
        }
    if delivery.retry:
        raise RetryableDeliveryError(f"retry this delivery: {delivery.summary}")
    return document


def _get_runtime() -> Any:
    """Build the pipeline on first use, not at import: it pulls in ``requests``."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                from handler.pipeline import build_restorer

                _runtime = build_restorer(SETTINGS)
    return _runtime


def _authenticate(request: Any) -> tuple[str, int, dict[str, str]] | None:
    """None when the caller may go on; otherwise the 401/403 answer. Nothing is parsed first."""
    expected = SETTINGS.auth_token
    if not expected:
        if SETTINGS.allow_unauthenticated:
            return None
        return _json(
            _error(
                "Forbidden",
                "RESTORE_AUTH_TOKEN is not set: set it, or set RESTORE_ALLOW_UNAUTHENTICATED=true",
            ),
            403,
        )
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer":
        presented = request.args.get("token", "")
    if presented and hmac.compare_digest(presented.strip().encode(), expected.encode()):
        return None
    return _json(
        _error("Unauthorized", "missing or wrong bearer token"),
        401,
        {"WWW-Authenticate": AUTH_CHALLENGE},
    )


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
    if not isinstance(remaining_ms, (int, float)):
        return None
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


def _is_api_gateway(event: Any) -> bool:
    return isinstance(event, dict) and "httpMethod" in event and "body" in event


def _health() -> dict[str, Any]:
    return {
        "status": "ok",
        "service": "obs-workflow-restore",
        "version": __version__,
        "dryRun": SETTINGS.dry_run,
    }


def _error(code: str, message: str) -> dict[str, Any]:
    return {"results": [], "summary": {}, "error": {"code": code, "message": message}}


def _json(
    document: dict[str, Any], status: int, headers: dict[str, str] | None = None
) -> tuple[str, int, dict[str, str]]:
    return json.dumps(document), status, {**JSON_HEADERS, **(headers or {})}
