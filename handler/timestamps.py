"""Times as the workflow APIs write them: ISO 8601 text or epoch milliseconds.

Standard library only, so the sweep's items (imported at start-up by the entry points) and the
clients' listings (imported at the first call) read them alike without one importing the
other.
"""

from __future__ import annotations

from datetime import datetime, timezone


def parse_api_time(text: str) -> datetime | None:
    """An API timestamp as a UTC datetime; None when it is not a time a datetime can hold
    (garbage, or epoch milliseconds such as ``99999999999999999``, years past 9999)."""
    try:
        if text.isdigit():
            return datetime.fromtimestamp(int(text) / 1000.0, timezone.utc)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
