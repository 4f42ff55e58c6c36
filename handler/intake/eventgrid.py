"""Huawei EventGrid's delivery envelope: ``{"events": [...]}``, a list of structured CloudEvents.

Each event keeps its own CloudEvent identity; the envelope only adds the shape name.
"""

from __future__ import annotations

from typing import Any

from handler.intake.cloud_events import read_each
from handler.intake.items import EVENTGRID, ItemCollector
from handler.intake.limits import envelope_array


def read_eventgrid(envelope: dict[str, Any], out: ItemCollector) -> None:
    """Every event of the envelope; an envelope that is not a non-empty array fails whole."""
    events = envelope_array(envelope, "events", "EventGrid", "EventGrid envelope has no events")
    read_each(events, EVENTGRID, "events[{}]", out)
