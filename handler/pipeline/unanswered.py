"""What a restore that got no answer leaves behind for its redelivery: when it was sent.

A restore that got no answer may have been applied. The delivery that sent it asks the
service at once; when that cannot tell (the execution is failed, the query got no answer)
the delivery answers 503 and the unit stays spent. The redelivery asks again, and can tell
more if it knows when the lost restore was sent: an execution that stopped AFTER that moment
ran again, so the restore was applied and the run it started has failed anew. The redelivered
event is then ``restored`` - its failure was restored - and the new failure is a failure of
its own (its own event, or a sweep item whose identity holds its stop time; its own budget
unit). Without this memory the redelivery would take the new failure for its own and restore
again, once per redelivery, until the budget ran out.

The moment is kept in the state store under a key of its own, ``unanswered:`` and the SHA-256
of the item's identity, for as long as the item's outcome would be kept. No identity the
intake makes can equal such a key - every identity starts with a family of its own
(:mod:`handler.intake.identity`) - so no event can read or overwrite another's memory. It is
best effort: a store that fails here only costs the redelivery this knowledge (it then asks
and decides as without it, never sending blindly).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from typing import NamedTuple

from handler.store import StateStore, StoreUnavailable
from handler.store.base import new_token

KEY_PREFIX = "unanswered:"
_READ_TTL = 5.0  # a read takes a marker when nothing is there; it is released at once


class UnansweredRestore(NamedTuple):
    """A restore sent without an answer: when (wall-clock seconds), and the stop time the
    service showed before it was sent (None when it was not asked or does not say)."""

    sent_at: float
    stopped_before: float | None = None


def memory_key(event_id: str) -> str:
    return KEY_PREFIX + hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()


def remember(
    store: StateStore, event_id: str, restore: UnansweredRestore, retention: float
) -> None:
    """Keep ``restore`` for ``event_id``'s redelivery (the latest one replaces an older)."""
    record = {
        "outcome": "unanswered_restore",
        "eventId": event_id[:512],
        "sentAt": restore.sent_at,
        "stoppedBefore": restore.stopped_before,
    }
    with contextlib.suppress(StoreUnavailable):
        store.finish(memory_key(event_id), new_token(), record, retention)


def recall(store: StateStore, event_id: str) -> UnansweredRestore | None:
    """The unanswered restore remembered for ``event_id``, or None."""
    key = memory_key(event_id)
    try:
        claim = store.claim(key, _READ_TTL)
        if claim.acquired:  # nothing remembered: the read's own marker goes again
            store.release(key, claim.token)
    except StoreUnavailable:
        return None
    record = claim.record or {}
    sent_at, stopped_before = record.get("sentAt"), record.get("stoppedBefore")
    if not _finite(sent_at):
        return None
    return UnansweredRestore(
        float(sent_at), float(stopped_before) if _finite(stopped_before) else None
    )


def forget(store: StateStore, event_id: str) -> None:
    """Drop the memory once the item has an outcome that no longer needs it."""
    with contextlib.suppress(StoreUnavailable):
        store.forget(memory_key(event_id))


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
