"""From bytes to a checked JSON value, under every delivery-level limit.

Limits are checked before the work they protect: size before decoding, depth straight after
parsing (and as RecursionError during it), plain-JSON-ness and size again for values that
arrive already decoded. A failure of the delivery itself is an :class:`IntakeError`; a payload
nested inside a readable envelope (SMN ``message``, CloudEvent ``data``) fails only its own
request, so :func:`nested_payload` answers with a reason instead.
"""

from __future__ import annotations

import json
from typing import Any

from handler.intake.items import IntakeError
from handler.intake.messages import kind, preview

MAX_BODY_BYTES = 256 * 1024  # EventGrid's own per-request limit; nothing legitimate is larger
MAX_DEPTH = 16  # nested arrays/objects; the deepest legitimate shape needs about 6
MAX_INT_BITS = 2000  # below every int-to-str limit Python allows, so hashing never fails


def body_bytes(body: object) -> bytes:
    """An HTTP body as bytes; text is encoded as UTF-8, anything else is refused."""
    if body is None:
        return b""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        try:
            return body.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise IntakeError(400, "NotUTF8", "body text holds lone surrogates") from exc
    raise IntakeError(400, "NotJSON", f"body must be bytes, not {type(body).__name__}")


def parse_document(raw: bytes) -> Any:
    """Decode and parse a whole delivery, turning every failure into an IntakeError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IntakeError(
            400, "NotUTF8", f"body is not UTF-8 (bad byte at offset {exc.start})"
        ) from exc
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise IntakeError(400, "EmptyDelivery", "body is empty")
    return parse_json_text(text, "body")


def parse_json_text(text: str, what: str) -> Any:
    """JSON text (already decoded) as a checked value, under the depth and size limits of
    every body; ``what`` names it in the IntakeError (a timer's ``user_event``, a body)."""
    value = _loads(text, what)
    check_value(value, what)
    return value


def _loads(text: str, what: str) -> Any:
    """``json.loads`` that rejects NaN/Infinity and reports deep input as TooDeep.

    The C decoder recurses per nesting level, so a body of 100 000 ``[`` raises
    RecursionError before any depth check of ours could run.
    """
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise _too_deep(what) from exc
    except json.JSONDecodeError as exc:
        raise IntakeError(
            400,
            "NotJSON",
            f"{what} is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            f"starts with {preview(text)}",
        ) from exc
    except ValueError as exc:  # an integer longer than Python will convert, or NaN/Infinity
        raise IntakeError(400, "NotJSON", f"{what} is not JSON: {exc}"[:200]) from exc


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def check_value(value: object, what: str = "event") -> None:
    """Refuse a decoded value that is not plain JSON, nests too deep or is too big.

    Iterative, so hostile input cannot exhaust the stack, and it stops at the first problem.
    The size is a lower bound of the JSON text's size (strings and one byte per value), which
    also bounds the work on values that share or cycle through containers.
    """
    size = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if not all(isinstance(key, str) for key in node):
                raise IntakeError(400, "NotJSON", "object keys must be strings")
            size += sum(map(len, node))
            children = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            _check_scalar(node)
            continue
        if depth > MAX_DEPTH:
            raise _too_deep(what)
        size += len(node) + 1
        for child in children:  # plain scalars inline: this loop is the hot path
            kind = type(child)
            if kind is str:
                size += len(child)
            elif not (
                child is None
                or kind is float
                or kind is bool
                or (kind is int and child.bit_length() <= MAX_INT_BITS)
            ):
                stack.append((child, depth + 1))
        if size > MAX_BODY_BYTES:
            raise too_large(what, size)


def _check_scalar(value: object) -> None:
    """A non-container that the fast path left over: a subclass, a huge int or no JSON."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INT_BITS:
            raise IntakeError(400, "NotJSON", "a number is too long")
    elif value is not None and not isinstance(value, (str, bool, float)):
        raise IntakeError(400, "NotJSON", f"a {type(value).__name__} is not a JSON value")


def _too_deep(what: str) -> IntakeError:
    return IntakeError(400, "TooDeep", f"{what} nests arrays/objects deeper than {MAX_DEPTH}")


def too_large(what: str, size: int) -> IntakeError:
    return IntakeError(
        413, "BodyTooLarge", f"{what} is larger than {MAX_BODY_BYTES} bytes ({size} or more)"
    )


def nested_payload(value: Any, what: str) -> tuple[Any, str | None]:
    """A payload that may arrive as JSON text (SMN ``message``, CloudEvent ``data``).

    Problems here reject only this event - its envelope was readable - so they come back
    as a reason instead of an IntakeError.
    """
    if value is None:
        return None, f"{what} is missing"
    if not isinstance(value, (str, bytes, bytearray, memoryview)):
        return value, None
    if len(value) > MAX_BODY_BYTES:
        return None, f"{what} is larger than {MAX_BODY_BYTES} bytes"
    if not isinstance(value, str):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None, f"{what} is not UTF-8"
    try:
        parsed = _loads(value.removeprefix("\ufeff"), what)
        check_value(parsed, what)
    except IntakeError as exc:
        return None, exc.message
    return parsed, None


def envelope_array(envelope: dict[str, Any], key: str, name: str, empty: str) -> list[Any]:
    """An envelope's list of events or records; one that is not a non-empty array fails whole.

    ``name`` says whose ``key`` it is in the message; ``empty`` is the message for ``[]``.
    """
    value = envelope[key]
    if not isinstance(value, list):
        raise IntakeError(400, "BadEnvelope", f"{name} {key!r} must be an array, not {kind(value)}")
    if not value:
        raise IntakeError(400, "EmptyDelivery", empty)
    return value
