"""The deployed function: its three targets over one runtime, built from one set of settings.

:class:`Function` holds the settings and builds the runtime (and with it ``requests``) on the
first call, not at import, so a cold start pays only for what it uses. Its targets are thin:
authenticate what an outsider can reach (:mod:`.auth`), read the delivery with
:mod:`handler.intake`, run the items (or a sweep) through the runtime, and translate its
:class:`~handler.outcomes.Answer` into what each platform understands (:mod:`.documents`).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from handler import __version__, intake
from handler.credentials import Credentials
from handler.entry import functiongraph
from handler.entry.auth import ALLOW, METHOD_NOT_ALLOWED, PROBE_METHODS, Refusal, refusal
from handler.entry.documents import (
    RETRY_AFTER_SECONDS,
    HttpAnswer,
    delivery_answer,
    error_answer,
    json_answer,
)
from handler.entry.errors import RefusedDeliveryError, RetryableDeliveryError
from handler.intake.apigateway import is_apig_request
from handler.invocation import Invocation
from handler.outcomes import Answer, error_document
from handler.settings import Settings
from handler.store import StoreUnavailable
from handler.sweep import SweepRequest, read_user_event

if TYPE_CHECKING:
    from handler.runtime import Runtime

# How long an event invocation waits for its sink events before it returns.
SINK_FLUSH_SECONDS = 2.0
# Give-up messages after an HTTP delivery's outcomes: bounded, so an SMN outage costs an
# answer at most this (what is not sent stays in the outbox for the next invocation).
NOTIFY_FLUSH_SECONDS = 2.0
# What GET /status reads from its query: the token, for callers that cannot set a header.
STATUS_QUERY = frozenset({"token"})


class Function:
    """The function's targets (:meth:`restore`, :meth:`restore_cloudevent`, :meth:`handler`)
    for ``settings``; ``build`` makes the runtime on first use (:func:`handler.runtime.
    build_runtime` by default)."""

    def __init__(
        self, settings: Settings, build: Callable[[Settings], Runtime] | None = None
    ) -> None:
        self.settings = settings
        self._build = build
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()

    @property
    def runtime(self) -> Runtime:
        """The runtime, built on first use: it pulls in ``requests``."""
        if self._runtime is None:
            with self._lock:
                if self._runtime is None:
                    build = self._build
                    if build is None:
                        from handler.runtime import build_runtime

                        build = build_runtime
                    self._runtime = build(self.settings)
        return self._runtime

    def close(self) -> None:
        """Close the runtime, if one was built."""
        if self._runtime is not None:
            self._runtime.close()

    def install_framework_hooks(self) -> None:
        """When functions-framework loads the function, it does so inside its Flask app's
        context: hook the caller check and JSON error answers into that app (see
        :mod:`handler.entry.framework`). Flask is never imported here, so the FunctionGraph
        event path stays free of it."""
        flask = sys.modules.get("flask")
        if flask is not None and flask.has_app_context():
            from handler.entry.framework import install

            install(
                flask.current_app,
                self.authenticate_request,
                self.crash_answer,
                self.screen_cloudevent_request,
                self._auth_mode(),
            )

    def _auth_mode(self) -> str:
        """How a POST is checked, for the server's one start-up line."""
        if self.settings.auth_token:
            return "token"
        if self.settings.allow_unauthenticated:
            return "OFF (RESTORE_ALLOW_UNAUTHENTICATED=true)"
        return "token not set - every POST is refused with 403 (set RESTORE_AUTH_TOKEN)"

    # --- the three targets ------------------------------------------------------------

    def restore(self, request: Any) -> HttpAnswer:
        """HTTP target: authenticate, read the delivery, restore, answer the result document.

        ``POST /sweep`` runs a sweep; ``GET``/``HEAD`` are liveness, ``GET /ready`` readiness.
        """
        if request.method == "GET" and _is_status(request.path):
            return self._request_status(request)
        if request.method in PROBE_METHODS:
            return self._probe(request.method, request.path, request.args)
        refused = self._check_token(
            request.headers.get("Authorization"), request.args.get("token"), _caller(request)
        )
        if refused is not None:
            return refused
        if request.method != "POST":
            return self._refuse(METHOD_NOT_ALLOWED, _caller(request))
        request_id = request.headers.get("X-Cff-Request-Id") or request.headers.get("X-Request-ID")
        invocation = self._invocation(
            request_id, self._claim_deadline(), self._header_credentials(request)
        )
        runtime = self.runtime
        path = request.path.rstrip("/")
        if path.endswith("/sweep"):
            answered = json_answer(*self._sweep(lambda: _sweep_body(request), invocation))
            self._send_notifications()
            return answered
        if path.endswith("/pause") or path.endswith("/resume"):
            return self._pause_or_resume(path.rsplit("/", 1)[1], request, invocation)
        try:
            body = _read_body(request)
            items = intake.from_http(body, dict(request.headers))
        except intake.IntakeError as exc:
            answer = runtime.rejected(exc.code, exc.message, exc.status, invocation)
        else:
            answer = runtime.run(items, invocation)
        self._send_notifications()
        return delivery_answer(answer)

    def restore_cloudevent(self, cloud_event: Any) -> None:
        """CloudEvent target: the framework has parsed the event; its data is the delivery.

        The caller was authenticated, and the request checked to be one CloudEvent the
        framework can read, before the framework parsed anything
        (:meth:`screen_cloudevent_request`). A delivery that must be retried raises, answered
        503; one that cannot be used (unreadable data, every item rejected) raises, answered
        with its 4xx - a redelivery of the same event cannot succeed, and a 4xx tells the
        platform not to try (a dead-letter queue keeps it), where a 200 would have dropped it
        without a trace on the sender's side.
        """
        runtime = self.runtime
        invocation = self._invocation(None, self._claim_deadline())
        try:
            items = intake.from_cloudevent(cloud_event.get_attributes(), cloud_event.data)
        except intake.IntakeError as exc:
            answer = runtime.rejected(exc.code, exc.message, exc.status, invocation)
            raise RefusedDeliveryError(answer.document(), exc.status) from None
        answer = runtime.run(items, invocation)
        self._send_notifications()
        if answer.retry:
            raise RetryableDeliveryError(
                f"retry this delivery: {answer.summary}", answer.document()
            )
        if answer.status >= 400:
            raise RefusedDeliveryError(answer.document(), answer.status)

    def handler(self, event: Any, context: Any) -> dict[str, Any]:
        """FunctionGraph event function: same pipeline and result document as the HTTP target.

        Credentials come from the function's agency through ``context`` when it has them,
        else from the settings; the remaining execution time bounds every retry. An API
        Gateway event comes from outside, so it is authenticated like the HTTP URL and
        answered with an API Gateway response; other triggers (SMN, EventGrid, timer) can
        only be delivered by the platform and carry no token. For those, a delivery that must
        be retried raises :class:`RetryableDeliveryError`: FunctionGraph invokes them
        asynchronously and retries a failed call as often as the function's asynchronous
        settings allow (README: Deploy).
        """
        if is_apig_request(event):  # the intake's own test: whatever it unwraps is checked
            return self._api_gateway(event, context)
        if functiongraph.is_timer(event):
            return self._timer(event, context)
        answer = self._deliver_event(event, context)
        self._flush_sink(context)
        if answer.retry:
            raise RetryableDeliveryError(
                f"retry this delivery: {answer.summary}", answer.document()
            )
        return {"statusCode": answer.status, **answer.document()}

    # --- for the functions-framework hooks ---------------------------------------------

    def screen_cloudevent_request(self, request: Any) -> HttpAnswer | None:
        """The CloudEvent target's door, after the caller check and before the framework
        parses.

        Probes are answered as on the HTTP target (the framework routes only POST there). A
        POST the framework's SDK could not read as one CloudEvent is refused with the
        intake's typed 4xx and a log line (:func:`handler.intake.check_cloudevent_request`);
        None lets the framework go ahead.
        """
        if request.method == "GET" and _is_status(request.path):
            return self._request_status(request)
        if request.method in PROBE_METHODS:
            return self._probe(request.method, request.path, request.args)
        if request.method != "POST":
            return None  # the framework answers 405, as JSON
        limit = intake.MAX_BODY_BYTES
        try:
            if request.content_length is not None and request.content_length > limit:
                raise intake.IntakeError(413, "BodyTooLarge", f"body larger than {limit} bytes")
            # get_data() keeps the bytes: the framework parses these, not a second read.
            intake.check_cloudevent_request(request.get_data(), dict(request.headers))
        except intake.IntakeError as exc:
            answer = self.runtime.rejected(
                exc.code, exc.message, exc.status, self._invocation(None)
            )
            return json_answer(answer.document(), exc.status)
        return None

    def authenticate_request(self, request: Any) -> HttpAnswer | None:
        """The token check for a Flask/werkzeug request; probes need none."""
        if request.method in PROBE_METHODS:
            return None
        return self._check_token(
            request.headers.get("Authorization"), request.args.get("token"), _caller(request)
        )

    def crash_answer(self, exc: BaseException) -> HttpAnswer:
        """The JSON answer to an exception no stage handled, logged with its traceback."""
        if isinstance(exc, RetryableDeliveryError):
            return json_answer(exc.document, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)})
        if isinstance(exc, RefusedDeliveryError):
            return json_answer(exc.document, exc.status)
        self.runtime.reporter.crashed(exc)
        return error_answer("InternalError", "unexpected error; see the function's log", 500)

    # --- FunctionGraph events -----------------------------------------------------------

    def _timer(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """A TIMER event runs a sweep, and never raises: timer calls are asynchronous, so
        raising would have FunctionGraph repeat the sweep as often as its asynchronous settings
        allow, while the next timer already is the retry. Overrides the timer cannot mean
        (plain text in ``user_event``) are ignored with a WARNING line; overrides that are
        wrong are refused at ERROR, since nobody reads a timer's answer."""
        try:
            runtime = self.runtime
            invocation = self._invocation(
                functiongraph.context_call(context, "getRequestID"),
                functiongraph.deadline(context),
                functiongraph.agency_credentials(context),
            )

            def overrides() -> Any:
                value, ignored = read_user_event(event.get("user_event"))
                if ignored:
                    runtime.reporter.sweep_overrides_ignored(ignored, invocation.id)
                return value

            document, status = self._sweep(overrides, invocation, from_timer=True)
            self._flush_sink(context)
            return {"statusCode": status, **document}
        except Exception as exc:  # whatever it was, the log has it and the timer returns
            with contextlib.suppress(Exception):
                self.runtime.reporter.crashed(exc)
            return {
                "statusCode": 500,
                **error_document("InternalError", "unexpected error; see the log"),
            }

    def _deliver_event(self, event: Any, context: Any) -> Answer:
        invocation = self._invocation(
            functiongraph.context_call(context, "getRequestID"),
            functiongraph.deadline(context),
            functiongraph.agency_credentials(context),
        )
        try:
            items = intake.from_event(event)
        except intake.IntakeError as exc:
            return self.runtime.rejected(exc.code, exc.message, exc.status, invocation)
        return self.runtime.run(items, invocation)

    def _api_gateway(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """An API Gateway trigger: the HTTP contract, carried in the event."""
        headers = functiongraph.lower_keys(event.get("headers"))
        query = functiongraph.lower_keys(event.get("queryStringParameters"))
        method = str(event.get("httpMethod", "")).upper()
        caller = str((event.get("requestContext") or {}).get("sourceIp", "apig"))
        path = str(event.get("path", "/"))
        try:
            if method == "GET" and _is_status(path):
                answer = self._status(headers.get("authorization"), query, caller)
            elif method in PROBE_METHODS:
                answer = self._probe(method, path, query)
            else:
                answer = self._check_token(headers.get("authorization"), query.get("token"), caller)
            if answer is None and method not in ("", "POST"):
                answer = self._refuse(METHOD_NOT_ALLOWED, caller)
            if answer is None:
                delivered = self._deliver_event(event, context)
                self._flush_sink(context)
                answer = delivery_answer(delivered)
        except Exception as exc:  # the caller gets JSON, the log the traceback
            answer = self.crash_answer(exc)
        body, status, answer_headers = answer
        return {
            "statusCode": status, "isBase64Encoded": False, "headers": answer_headers, "body": body,
        }  # fmt: skip

    # --- shared -------------------------------------------------------------------------

    def _sweep(
        self, overrides: Callable[[], Any], invocation: Invocation, *, from_timer: bool = False
    ) -> tuple[dict[str, Any], int]:
        """Run one sweep; ``overrides()`` reads the caller's JSON overrides (may raise 4xx)."""
        runtime = self.runtime
        try:
            request = SweepRequest.from_settings(self.settings).overridden(overrides())
        except intake.IntakeError as exc:
            if not from_timer:  # the caller reads the 400; the log line is a WARNING
                answer = runtime.rejected(exc.code, exc.message, exc.status, invocation)
                return answer.document(), exc.status
            runtime.reporter.sweep_refused(exc.code, exc.message, invocation.id)
            return error_document(exc.code, exc.message), exc.status
        answer, summary = runtime.sweep(request, invocation)
        status = 503 if summary.store_unavailable else 200
        return {**answer.document(), "sweep": summary.document()}, status

    def _check_token(
        self, authorization: str | None, query_token: str | None, caller: str
    ) -> HttpAnswer | None:
        refused = refusal(self.settings, authorization, query_token)
        return None if refused is None else self._refuse(refused, caller)

    def _refuse(self, refused: Refusal, caller: str) -> HttpAnswer:
        """A refused call: answered, and logged with the caller's address (never its token)."""
        self.runtime.reporter.refused(refused.status, refused.code, caller)
        return error_answer(refused.code, refused.message, refused.status, refused.headers)

    def _probe(self, method: str, path: str, query: Any) -> HttpAnswer:
        """GET/HEAD: liveness (``/``) or readiness (``/ready`` or ``?ready=1``); OPTIONS: the
        methods. No token needed, so load balancers and the platform can probe."""
        if method == "OPTIONS":
            return "", 204, {"Allow": ALLOW}
        health = {
            "status": "ok",
            "service": "obs-workflow-restore",
            "version": __version__,
            "dryRun": self.settings.dry_run,
        }
        if path.rstrip("/").endswith("/ready") or query.get("ready") in ("1", "true"):
            problem = self.runtime.readiness_problem()
            if problem:
                return json_answer({**health, "status": "unready", "problem": problem}, 503)
            return json_answer({**health, "status": "ready"}, 200)
        return json_answer(health, 200)

    def _invocation(
        self,
        request_id: str | None,
        deadline: float | None = None,
        credentials: Credentials | None = None,
    ) -> Invocation:
        if request_id:
            return Invocation(id=str(request_id)[:128], deadline=deadline, credentials=credentials)
        return Invocation(deadline=deadline, credentials=credentials)

    def _claim_deadline(self) -> float:
        """Finish before the dedupe marker expires, so no second delivery can overtake this
        one."""
        margin = functiongraph.DEADLINE_MARGIN_SECONDS
        return time.monotonic() + max(0.5, self.settings.claim_ttl - margin)

    def _header_credentials(self, request: Any) -> Credentials | None:
        """FunctionGraph HTTP functions get their agency's temporary keys as request headers
        ("Include Keys"); used only when RESTORE_CREDENTIALS_FROM_HEADERS is on, after auth."""
        if not self.settings.credentials_from_headers:
            return None
        headers = request.headers
        access_key = headers.get("X-CFF-Security-Access-Key")
        secret_key = headers.get("X-CFF-Security-Secret-Key")
        if not access_key or not secret_key:
            return None
        return Credentials(access_key, secret_key, headers.get("X-CFF-Security-Token") or None)

    def _pause_or_resume(self, action: str, request: Any, invocation: Invocation) -> HttpAnswer:
        """``POST /pause`` (``{"graph": G}`` or ``{"all": true}``, ``"for": "2h"``,
        ``"reason"``) and ``POST /resume`` (``{"graph": G}`` or ``{"all": true}``): the
        command line's ``pause`` and ``resume``, for operators without the store's address."""
        from handler.durations import duration_seconds
        from handler.pipeline import pauses

        try:
            document = _sweep_body(request) or {}
            if not isinstance(document, dict):
                raise intake.IntakeError(400, "InvalidRequest", "the body must be a JSON object")
            graph, everything = document.get("graph"), document.get("all") is True
            if (graph is None) == (not everything):
                raise intake.IntakeError(
                    400, "InvalidRequest", 'give "graph" or "all": true, not both'
                )
            target = None if everything else graph
            if action == "resume":
                ended = pauses.resume(self.runtime.store, target)
                return json_answer({"graph": target or "*", "resumed": ended}, 200)
            length = document.get("for", pauses.DEFAULT_PAUSE_SECONDS)
            seconds = duration_seconds(length) if isinstance(length, str) else length
            if seconds is None:
                raise intake.IntakeError(400, "InvalidRequest", '"for" must be a duration: 2h')
            paused = pauses.pause(
                self.runtime.store,
                target,
                by=f"HTTP caller {_caller(request)}",
                seconds=seconds,
                reason=document.get("reason", ""),
            )
        except pauses.PauseError as exc:
            answer = self.runtime.rejected("InvalidRequest", str(exc), 400, invocation)
            return json_answer(answer.document(), 400)
        except intake.IntakeError as exc:
            answer = self.runtime.rejected(exc.code, exc.message, exc.status, invocation)
            return json_answer(answer.document(), exc.status)
        except StoreUnavailable:
            return error_answer("StoreUnavailable", "state store unavailable, try again", 503)
        return json_answer({"pause": paused}, 200)

    def _request_status(self, request: Any) -> HttpAnswer:
        return self._status(request.headers.get("Authorization"), request.args, _caller(request))

    def _status(self, authorization: str | None, query: Any, caller: str) -> HttpAnswer:
        """``GET /status`` (every HTTP door): the ``status`` command's document; it names
        graphs and who paused them, so unlike the probes it needs the token. It takes no query
        parameter but ``token``: one it does not know (a filter it would not apply) is a 400,
        not an answer that looks filtered."""
        refused = self._check_token(authorization, query.get("token"), caller)
        if refused is not None:
            return refused
        unknown = sorted(name for name in query if name not in STATUS_QUERY)
        if unknown:
            names = ", ".join(ascii(name[:40]) for name in unknown[:5])
            message = f"GET /status takes no query parameter but token, got {names}"
            return error_answer("InvalidRequest", message, 400)
        from handler.status import status_document

        try:
            return json_answer(status_document(self.runtime.store), 200)
        except StoreUnavailable:
            return error_answer("StoreUnavailable", "state store unavailable, try again", 503)

    def _send_notifications(self) -> None:
        """Give-up messages waiting in the outbox, in bounded time, after the outcomes."""
        self.runtime.flush_notifications(NOTIFY_FLUSH_SECONDS)

    def _flush_sink(self, context: Any) -> None:
        """Give queued sink events a bounded chance before the platform freezes the
        instance."""
        self.runtime.flush_events(functiongraph.remaining_seconds(context, SINK_FLUSH_SECONDS))


def _is_status(path: str) -> bool:
    return path.rstrip("/").endswith("/status")


def _read_body(request: Any) -> bytes:
    """The request body, refusing one larger than the intake limit before reading it all."""
    limit = intake.MAX_BODY_BYTES
    if request.content_length is not None and request.content_length > limit:
        raise intake.IntakeError(413, "BodyTooLarge", f"body larger than {limit} bytes")
    return request.stream.read(limit + 1)


def _sweep_body(request: Any) -> Any:
    """The ``POST /sweep`` body as JSON overrides, under the limits of every other body."""
    from handler.intake.limits import parse_document, too_large

    body = _read_body(request)
    if len(body) > intake.MAX_BODY_BYTES:
        raise too_large("body", len(body))
    if not body.strip():
        return None
    return parse_document(body)


def _caller(request: Any) -> str:
    return str(getattr(request, "remote_addr", "") or "unknown")
