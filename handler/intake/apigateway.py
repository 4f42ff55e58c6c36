"""FunctionGraph's API Gateway trigger: an HTTP request wrapped in an event.

This module only recognises it (:func:`is_apig_request`, also the entry point's test for
"check the token") and unwraps it - the body, base64-decoded when flagged - and the
dispatcher reads what it holds as if it had been posted to the function's URL directly.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from handler.intake.items import IntakeError
from handler.intake.limits import MAX_BODY_BYTES, body_bytes, too_large
from handler.intake.messages import kind


def is_apig_request(value: object) -> bool:
    """An API Gateway event: a ``body`` beside the keys only the gateway's envelope has.

    The one test of it: the intake unwraps exactly these, and :mod:`handler.main` checks the
    token of exactly these - an event read as a gateway request without its token checked
    would let anyone who can reach the gateway in.
    """
    return (
        isinstance(value, dict)
        and "body" in value
        and ("httpMethod" in value or "isBase64Encoded" in value)
    )


def request_body(envelope: dict[str, Any]) -> bytes:
    """The wrapped request's body as bytes, refusing a base64 body that is too large or bad."""
    body, encoded = envelope.get("body"), envelope.get("isBase64Encoded")
    if body is None:
        return b""
    if isinstance(body, (dict, list)):  # some test consoles put the JSON itself in "body"
        return json.dumps(body).encode("utf-8")
    if not isinstance(body, str):
        raise IntakeError(400, "NotJSON", f"API Gateway body is {kind(body)}, not a string")
    if not (encoded is True or (isinstance(encoded, str) and encoded.lower() == "true")):
        return body_bytes(body)
    if len(body) > (MAX_BODY_BYTES // 3 + 1) * 4 + 64:
        raise too_large("API Gateway body", len(body))
    try:
        return base64.b64decode("".join(body.split()), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise IntakeError(
            400, "BadBase64", "API Gateway body is flagged isBase64Encoded but is not base64"
        ) from exc
