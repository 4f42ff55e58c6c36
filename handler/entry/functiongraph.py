"""What FunctionGraph hands an event function besides the event: its context, and the shape
of the events only it delivers (timers, API Gateway requests)."""

from __future__ import annotations

import math
import time
from typing import Any

from handler.credentials import Credentials

# Time kept back from FunctionGraph's remaining time to answer and log after the last try.
DEADLINE_MARGIN_SECONDS = 1.0


def context_call(context: Any, method: str) -> Any:
    """Call an optional FunctionGraph context method; a missing or failing one gives None."""
    function = getattr(context, method, None)
    if not callable(function):
        return None
    try:
        return function()
    except Exception:  # some runtimes raise when the function has no agency
        return None


def deadline(context: Any) -> float | None:
    """The invocation's deadline (``time.monotonic()``), less the margin; None when the
    context says nothing usable."""
    remaining_ms = context_call(context, "getRemainingTimeInMilliSeconds")
    if not isinstance(remaining_ms, (int, float)) or not math.isfinite(remaining_ms):
        return None  # a remaining time that is not a number of milliseconds says nothing
    return time.monotonic() + max(0.0, remaining_ms / 1000.0 - DEADLINE_MARGIN_SECONDS)


def remaining_seconds(context: Any, at_most: float) -> float:
    """How long the invocation may still wait (less the margin), at most ``at_most``."""
    remaining_ms = context_call(context, "getRemainingTimeInMilliSeconds")
    if isinstance(remaining_ms, (int, float)):
        return min(at_most, max(0.0, remaining_ms / 1000.0 - DEADLINE_MARGIN_SECONDS))
    return at_most


def agency_credentials(context: Any) -> Credentials | None:
    """The function's agency keys from its context, when it has them."""
    access_key = context_call(context, "getSecurityAccessKey")
    secret_key = context_call(context, "getSecuritySecretKey")
    if not access_key or not secret_key:
        return None
    return Credentials(access_key, secret_key, context_call(context, "getSecurityToken") or None)


def is_timer(event: Any) -> bool:
    return isinstance(event, dict) and str(event.get("trigger_type", "")).upper() == "TIMER"


def lower_keys(mapping: Any) -> dict[str, Any]:
    """Header or query mapping of an API Gateway event, names lower-cased, lists unwrapped."""
    if not isinstance(mapping, dict):
        return {}
    lowered = {}
    for key, value in mapping.items():
        if isinstance(value, list):
            value = value[0] if value else ""
        lowered[str(key).lower()] = value if isinstance(value, str) else str(value)
    return lowered
