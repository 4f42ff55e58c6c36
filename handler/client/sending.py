"""What SMN publishes and Cloud Eye metric sends share: a bounded, signed POST and its verdict.

Telling people (SMN) and counting (Cloud Eye) are side effects of a restore, never part of
it: a notification that waits 30 s for a slow service delays the outcome of every item behind
it. So these calls are bounded by construction - short timeouts, at most two attempts, a
``Retry-After`` longer than a second ends the call rather than being slept, and every call
has its own deadline (``max_seconds``, default 6 s, or the caller's, whichever comes first)
that no attempt and no backoff outlives.

The answer is a :class:`SendResult` whose :class:`SendOutcome` says what the caller does next:

* ``ACCEPTED`` - the service took it;
* ``TRANSIENT`` - try again later: no answer, 429, 5xx, an answer that could not be read, or
  our credentials refused (401/403: a fix by the operator - a key, a permission such as
  ``smn:topic:publish`` - makes the same request succeed, so it must not be thrown away);
* ``PERMANENT`` - this request will never be accepted as it is (another 4xx, a redirect).

A send that got no answer after it left (a read timeout, a reset) is never sent again by the
client (it may have been accepted: ``maybe_sent``); its caller decides, knowing that sending it
again may deliver it twice. Signing and the wire are :mod:`handler.client.dwr_signing` and
:mod:`handler.client.transport`, shared with the workflow clients; secrets never appear in a
``repr``, a result or a message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar
from urllib.parse import urlsplit

from handler.client.dwr_signing import DATE_HEADER, DwrSigner, sdk_date
from handler.client.results import WorkflowResult
from handler.client.transport import (
    JSON,
    USER_AGENT,
    RetrySchedule,
    Transport,
    _retry_after,
)
from handler.credentials import Credentials
from handler.names import validate_name

__all__ = [
    "DEFAULT_MAX_SECONDS",
    "DEFAULT_RETRY",
    "DEFAULT_TIMEOUT",
    "SendOutcome",
    "SendResult",
    "SignedSender",
    "verdict",
]

DEFAULT_TIMEOUT = (2.0, 4.0)  # (connect, read) seconds
DEFAULT_MAX_SECONDS = 6.0
# Two tries, the second after at most half a second; a server asking for more than a second
# gets its answer back as TRANSIENT (with retry_after) instead of our time.
DEFAULT_RETRY = RetrySchedule(
    max_attempts=2, backoff_base=0.1, backoff_cap=0.5, max_retry_after=1.0
)


_Sender = TypeVar("_Sender", bound="SignedSender")


class SendOutcome(str, Enum):
    """What to do with a message or a batch of metrics after one send."""

    ACCEPTED = "accepted"
    TRANSIENT = "transient"  # keep it and send it again later
    PERMANENT = "permanent"  # it will never be accepted as it is


@dataclass(frozen=True)
class SendResult:
    """The verdict on one send, with what the service said.

    ``status`` is the HTTP status of the last attempt (0: no answer). ``maybe_sent`` is true
    when no answer came after the request left: the service may have accepted it.
    ``retry_after`` is the seconds a 429/503 asked for; ``credentials_refused`` marks a
    401/403 (see the module docstring). ``message_id`` is SMN's id of an accepted message.
    """

    outcome: SendOutcome
    status: int
    attempts: int = 1
    request_id: str | None = None
    message_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    maybe_sent: bool = False
    retry_after: float | None = None
    credentials_refused: bool = False

    @property
    def accepted(self) -> bool:
        return self.outcome is SendOutcome.ACCEPTED

    @property
    def transient(self) -> bool:
        return self.outcome is SendOutcome.TRANSIENT

    @property
    def permanent(self) -> bool:
        return self.outcome is SendOutcome.PERMANENT


class SignedSender:
    """A keep-alive client that POSTs signed JSON bodies to one service under one project.

    ``clock`` gives the signing time (``X-Sdk-Date``); ``max_seconds`` bounds every call.
    """

    _transport: Transport

    def __enter__(self: _Sender) -> _Sender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the keep-alive connections; the sender is not used afterwards."""
        self._transport.close()

    def __init__(
        self,
        credentials: Credentials,
        project_id: str,
        server: str,
        *,
        timeout: tuple[float, float],
        retry: RetrySchedule | None,
        max_seconds: float,
        verify: bool | str,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
    ) -> None:
        if not max_seconds > 0:
            raise ValueError("max_seconds must be more than 0")
        # The project id goes into the path and a signed header; the name rule admits every
        # id Huawei Cloud issues (32 hex digits) and nothing that needs escaping.
        self.project_id = validate_name(project_id, "project_id")
        self._signer = DwrSigner(credentials)
        self._transport = Transport(
            server, timeout=timeout, retry=retry or DEFAULT_RETRY, verify=verify, sleep=sleep
        )
        self.server = self._transport.server
        self._host = urlsplit(self.server).netloc
        self._max_seconds = float(max_seconds)
        self._clock = clock

    def _post(
        self,
        path: str,
        body: bytes,
        content_type: str,
        deadline: float | None,
        unreadable: Callable[[WorkflowResult], str | None],
    ) -> SendResult:
        """Send ``body`` to ``path`` (already percent-encoded as it goes on the wire).

        ``unreadable(result)`` says why a 2xx answer cannot be taken as accepted, or None.
        """
        own = time.monotonic() + self._max_seconds
        deadline = own if deadline is None else min(deadline, own)
        result = self._transport.call(
            "POST",
            self.server + path,
            lambda: self._headers(path, body, content_type),
            deadline,
            resend_unanswered=False,
            body=body,
        )
        return verdict(result, unreadable(result) if result.ok else None)

    def _headers(self, path: str, body: bytes, content_type: str) -> dict[str, str]:
        signed = {
            "Content-Type": content_type,
            "Host": self._host,
            "X-Project-Id": self.project_id,
            DATE_HEADER: sdk_date(self._clock()),
        }
        headers = {**signed, "Accept": JSON, "User-Agent": USER_AGENT}
        headers.update(self._signer.sign("POST", path, {}, signed, body))
        return headers


def verdict(result: WorkflowResult, unreadable: str | None = None) -> SendResult:
    """A transport result as a :class:`SendResult`.

    ``unreadable`` is why a 2xx answer cannot be taken as accepted (None: it can). Such an
    answer may still mean the service took the request, so it is TRANSIENT and ``maybe_sent``:
    sent again later, never taken as done.
    """
    accepted = result.ok and unreadable is None
    if accepted:
        outcome = SendOutcome.ACCEPTED
    elif result.ok or result.retryable or result.status in (401, 403):
        outcome = SendOutcome.TRANSIENT
    else:
        outcome = SendOutcome.PERMANENT
    body = result.body if isinstance(result.body, dict) else {}
    return SendResult(
        outcome=outcome,
        status=result.status,
        attempts=result.attempts,
        request_id=result.requestId or _text(body.get("request_id")),
        message_id=_text(body.get("message_id")) if accepted else None,
        error_code="UnreadableAnswer" if unreadable else result.errorCode,
        error_message=unreadable or (None if accepted else result.errorMessage),
        maybe_sent=result.maybe_applied or unreadable is not None,
        retry_after=_retry_after(result.header) if result.retryable and result.status else None,
        credentials_refused=result.status in (401, 403),
    )


def _text(value: object) -> str | None:
    return value[:200] if isinstance(value, str) and value else None
