"""The SMN publisher: one message to one topic, for the people who must know.

``POST /v2/{project_id}/notifications/topics/{topic_urn}/publish`` with the workflow clients'
credentials and signature (``SDK-HMAC-SHA256``, ``X-Security-Token`` for an agency's
temporary keys); the body is what the official SDK (``huaweicloudsdksmn`` ``PublishMessage``)
sends for the same message, byte for byte (``tests/client/test_smn_client.py``).

A message is written once and shaped per protocol with ``message_structure``: the ``email``
text can be long (every restore tried, the command to override), the ``sms`` text is short
and free of the brackets SMS refuses, and ``default`` serves every other subscriber. The
limits SMN documents are applied here so a message is never refused for its size: the subject
is cut to 512 bytes at a UTF-8 character boundary, SMS text to 490 characters, and the whole
structure to 256 KB (the longest text is cut, with a note saying so).

The call is bounded in time and never re-sent when its answer was lost
(:mod:`handler.client.sending`): telling people must never delay a restore's outcome.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from urllib.parse import quote

from handler.client.results import WorkflowResult
from handler.client.sending import (
    DEFAULT_MAX_SECONDS,
    DEFAULT_TIMEOUT,
    SendResult,
    SignedSender,
)
from handler.client.transport import RetrySchedule
from handler.credentials import Credentials
from handler.notify_targets import TopicUrn, parse_topic_urn, smn_endpoint

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_SMS_CHARACTERS",
    "MAX_SUBJECT_BYTES",
    "PUBLISH_CONTENT_TYPE",
    "SmnClient",
    "fit_subject",
    "message_structure",
    "publish_body",
]

MAX_SUBJECT_BYTES = 512
MAX_MESSAGE_BYTES = 256 * 1024
MAX_SMS_CHARACTERS = 490
MAX_TIME_TO_LIVE = 86400
# What the official SDK sends: its model says "application/json;charset=UTF-8", and its
# header helper lower-cases it on the way out.
PUBLISH_CONTENT_TYPE = "application/json;charset=utf-8"
CUT_NOTE = "\n[… cut to fit SMN's 256 KB message limit]"
# What the note adds to the structure once JSON-escaped (its newline takes two bytes).
_CUT_NOTE_BYTES = len(json.dumps(CUT_NOTE, ensure_ascii=False).encode()) - 2
# A subject is one line of an email header: control characters (newlines) become spaces.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# SMS refuses "[]" and "【】": they become parentheses, which read the same.
_SMS_BRACKETS = str.maketrans({"[": "(", "]": ")", "【": "(", "】": ")"})


class SmnClient(SignedSender):
    """Publishes messages to one SMN topic.

    ``topic_urn`` is ``urn:smn:<region>:<project_id>:<topic>`` (checked; its project id is the
    one in the path and the signed ``X-Project-Id``); ``server`` defaults to the URN region's
    endpoint, ``https://smn.<region>.myhuaweicloud.com``. ``timeout`` is ``(connect, read)``
    seconds; no call lasts longer than ``max_seconds`` (see :mod:`handler.client.sending`).
    """

    def __init__(
        self,
        access_key_id: str,
        secret_access_key: str,
        topic_urn: str | TopicUrn,
        server: str | None = None,
        security_token: str | None = None,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retry: RetrySchedule | None = None,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        verify: bool | str = True,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topic = topic_urn if isinstance(topic_urn, TopicUrn) else parse_topic_urn(topic_urn)
        super().__init__(
            Credentials(access_key_id, secret_access_key, security_token),
            self.topic.project_id,
            server or smn_endpoint(self.topic.region),
            timeout=timeout,
            retry=retry,
            max_seconds=max_seconds,
            verify=verify,
            sleep=sleep,
            clock=clock,
        )
        # The URN's colons are percent-encoded in the path, as the SDK sends them.
        self._path = (
            f"/v2/{self.project_id}/notifications/topics/{quote(str(self.topic), safe='')}/publish"
        )

    def __repr__(self) -> str:
        topic = str(self.topic)
        return f"SmnClient(server={self.server!r}, topic={topic!r}, signer={self._signer!r})"

    def publish(
        self,
        subject: str,
        default: str,
        *,
        email: str | None = None,
        sms: str | None = None,
        time_to_live: int | None = None,
        deadline: float | None = None,
    ) -> SendResult:
        """Publish one message; the result's ``message_id`` is SMN's id when accepted.

        ``default`` is what every subscriber without a text of its own reads; ``email``
        defaults to it, ``sms`` to the subject. ``time_to_live`` (1-86400 s; SMN's default is
        3600) is how long SMN keeps trying to deliver. ``deadline`` is a ``time.monotonic()``
        value the call never outlives. Bad arguments raise ``ValueError`` before any I/O.
        """
        body = publish_body(subject, default, email=email, sms=sms, time_to_live=time_to_live)
        return self._post(self._path, body, PUBLISH_CONTENT_TYPE, deadline, _unreadable)


def publish_body(
    subject: str,
    default: str,
    *,
    email: str | None = None,
    sms: str | None = None,
    time_to_live: int | None = None,
) -> bytes:
    """The publish request's body: ``subject``, ``message_structure`` and ``time_to_live``.

    The key order and JSON spelling are the official SDK's (its model's field order, ASCII
    escapes, ``", "`` and ``": "`` separators), so the bytes - and the body hash that is
    signed - are the same.
    """
    document: dict[str, str] = {
        "subject": fit_subject(subject),
        "message_structure": message_structure(default, email=email, sms=sms or subject),
    }
    if time_to_live is not None:
        if isinstance(time_to_live, bool) or not isinstance(time_to_live, int):
            raise ValueError("invalid time_to_live: must be a whole number of seconds")
        if not 1 <= time_to_live <= MAX_TIME_TO_LIVE:
            raise ValueError(f"invalid time_to_live: must be 1 to {MAX_TIME_TO_LIVE} seconds")
        document["time_to_live"] = str(time_to_live)  # the SDK's model types it as a string
    return json.dumps(document).encode("ascii")


def fit_subject(subject: str) -> str:
    """The subject on one line, cut to 512 UTF-8 bytes without splitting a character."""
    text = _CONTROL.sub(" ", _text(subject, "subject")).strip()
    if not text:
        raise ValueError("invalid subject: must not be empty")
    return _cut_utf8(text, MAX_SUBJECT_BYTES)


def message_structure(default: str, *, email: str | None = None, sms: str | None = None) -> str:
    """The ``message_structure`` JSON string: ``default``, ``email`` and ``sms`` texts.

    At most 256 KB in UTF-8: when the texts are longer, the longest is cut (with a note) until
    they fit, so a message with a long history is shortened, never refused.
    """
    # No text can fit once longer than the limit itself, so none is longer than that to begin
    # with: the search below then stays bounded whatever a caller passes.
    texts = {"default": _cut_utf8(_text(default, "default"), MAX_MESSAGE_BYTES)}
    if not texts["default"].strip():
        raise ValueError("invalid default: the default message must not be empty")
    email = texts["default"] if email is None else _text(email, "email")
    texts["email"] = _cut_utf8(email, MAX_MESSAGE_BYTES)
    short = texts["default"] if sms is None else _text(sms, "sms")
    texts["sms"] = short.translate(_SMS_BRACKETS)[:MAX_SMS_CHARACTERS]
    for _ in range(len(texts)):  # each round fits, or leaves the longest text only its note
        structure = _structure_json(texts)
        size = len(structure.encode())
        if size <= MAX_MESSAGE_BYTES:
            return structure
        longest = max(texts, key=lambda key: _escaped_size(texts[key]))
        room = MAX_MESSAGE_BYTES - (size - _escaped_size(texts[longest])) - _CUT_NOTE_BYTES
        texts[longest] = _prefix_within(texts[longest], room) + CUT_NOTE
    structure = _structure_json(texts)
    if len(structure.encode()) > MAX_MESSAGE_BYTES:  # pragma: no cover - the notes alone fit
        raise ValueError("message texts cannot be fitted into 256 KB")
    return structure


def _structure_json(texts: dict[str, str]) -> str:
    return json.dumps(texts, ensure_ascii=False, separators=(",", ":"))


def _escaped_size(text: str) -> int:
    """UTF-8 bytes ``text`` takes inside the structure, JSON escapes included."""
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def _prefix_within(text: str, room: int) -> str:
    """The longest prefix of ``text`` (whole characters) taking at most ``room`` bytes."""
    low, high = 0, len(text)
    while low < high:  # the size grows with the prefix, so a binary search finds the cut
        middle = (low + high + 1) // 2
        if _escaped_size(text[:middle]) <= room:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def _text(value: object, field: str) -> str:
    """Text that encodes as UTF-8: a lone surrogate (from JSON's ``\\ud800``) becomes ``?``."""
    if not isinstance(value, str):
        raise ValueError(f"invalid {field}: must be text, not {type(value).__name__}")
    return value.encode("utf-8", "replace").decode("utf-8")


def _cut_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    # A cut inside a multi-byte character leaves an incomplete tail, which "ignore" drops.
    return raw[:limit].decode("utf-8", "ignore")


def _unreadable(result: WorkflowResult) -> str | None:
    """Why a 2xx publish answer is no proof of acceptance, or None when it names the message."""
    body = result.body
    if not isinstance(body, dict):
        return result.errorMessage or "the answer was not a JSON object"
    message_id = body.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        return "the answer carried no message_id"
    return None
