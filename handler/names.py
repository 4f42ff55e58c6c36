"""Workflow and execution name rules, checked before any name reaches the wire.

The official SDK puts names onto the request path unchecked, so ``a/../b`` becomes a path
traversal. We apply the documented graph-name rule (1-64 characters, first a letter or digit,
then letters, digits, ``_`` and ``-``) to execution names too: it is the strictest rule the
service documents, and every name it admits is safe in a URL path and query without escaping.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
MAX_LENGTH = 64


class InvalidNameError(ValueError):
    """A graph or execution name broke the naming rule; ``field`` says which one."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"invalid {field}: {reason}")
        self.field = field
        self.reason = reason


def validate_name(value: object, field: str) -> str:
    """Return ``value`` if it is a valid name, else raise :class:`InvalidNameError`.

    The message describes the problem without echoing long or binary input back, so it is
    safe to log and to return to a caller.
    """
    if not isinstance(value, str):
        raise InvalidNameError(field, f"must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidNameError(field, "must not be empty")
    if len(value) > MAX_LENGTH:
        raise InvalidNameError(field, f"must be at most {MAX_LENGTH} characters, got {len(value)}")
    if _NAME.fullmatch(value) is None:
        raise InvalidNameError(
            field,
            f"{_preview(value)} must start with a letter or digit and use only "
            "letters, digits, '_' and '-'",
        )
    return value


def _preview(value: str) -> str:
    """A short, printable rendering of a rejected name for error messages."""
    shown = value if len(value) <= 40 else value[:40] + "..."
    return ascii(shown)
