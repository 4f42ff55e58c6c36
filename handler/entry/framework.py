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
  exception no stage handled as a 500 (or 503 for a delivery that must be retried).

Only imported under functions-framework, so Flask is already loaded; the FunctionGraph event
path never reaches this module.
"""

from __future__ import annotations

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
) -> None:
    """Hook the caller check, the CloudEvent target's screen and the JSON error answers into
    functions-framework's app."""

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
