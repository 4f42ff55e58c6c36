"""Durations as operators write them: ``30s``, ``5m``, ``24h``, ``7d`` or a bare number of seconds.

One grammar for settings, restore rules and sweep overrides, so a value that works in one
place works in all of them. Each caller raises its own error (naming its setting or field).
"""

from __future__ import annotations

import re

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> float | None:
    """Seconds from a duration string, or None when ``text`` is not one."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        return None
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def duration_text(seconds: float) -> str:
    """``seconds`` in the grammar above, in the largest unit that says it exactly.

    Days only from two days up: a window written ``24h`` reads back as ``24h``, not ``1d``.
    """
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit == "d" else 1) and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
