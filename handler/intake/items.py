"""What the intake answers with: one :class:`Item` per request, or one :class:`IntakeError`.

Two levels of failure, so one bad request never costs its neighbours their restore: an
IntakeError fails the whole delivery (the caller answers 4xx; retrying the same bytes cannot
help), an Item with verdict ``reject`` fails one request inside a readable delivery.
The collector enforces the item limit while items are added, before the work of reading more.
"""

from __future__ import annotations

from typing import NamedTuple

MAX_ITEMS = 100  # requests in one delivery, counted after unwrapping every envelope

RESTORE, SKIP, REJECT = "restore", "skip", "reject"

# Item.shape: the envelope a request came in, for logs and metrics.
CLOUDEVENT = "cloudevent"
CLOUDEVENT_BATCH = "cloudevent-batch"
EVENTGRID = "eventgrid"
SMN = "smn"
SMN_TRIGGER = "smn-trigger"
APIG = "apig"
PLAIN = "plain"


class IntakeError(Exception):
    """The whole delivery is unreadable; nothing in it can be acted on.

    ``status`` is the HTTP status to answer with (400, 413 or 415), ``code`` a stable
    machine-readable word (``BodyTooLarge``, ``TooManyItems``, ``NotUTF8``, ``NotJSON``,
    ``TooDeep``, ``EmptyDelivery``, ``BadEnvelope``, ``BadBase64``, ``UnsupportedMediaType``,
    ``IncompleteCloudEvent``, ``NotACloudEvent``, ``BadCloudEvent``)
    and ``message`` a human-readable explanation that quotes at most a short ``ascii()``
    preview of the input.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"IntakeError({self.status}, {self.code!r}, {self.message!r})"


class Item(NamedTuple):
    """What to do with one request of a delivery.

    ``restore`` and ``skip`` items always carry both names, already validated by
    :func:`handler.names.validate_name`; ``reject`` items carry neither, so an unchecked name
    can never travel further. ``reason`` says why an item is skipped or rejected (empty for
    ``restore``); ``source`` is the CloudEvent source or SMN topic URN, for logs.
    """

    verdict: str
    event_id: str
    shape: str
    graph_name: str | None = None
    execution_name: str | None = None
    reason: str = ""
    source: str = ""
    identified_by_content: bool = False  # no id of its own: event_id is a hash of the request
    failed_at: float | None = None  # when the execution failed (epoch seconds), if known


class ItemCollector:
    """Collects a delivery's Items; stops the delivery as soon as it holds too many."""

    def __init__(self) -> None:
        self.items: list[Item] = []

    def add(self, item: Item) -> None:
        if len(self.items) >= MAX_ITEMS:
            raise IntakeError(
                413, "TooManyItems", f"delivery carries more than {MAX_ITEMS} requests"
            )
        self.items.append(item)

    def result(self) -> list[Item]:
        if not self.items:  # every path adds at least one; this keeps the promise regardless
            raise IntakeError(400, "EmptyDelivery", "delivery carries no request")
        return self.items
