"""The policy stage: decides whether an item may call restore, and records what came of it.

In order, for each item the intake accepted:

1. the graph allowlist (``RESTORE_GRAPH_ALLOWLIST``) - a graph outside it is skipped;
2. deduplication by the item's identity - an in-progress marker is claimed before the call,
   so a redelivery of an item that is in flight or finished never calls OBS again;
3. the restore budget - at most ``RESTORE_MAX_RESTORES`` restores per execution within
   ``RESTORE_BUDGET_WINDOW``, reserved atomically before the call so concurrent deliveries
   cannot exceed it.

Afterwards :meth:`Policy.settle` keeps or refunds the budget unit and records the outcome, or
releases the marker so a redelivery can try again. Fail closed: if the store cannot be reached
nothing is called and the item ends ``retryable_error``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from handler.intake import Item
from handler.settings import Settings
from handler.store import StateStore, StoreUnavailable
from handler.sweep import SWEEP


@dataclass(frozen=True)
class Verdict:
    """An outcome reached without calling OBS."""

    outcome: str
    reason: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    redeliver: bool = False  # not final: the platform should deliver this item again
    detail: str = ""  # for the log line only: may name hosts, paths or raw exception text


@dataclass(frozen=True)
class Ticket:
    """Permission to call restore for one item: the claimed marker and the reserved unit."""

    key: str
    claim_token: str
    subject: str
    budget_token: str
    retention: float  # how long the recorded outcome answers redeliveries


class Settlement(Enum):
    """What a finished restore attempt means for the store."""

    CONSUMED = "consumed"  # the service accepted it: keep the unit, record the outcome
    REFUSED = "refused"  # a definite, permanent answer: refund the unit, record the outcome
    RETRY = "retry"  # a definite transient failure: refund the unit, release the marker
    UNKNOWN = "unknown"  # no answer after sending: it may have been applied; keep, release


class Policy:
    """Applies allowlist, dedupe and budget over one state store."""

    def __init__(self, settings: Settings, store: StateStore) -> None:
        self._settings = settings
        self._store = store

    def admit(
        self, item: Item, claim_ttl: float | None = None, *, dry_run: bool = False
    ) -> Ticket | Verdict:
        """Return a Ticket to go ahead, or the Verdict that ends the item here.

        ``dry_run`` makes this one item a dry run even when ``RESTORE_DRY_RUN`` is off."""
        if item.verdict == "skip":
            return Verdict("skipped", item.reason)
        if item.verdict == "reject":
            return Verdict("rejected", item.reason)
        assert item.graph_name is not None and item.execution_name is not None
        if not self._settings.graph_allowed(item.graph_name):
            return Verdict("skipped", "graph is not in RESTORE_GRAPH_ALLOWLIST")
        try:
            claim = self._store.claim(item.event_id, claim_ttl or self._settings.claim_ttl)
        except StoreUnavailable as exc:
            return _store_down(exc)
        if claim.state == "done":
            return _duplicate_of(claim.record or {})
        if not claim.acquired:
            # Not final: if that invocation dies, only a redelivery can still restore this item.
            return Verdict("duplicate", "in progress in another invocation", redeliver=True)
        if item.shape == SWEEP and self._settings.sweep_grace > 0:
            recent = self._recently_restored(item, claim.token)
            if recent is not None:
                return recent
        if self._settings.dry_run or dry_run:
            self._release(item.event_id, claim.token)
            return Verdict("dry_run", "RESTORE_DRY_RUN is on: restore not called")
        return self._reserve(item, claim.token)

    def settle(self, ticket: Ticket, settlement: Settlement, record: dict[str, Any]) -> str | None:
        """Apply a settlement; return a note when the store could not take it (never raise)."""
        store = self._store
        try:
            if settlement in (Settlement.REFUSED, Settlement.RETRY):
                store.refund_budget(ticket.subject, ticket.budget_token)
            if settlement in (Settlement.CONSUMED, Settlement.REFUSED):
                store.finish(ticket.key, ticket.claim_token, record, ticket.retention)
            else:
                store.release(ticket.key, ticket.claim_token)
        except StoreUnavailable as exc:
            return f"outcome not recorded, state store unavailable: {exc}"
        return None

    def _recently_restored(self, item: Item, claim_token: str) -> Verdict | None:
        """A sweep leaves alone an execution restored within the grace period.

        List answers lag behind restores, and a just-restored execution may still read as
        failed for a moment; a second restore then could be accepted. The marker is released,
        not recorded: if the execution really failed again, the next sweep restores it.
        """
        subject = f"{item.graph_name}/{item.execution_name}"
        grace = self._settings.sweep_grace
        try:
            recent = self._store.budget_used(subject, grace)
        except StoreUnavailable as exc:
            self._release(item.event_id, claim_token)
            return _store_down(exc)
        if not recent:
            return None
        self._release(item.event_id, claim_token)
        return Verdict(
            "skipped",
            f"restored within the last {grace:g}s (RESTORE_SWEEP_GRACE); "
            "the next sweep looks again",
        )

    def take_lease(self, key: str, ttl: float) -> str | None:
        """A lease on ``key`` for ``ttl`` seconds (its token), or None while another holds it.

        Raises :class:`StoreUnavailable`: without the store no lease can be promised."""
        claim = self._store.claim(key, ttl)
        return claim.token if claim.acquired else None

    def release_lease(self, key: str, token: str) -> None:
        self._release(key, token)

    def _reserve(self, item: Item, claim_token: str) -> Ticket | Verdict:
        subject = f"{item.graph_name}/{item.execution_name}"
        settings = self._settings
        try:
            budget_token = self._store.reserve_budget(
                subject, settings.max_restores, settings.budget_window
            )
            if budget_token is None:
                verdict = Verdict(
                    "budget_exhausted",
                    f"{settings.max_restores} restores of this execution within "
                    f"{settings.budget_window:g}s already (RESTORE_MAX_RESTORES)",
                )
                self._store.finish(
                    item.event_id,
                    claim_token,
                    {"outcome": verdict.outcome, "reason": verdict.reason},
                    self._retention(item),
                )
                return verdict
        except StoreUnavailable as exc:
            self._release(item.event_id, claim_token)
            return _store_down(exc)
        return Ticket(item.event_id, claim_token, subject, budget_token, self._retention(item))

    def _retention(self, item: Item) -> float:
        """A request without an id of its own is only its content: the same content an hour
        later is a new failure of the same execution, not a redelivery."""
        if item.identified_by_content:
            return self._settings.plain_dedupe_window
        return self._settings.dedupe_retention

    def _release(self, key: str, token: str) -> None:
        # If the store is down the marker simply expires after the claim TTL.
        with contextlib.suppress(StoreUnavailable):
            self._store.release(key, token)


def _store_down(exc: StoreUnavailable) -> Verdict:
    # The exception names the store's host or path: the log line gets it, the caller does not.
    return Verdict(
        "retryable_error",
        "state store unavailable, nothing called",
        {"errorCode": "StoreUnavailable"},
        detail=str(exc),
    )


def _duplicate_of(record: dict[str, Any]) -> Verdict:
    """A redelivery answers with what the first delivery recorded."""
    keys = ("status", "requestId", "executionUrn", "restoredAt", "errorCode", "errorMessage")
    fields = {k: record.get(k) for k in keys}
    return Verdict(
        "duplicate",
        f"already handled: {record.get('outcome', 'unknown')}",
        {k: v for k, v in fields.items() if v is not None},
    )
