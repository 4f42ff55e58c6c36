"""What an item leaves in the store once decided: the settle stage.

While an item is decided it holds things in the state store (:class:`Hold`): the in-progress
marker of its identity, and - once a restore is allowed - a reserved unit of its execution's
budget. Every way an item ends says what becomes of them (:class:`Settlement`), and
:func:`settle` does it, in one place and one store step: the unit is kept or given back, the
outcome recorded or the marker released (and the item's ledger entries written with them).
A :class:`Verdict` is how admission and classification hand an outcome down to here: the
outcome, its settlement and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, NamedTuple

from handler.intake import Item
from handler.outcomes import Outcome
from handler.store import StateStore, StoreUnavailable
from handler.store.base import LedgerBatch


class Settlement(Enum):
    """What an item's end means for what it holds in the store."""

    SPENT = "spent"  # the restore was accepted: the unit is spent, the outcome recorded
    RECORDED = "recorded"  # a final outcome that used no unit: give it back, record the outcome
    RELEASED = "released"  # decided again later: give the unit back, release the marker
    UNKNOWN = "unknown"  # sent without an answer, may have been applied: spent, marker released
    NONE = "none"  # nothing is held (skipped or rejected at the door, a duplicate, store down)


class Hold(NamedTuple):
    """What one item holds in the store: its claimed marker and, once a restore is allowed,
    its budget unit (in flight until settled)."""

    item: Item  # under the key it was claimed with (an id reused for another execution is
    # claimed under a key of its own)
    claim_token: str
    retention: float  # how long a recorded outcome answers redeliveries
    ttl: float  # how long the marker holds; a reserved unit is in flight as long
    subject: str | None = None  # "<graph>/<execution>": whose budget the unit is of
    budget_token: str | None = None


class Verdict(NamedTuple):
    """An item's outcome as a stage decided it, with what the store must do about it.

    ``hold`` is what admission leaves to settle (None from classification, whose caller
    holds the ticket); ``recorded`` is the first outcome's record a duplicate repeats.
    """

    outcome: Outcome
    settlement: Settlement = Settlement.NONE
    reason: str = ""
    rule: str | None = None
    error_code: str | None = None
    redeliver: bool = False  # not final although the outcome may be: deliver again
    severity: int | None = None  # raises the log line's level: an operator must act
    detail: str = ""  # for the log line only: may name hosts, paths or raw exception text
    maybe_applied: bool = False
    recorded: Mapping[str, Any] | None = None
    hold: Hold | None = None


def settle(
    store: StateStore,
    hold: Hold | None,
    settlement: Settlement,
    record: Mapping[str, Any],
    ledger: LedgerBatch | None = None,
) -> StoreUnavailable | None:
    """Apply ``settlement`` to ``hold``, with ``ledger``'s entries, in one store step; return
    the store's failure when it could not take it (never raise): the caller says so and
    keeps the failure's text for the log. Nothing is written without a hold to settle
    (``ledger`` included): ``settles`` says whether there is one.

    A unit that is kept is settled, so it counts as spent (``budget_exhausted`` for the next
    items once the budget is full) instead of in flight (retried).
    """
    if not settles(hold, settlement):
        return None
    assert hold is not None
    budget = None
    if hold.budget_token is not None and hold.subject is not None:
        budget = (hold.subject, hold.budget_token)
    recorded = settlement in (Settlement.SPENT, Settlement.RECORDED)
    try:
        store.settle_item(
            hold.item.event_id,
            hold.claim_token,
            record=dict(record) if recorded else None,
            retention=hold.retention,
            budget=budget,
            spent=settlement in (Settlement.SPENT, Settlement.UNKNOWN),
            ledger=ledger,
        )
    except StoreUnavailable as exc:
        return exc
    return None


def settles(hold: Hold | None, settlement: Settlement) -> bool:
    """Whether :func:`settle` writes anything for ``hold`` ending in ``settlement``."""
    return hold is not None and settlement is not Settlement.NONE
