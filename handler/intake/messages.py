"""How reasons and errors quote the input: briefly, as ``ascii()``, containers only by kind.

Every reason an Item or an IntakeError carries is logged and may be returned to the caller,
so input is never echoed whole and never as raw, possibly unprintable text.
"""

from __future__ import annotations

PREVIEW_CHARS = 40


def nonempty_str(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def kind(value: object) -> str:
    """The JSON kind of a value, with its article, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def preview(value: object, limit: int = PREVIEW_CHARS) -> str:
    """A short ``ascii()`` rendering of input for messages; containers are only named."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value)
        return ascii(value[:limit] + b"..." if len(value) > limit else value)
    if isinstance(value, str):
        return ascii(value[:limit] + "..." if len(value) > limit else value)
    if value is None or isinstance(value, (bool, float)):
        return ascii(value)
    if isinstance(value, int) and value.bit_length() <= 64:
        return ascii(value)
    return kind(value)


def show(value: object) -> str:
    """A state as written when it is a short plain word, else its preview."""
    plain = isinstance(value, str) and 0 < len(value) <= PREVIEW_CHARS and value.isascii()
    if plain and value.replace("_", "").replace("-", "").isalnum():
        return value
    return preview(value)


def loggable(value: object, limit: int = 256) -> str:
    """A string attribute (source, URL) cut to ``limit`` and made printable ASCII."""
    if not isinstance(value, str):
        return ""
    if len(value) <= limit and value.isascii() and value.isprintable():
        return value
    return preview(value, limit)
