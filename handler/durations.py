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
