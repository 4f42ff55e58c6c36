"""Who may call: the one bearer-token rule for everything an outside caller can reach.

The HTTP URL, the CloudEvent target and API Gateway events all check ``RESTORE_AUTH_TOKEN``
here, before anything is parsed; platform triggers (SMN, EventGrid, timers) carry no token
and need none.
"""

from __future__ import annotations

import hmac

from handler.settings import Settings

AUTH_CHALLENGE = 'Bearer realm="obs-workflow-restore"'
# Methods answered without a token: health, readiness and CORS-style preflight.
PROBE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ALLOW = "GET, HEAD, OPTIONS, POST"


class Refusal:
    """Why a call is refused: its status, code, message and extra headers."""

    __slots__ = ("code", "headers", "message", "status")

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


METHOD_NOT_ALLOWED = Refusal(405, "MethodNotAllowed", "use POST", {"Allow": ALLOW})


def refusal(
    settings: Settings, authorization: str | None, query_token: str | None
) -> Refusal | None:
    """None when the caller may go on; otherwise why not (401 or 403).

    The token comes from ``Authorization: Bearer …`` or, for callers that cannot set headers
    (SMN HTTP subscriptions), the ``token`` query parameter; compared in constant time.
    """
    expected = settings.auth_token
    if not expected:
        if settings.allow_unauthenticated:
            return None
        message = "RESTORE_AUTH_TOKEN is not set: set it, or set RESTORE_ALLOW_UNAUTHENTICATED=true"
        return Refusal(403, "Forbidden", message)
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        presented = query_token or ""
    if presented and hmac.compare_digest(presented.strip().encode(), expected.encode()):
        return None
    return Refusal(
        401, "Unauthorized", "missing or wrong bearer token", {"WWW-Authenticate": AUTH_CHALLENGE}
    )
