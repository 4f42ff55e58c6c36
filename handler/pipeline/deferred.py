"""Deferred failures, remembered in the store until they are due and then handed back.

A failure a rule's spacing defers is not lost: admission remembers it (:meth:`remember`)
until it has a final outcome - the store forgets it when one is recorded - or a retention
after it was due, and every sweep first works through those that are due (:meth:`due`),
with their own identity and through the same admission. One whose delay outlasts the sweep's
lookback, or that only an event reported, is still restored.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, NamedTuple

from handler.intake import Item
from handler.intake.items import RESTORE
from handler.names import InvalidNameError, validate_name
from handler.store import StateStore
from handler.sweep import SWEEP

# The store's deferred memory also holds the give-up messages not yet sent
# (:mod:`handler.escalation`), under keys of their own family.
OUTBOX_PREFIX = "notify:"


class DeferredFailures:
    """The deferred failures of one store; ``retention`` is how long one is kept after it
    was due (the dedupe retention)."""

    def __init__(self, store: StateStore, retention: float) -> None:
        self._store = store
        self._retention = retention

    def remember(self, item: Item, due: float, deferral: Deferral | None = None) -> None:
        """Keep ``item`` until ``due`` (wall-clock seconds) and after, with what deferred it
        (``deferral``: a sweep answers with it while the hold lasts, see :meth:`standing`).
        Raises :class:`~handler.store.StoreUnavailable`."""
        failure: dict[str, Any] = {
            "shape": item.shape,
            "graph": item.graph_name,
            "execution": item.execution_name,
            "source": item.source,
            "identifiedByContent": item.identified_by_content,
            "failedAt": item.failed_at,
        }
        if deferral is not None:
            failure["deferral"] = deferral.document()
        self._store.remember_deferred(item.event_id, failure, due, self._retention)

    def due(self, limit: int) -> list[Item]:
        """The deferred failures that are due, the longest due first: the same items (same
        identity) as when they were deferred, for the sweep to run through admission again.

        Raises :class:`~handler.store.StoreUnavailable`. An entry that does not rebuild an
        item (written by something else) is left to expire."""
        items = []
        entries = self._store.due_deferred(limit)
        waiting_messages = sum(key.startswith(OUTBOX_PREFIX) for key, _ in entries)
        if waiting_messages and len(entries) == limit:
            # Give-up messages SMN has not taken yet share the memory: they must not take
            # the places of failures, so ask once more for as many more as they took.
            entries = self._store.due_deferred(limit + waiting_messages)
        for key, failure in entries:
            if key.startswith(OUTBOX_PREFIX):
                continue  # a give-up message waiting to be sent, not a failure
            if len(items) == limit:
                break
            graph, execution = failure.get("graph"), failure.get("execution")
            try:  # an item carries only checked names, wherever it comes from
                validate_name(graph, "graph")
                validate_name(execution, "execution")
            except InvalidNameError:
                continue
            items.append(
                Item(
                    RESTORE,
                    key,
                    str(failure.get("shape") or SWEEP),
                    graph,
                    execution,
                    source=str(failure.get("source") or ""),
                    identified_by_content=failure.get("identifiedByContent") is True,
                    failed_at=_seconds_or_none(failure.get("failedAt")),
                )
            )
        return items

    def kept_long(self, due_at: float, now: float) -> bool:
        """Whether a failure remembered due at ``due_at`` is kept at least half its retention
        after ``now``. One that is not must be admitted again, which remembers it anew: a
        hold that outlasts the retention (a long pause, a long systemic outage) must not let
        the memory of a failure no listing shows any more expire."""
        return now < due_at + self._retention / 2

    def standing(self, keys: Collection[str]) -> dict[str, tuple[float, Deferral]]:
        """Which of ``keys`` are remembered deferred with what deferred them, each as
        ``key -> (due_at, deferral)``, due or not; one store read. Raises
        :class:`~handler.store.StoreUnavailable`."""
        found = {}
        for key, (due_at, failure) in self._store.deferred_among(keys).items():
            deferral = Deferral.from_document(failure.get("deferral"))
            if deferral is not None:
                found[key] = (due_at, deferral)
        return found


class Deferral(NamedTuple):
    """What deferred a failure, as its answer said: ``hold`` names it (``breaker``,
    ``watch``, ``systemic``, ``rate`` - outage mode's - or ``paused``)."""

    hold: str
    reason: str
    rule: str | None = None
    error_code: str | None = None

    def document(self) -> dict[str, Any]:
        return {
            "hold": self.hold,
            "reason": self.reason,
            "rule": self.rule,
            "errorCode": self.error_code,
        }

    @classmethod
    def from_document(cls, document: Any) -> Deferral | None:
        """The deferral remembered, or None: none was (an older entry), or it is not ours."""
        if not isinstance(document, dict):
            return None
        hold, reason = document.get("hold"), document.get("reason")
        rule, code = document.get("rule"), document.get("errorCode")
        if not isinstance(hold, str) or not isinstance(reason, str):
            return None
        return cls(
            hold,
            reason,
            rule if isinstance(rule, str) else None,
            code if isinstance(code, str) else None,
        )


def _seconds_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
