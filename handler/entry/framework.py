"""functions-framework integration: the caller check and JSON errors on the app it builds.

functions-framework builds a Flask app around our target and parses a CloudEvent *before*
calling ``restore_cloudevent``; its own error pages are HTML, and the one for an unreadable
CloudEvent echoes the request's headers and body. So when :mod:`handler.main` is loaded by
functions-framework, :meth:`handler.entry.Function.install_framework_hooks` installs two
things on that app:

* a ``before_request`` check: every call except the token-free probes (GET, HEAD, OPTIONS)
  is authenticated before anything is parsed, whatever the signature type; for the
  CloudEvent signature type it then answers the probes (the framework routes only POST
  there) and refuses, with a typed 4xx, a request its SDK could not read as one CloudEvent;
* error handlers that answer JSON - a framework error by its status and a fixed message, an
  exception no stage handled as a 500 (or 503 for a delivery that must be retried);
* when functions-framework's command line is the one serving (``functions-framework``,
  ``obs-workflow-restore serve``, FunctionGraph's ``bootstrap``), one line on standard error:
  where it listens and whether a POST needs the token. Otherwise nothing is said until the
  first request, and a server without ``RESTORE_AUTH_TOKEN`` refuses every POST in silence.

Only imported under functions-framework, so Flask is already loaded; the FunctionGraph event
path never reaches this module.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import flask
from werkzeug.exceptions import HTTPException

from handler.entry.documents import HttpAnswer, error_answer

# Our message for each framework error, in place of its HTML page (which may echo the request).
FRAMEWORK_ERRORS = {
    400: ("BadRequest", "the body is not a CloudEvent in structured or binary mode"),
    404: ("NotFound", "no such path"),
    405: ("MethodNotAllowed", "use POST"),
}


# The endpoint functions-framework gives a CloudEvent function (its signature type's name).
CLOUDEVENT_ENDPOINT = "cloudevent"


def install(
    app: flask.Flask,
    authenticate: Callable[[Any], HttpAnswer | None],
    crash_answer: Callable[[BaseException], HttpAnswer],
    screen_cloudevent: Callable[[Any], HttpAnswer | None],
    auth: str = "token",
) -> None:
    """Hook the caller check, the CloudEvent target's screen and the JSON error answers into
    functions-framework's app, and announce the server; ``auth`` says how POSTs are checked
    (see :func:`listening_line`)."""

    def check_caller() -> HttpAnswer | None:
        refusal = authenticate(flask.request)
        # The app is built around the module after it is loaded: which kind it is shows
        # only now, by the endpoint the framework registered.
        if refusal is not None or CLOUDEVENT_ENDPOINT not in app.view_functions:
            return refusal
        return screen_cloudevent(flask.request)

    def framework_error(error: HTTPException) -> HttpAnswer:
        status = error.code or 500
        code, message = FRAMEWORK_ERRORS.get(status, (error.name.replace(" ", ""), error.name))
        return error_answer(code, message, status)

    def unexpected(error: Exception) -> HttpAnswer:
        return crash_answer(error)

    app.before_request(check_caller)
    app.register_error_handler(HTTPException, framework_error)
    app.register_error_handler(Exception, unexpected)
    address = _served_address()
    if address is not None:
        print(listening_line(address, auth), file=sys.stderr, flush=True)


def listening_line(address: str, auth: str) -> str:
    """``listening on http://127.0.0.1:8000, auth: token`` (or ``OFF``, or a warning)."""
    return f"obs-workflow-restore: listening on {address}, auth: {auth}"


def _served_address() -> str | None:
    """``http://host:port`` as functions-framework's command line parsed it (flags or its
    HOST/PORT variables), or None when no such command line is running - an app built
    in-process by a test or another server, which listens nowhere of its own."""
    import click  # functions-framework's command line is a click command

    context = click.get_current_context(silent=True)
    params = context.params if context is not None else {}
    if "port" not in params or "host" not in params:
        return None
    return f"http://{params['host']}:{params['port']}"
