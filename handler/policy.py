"""The policy stage: decides whether an item may call restore, and records what came of it.

In order, for each item the intake accepted:

1. the graph allowlist (``RESTORE_GRAPH_ALLOWLIST``) - a graph outside it is skipped;
2. deduplication by the item's identity - an in-progress marker is claimed before the call,
   so a redelivery of an item that is in flight or finished never calls OBS again;
3. the restore rules (:mod:`handler.rules`) - the first rule that matches the graph and the
   failure's error text decides: left alone (``skipped``), not due yet (``deferred``: the
   marker is released, so the sweep that finds the failure later restores it), or restored
   within the rule's budget - at most ``max_restores`` per execution within ``window``,
   reserved atomically before the call so concurrent deliveries cannot exceed it. Without a
   policy the one default rule is ``RESTORE_MAX_RESTORES`` within ``RESTORE_BUDGET_WINDOW``.

Afterwards :meth:`Policy.settle` keeps or refunds the budget unit and records the outcome, or
releases the marker so a redelivery can try again. Fail closed: if the store cannot be reached
nothing is called and the item ends ``retryable_error``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from handler.intake import Item
from handler.intake.identity import reused_identity
from handler.intake.items import RESTORE
from handler.names import InvalidNameError, validate_name
from handler.rules import DEFAULT_RULE_NAME, Match, Rule, default_policy
from handler.settings import Settings
from handler.store import StateStore, StoreUnavailable
from handler.store.base import BUSY
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
    rule: str = DEFAULT_RULE_NAME  # the rule that allowed the restore
    # A restore of this execution was accepted, or sent without an answer, within the rule's
    # window: the caller asks the service before sending another.
    restored_before: bool = False


@dataclass(frozen=True)
class FailureFacts:
    """What the service says about why (and when) an execution failed, for the rules."""

    errors: tuple[str, ...] | None  # the failed nodes' messages; None: the API gives none
    problem: str | None = None  # the query failed transiently: decide on a later delivery
    error_code: str | None = None
    stopped_at: float | None = None  # when it stopped (epoch seconds), if the query said


class Settlement(Enum):
    """What a finished restore attempt means for the store."""

    CONSUMED = "consumed"  # the service accepted it: keep the unit, record the outcome
    REFUSED = "refused"  # a definite, permanent answer: refund the unit, record the outcome
    RETRY = "retry"  # a definite transient failure: refund the unit, release the marker
    UNKNOWN = "unknown"  # no answer after sending: it may have been applied; keep, release


class Policy:
    """Applies allowlist, dedupe and budget over one state store."""

    def __init__(
        self, settings: Settings, store: StateStore, clock: Callable[[], float] = time.time
    ) -> None:
        self._settings = settings
        self._store = store
        self._rules = settings.policy
        # Wall-clock seconds; must be the store's clock, since spacing compares the two.
        self._clock = clock
        # Every rule counts the execution's restores, whichever rule made them: a reservation
        # is kept for the longest window anything counts with (the rules', the sweep grace).
        self._budget_keep = max(
            [rule.window for rule in self._rules.rules] + [settings.sweep_grace]
        )

    def admit(
        self,
        item: Item,
        claim_ttl: float | None = None,
        *,
        dry_run: bool = False,
        facts: Callable[[], FailureFacts] | None = None,
    ) -> Ticket | Verdict:
        """Return a Ticket to go ahead, or the Verdict that ends the item here.

        ``dry_run`` makes this one item a dry run even when ``RESTORE_DRY_RUN`` is off.
        ``facts`` asks the service why (and when) the execution failed; it is called at most
        once, when a rule has error patterns or a rule's ``first`` delay needs the stop time
        the item does not carry."""
        if item.verdict == "skip":
            return Verdict("skipped", item.reason)
        if item.verdict == "reject":
            return Verdict("rejected", item.reason)
        assert item.graph_name is not None and item.execution_name is not None
        if not self._settings.graph_allowed(item.graph_name):
            return Verdict("skipped", "graph is not in RESTORE_GRAPH_ALLOWLIST")
        ttl = claim_ttl or self._settings.claim_ttl
        try:
            claim = self._store.claim(item.event_id, ttl)
            if claim.state == "done" and _recorded_for_another(claim.record, item):
                # The id was used before for another execution: that outcome is not this
                # one's. The item gets a key of its own, so its redeliveries still dedupe.
                own_key = reused_identity(item.event_id, item.graph_name, item.execution_name)
                item = replace(item, event_id=own_key)
                claim = self._store.claim(item.event_id, ttl)
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
        dry_run = self._settings.dry_run or dry_run
        in_flight = claim_ttl or self._settings.claim_ttl  # the call never outlives its marker
        try:
            return self._decide(item, claim.token, facts, in_flight, dry_run=dry_run)
        except StoreUnavailable as exc:
            self._release(item.event_id, claim.token)
            return _store_down(exc)

    def admit_forced(
        self, item: Item, claim_ttl: float | None = None, *, dry_run: bool = False
    ) -> Ticket | Verdict:
        """An operator's forced restore (``restore --force``): a Ticket, or the Verdict.

        The allowlist and the rules' decision (patterns, spacing) are skipped - the operator
        has decided - but the rest is an event's: the identity is claimed, a unit of the
        execution's budget (``RESTORE_MAX_RESTORES`` within ``RESTORE_BUDGET_WINDOW``) is
        reserved and the outcome recorded, so a forced restore counts against the loop limit
        like any other. It never lifts that limit: ``state reset-budget`` is the explicit way.
        """
        assert item.graph_name is not None and item.execution_name is not None
        in_flight = claim_ttl or self._settings.claim_ttl
        try:
            claim = self._store.claim(item.event_id, in_flight)
        except StoreUnavailable as exc:
            return _store_down(exc)
        if claim.state == "done":
            return _duplicate_of(claim.record or {})
        if not claim.acquired:
            return Verdict("duplicate", "in progress in another invocation", redeliver=True)
        subject = f"{item.graph_name}/{item.execution_name}"
        limit, window = self._settings.max_restores, self._settings.budget_window
        dry_run = self._settings.dry_run or dry_run
        fields: dict[str, Any] = {"rule": None}
        try:
            times = self._store.budget_times(subject, window)
            if len(times) >= limit > self._store.budget_used(subject, window, spent_only=True):
                return self._busy(item, claim.token, _forced_rule(limit, window), fields)
            token = None
            if len(times) < limit and not dry_run:
                reservation = self._store.reserve_budget(
                    subject, limit, window, in_flight=in_flight, keep=self._budget_keep
                )
                if reservation.state == BUSY:
                    return self._busy(item, claim.token, _forced_rule(limit, window), fields)
                token = reservation.token if reservation.reserved else None
            if token is not None:
                return Ticket(
                    item.event_id, claim.token, subject, token, self._retention(item),
                    restored_before=bool(times),
                )  # fmt: skip
            if dry_run and len(times) < limit:
                self._release(item.event_id, claim.token)
                return Verdict(
                    "dry_run",
                    f"dry run: a forced restore would be sent (restore {len(times) + 1} of "
                    f"{limit} within RESTORE_BUDGET_WINDOW)",
                    fields,
                )
            verdict = Verdict(
                "budget_exhausted",
                f"{limit} restores of this execution within {window:g}s already "
                f"(RESTORE_MAX_RESTORES): --force does not lift the budget, "
                f"`state reset-budget {subject}` does",
                fields,
            )
            if dry_run:
                self._release(item.event_id, claim.token)
            else:
                record = {"outcome": verdict.outcome, "reason": verdict.reason, **fields}
                self._store.finish(item.event_id, claim.token, record, self._retention(item))
            return verdict
        except StoreUnavailable as exc:
            self._release(item.event_id, claim.token)
            return _store_down(exc)

    def _decide(
        self,
        item: Item,
        claim_token: str,
        facts: Callable[[], FailureFacts] | None,
        in_flight: float,
        *,
        dry_run: bool,
    ) -> Ticket | Verdict:
        """Match the rules, then check the matching rule's budget and spacing."""
        assert item.graph_name is not None
        errors: tuple[str, ...] | None = None
        known: FailureFacts | None = None
        if self._rules.needs_error_text:
            known = facts() if facts is not None else FailureFacts(None)
            if known.problem is not None:
                self._release(item.event_id, claim_token)
                return Verdict(
                    "retryable_error",
                    f"the failure's error text is needed by a rule but could not be read: "
                    f"{known.problem}",
                    {"errorCode": known.error_code or "ErrorTextUnavailable"},
                )
            errors = known.errors
        match = self._rules.match(item.graph_name, errors)
        if match.rule is None or match.leave:
            return self._left_alone(item, claim_token, match, dry_run=dry_run)

        def stopped_at() -> float | None:
            """When the failure stopped, if the item or the service's query says it."""
            if item.failed_at is not None:
                return item.failed_at
            told = known if known is not None else (facts() if facts is not None else None)
            return told.stopped_at if told is not None else None

        return self._when_due(item, claim_token, match, in_flight, stopped_at, dry_run=dry_run)

    def _left_alone(self, item: Item, claim_token: str, match: Match, *, dry_run: bool) -> Verdict:
        """A failure no rule restores: recorded, so a redelivery answers the same."""
        if match.rule is None:
            reason = "no rule of the policy matches this failure"
        else:
            reason = (
                f"left alone: leave_on pattern {match.pattern!r} of rule {match.rule.name} "
                f"matches the error: {match.excerpt!r}"
            )
        if match.note:
            reason = f"{reason} ({match.note})"
        fields = {"rule": match.rule.name if match.rule else None}
        if dry_run:
            self._release(item.event_id, claim_token)
        else:
            record = {"outcome": "skipped", "reason": reason, **fields, **_names(item)}
            self._store.finish(item.event_id, claim_token, record, self._retention(item))
        return Verdict("skipped", reason, fields)

    def _when_due(
        self,
        item: Item,
        claim_token: str,
        match: Match,
        in_flight: float,
        stopped_at: Callable[[], float | None],
        *,
        dry_run: bool,
    ) -> Ticket | Verdict:
        """Restore now if the rule's budget has room and its spacing says the time has come.

        Not due yet ends ``deferred`` and releases the marker rather than recording an
        outcome: the sweep that finds the same failure later (its own identity, or this one
        redelivered) must still be able to restore it. The unit is reserved in flight for
        ``in_flight`` seconds (the claim's TTL, which the restore call never outlives).
        """
        rule = match.rule
        assert rule is not None
        subject = f"{item.graph_name}/{item.execution_name}"
        fields: dict[str, Any] = {"rule": rule.name}
        note = f" ({match.note})" if match.note else ""
        times = self._store.budget_times(subject, rule.window)
        if len(times) >= rule.max_restores:
            spent = self._store.budget_used(subject, rule.window, spent_only=True)
            if spent < rule.max_restores:
                return self._busy(item, claim_token, rule, fields)
            return self._exhausted(item, claim_token, rule, fields)
        now = self._clock()
        failed_at = None
        if not times and rule.spacing.first > 0:
            failed_at = self._failure_time(subject, rule, stopped_at)
        due = self.due_time(rule, subject, times, failed_at, now)
        if due > now:
            self._remember_deferred(item, due, dry_run=dry_run)
            self._release(item.event_id, claim_token)
            return Verdict(
                "deferred",
                f"next restore due at {_iso(due)} (in {due - now:.0f}s): rule {rule.name}, "
                f"restore {len(times) + 1} of {rule.max_restores}{note}",
                fields,
            )
        if dry_run:
            self._release(item.event_id, claim_token)
            # Say which switch it was: a sweep's --dry-run (or dryRun) leaves the setting off.
            why = "RESTORE_DRY_RUN is on" if self._settings.dry_run else "a dry run was asked for"
            return Verdict("dry_run", f"{why}: restore not called (rule {rule.name}){note}", fields)
        reservation = self._store.reserve_budget(
            subject, rule.max_restores, rule.window, in_flight=in_flight, keep=self._budget_keep
        )
        if reservation.state == BUSY:
            return self._busy(item, claim_token, rule, fields)
        if not reservation.reserved:
            return self._exhausted(item, claim_token, rule, fields)
        budget_token = reservation.token
        if not rule.spacing.is_immediate:
            # Spacing is checked, then reserved: two deliveries for one execution at the same
            # moment could both pass the check. The one that sees another reservation beside
            # its own steps back (both may: then the sweep restores later, never too soon).
            try:
                crowded = len(self._store.budget_times(subject, rule.window)) > len(times) + 1
            except StoreUnavailable:
                crowded = False  # the unit is reserved: going ahead is what it was taken for
            if crowded:
                self._store.refund_budget(subject, budget_token)
                self._remember_deferred(item, now, dry_run=dry_run)  # decided again next sweep
                self._release(item.event_id, claim_token)
                return Verdict(
                    "deferred",
                    f"another restore of this execution was reserved at the same moment: "
                    f"rule {rule.name} spaces restores{note}",
                    fields,
                )
        return Ticket(
            item.event_id,
            claim_token,
            subject,
            budget_token,
            self._retention(item),
            rule.name,
            restored_before=bool(times),
        )

    def _remember_deferred(self, item: Item, due: float, *, dry_run: bool) -> None:
        """Keep a deferred failure in the store until it has a final outcome: once due, a sweep
        hands it back (:meth:`due_deferred`) even when no listing shows it any more - its
        delay may outlast the lookback, and an event's failure may never be listed at all.
        A dry run leaves nothing to do later."""
        if dry_run:
            return
        failure = {
            "shape": item.shape,
            "graph": item.graph_name,
            "execution": item.execution_name,
            "source": item.source,
            "identifiedByContent": item.identified_by_content,
            "failedAt": item.failed_at,
        }
        self._store.remember_deferred(item.event_id, failure, due, self._settings.dedupe_retention)

    def due_deferred(self, limit: int) -> list[Item]:
        """The deferred failures that are due, the longest due first: the same items (same
        identity) as when they were deferred, for the sweep to run through admission again.

        Raises :class:`StoreUnavailable`. An entry that does not rebuild an item (written by
        something else) is left to expire."""
        items = []
        for key, failure in self._store.due_deferred(limit):
            graph, execution = failure.get("graph"), failure.get("execution")
            failed_at = failure.get("failedAt")
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
                    failed_at=_seconds_or_none(failed_at),
                )
            )
        return items

    def _failure_time(
        self, subject: str, rule: Rule, stopped_at: Callable[[], float | None]
    ) -> float:
        """What a rule's ``first`` delay counts from: when the failure stopped, if the item
        or the service says it, else when the store first saw this failure - each event of
        one failure must find the same reference, or one arriving more often than ``first``
        would be deferred forever. A sighting before the execution's last restore belonged
        to an earlier failure."""
        known = stopped_at()
        if known is not None:
            return known
        restores = self._store.budget_times(subject, self._budget_keep)
        # Kept at least twice the delay: a failure still reported after it finds the sighting.
        retention = max(self._settings.dedupe_retention, 2 * rule.spacing.first)
        return self._store.first_seen(subject, retention, after=restores[-1] if restores else None)

    @staticmethod
    def due_time(
        rule: Rule, subject: str, times: list[float], failed_at: float | None, now: float
    ) -> float:
        """When the next restore of ``subject`` may happen: ``times`` are its restores within
        the rule's window (oldest first); the first is spaced from the failure (from ``now``
        when the failure time is unknown)."""
        reference = times[-1] if times else (failed_at if failed_at is not None else now)
        return reference + rule.spacing.delay(len(times), subject)

    def _exhausted(
        self, item: Item, claim_token: str, rule: Rule, fields: dict[str, Any]
    ) -> Verdict:
        """Restores that were accepted or may have been applied fill the budget: final."""
        verdict = Verdict(
            "budget_exhausted",
            f"{rule.max_restores} restores of this execution within "
            f"{rule.window:g}s already ({_budget_source(rule)})",
            fields,
        )
        record = {"outcome": verdict.outcome, "reason": verdict.reason, **fields, **_names(item)}
        self._store.finish(item.event_id, claim_token, record, self._retention(item))
        return verdict

    def _busy(self, item: Item, claim_token: str, rule: Rule, fields: dict[str, Any]) -> Verdict:
        """Only restores still in flight fill the budget: none of them has restored anything
        yet, and each may still be refunded, so this item is retried, not decided."""
        self._release(item.event_id, claim_token)
        return Verdict(
            "retryable_error",
            f"restores of this execution still in flight fill the budget of "
            f"{rule.max_restores} within {rule.window:g}s ({_budget_source(rule)}); "
            "none has been applied yet: deliver again",
            {**fields, "errorCode": "BudgetInFlight"},
            redeliver=True,
        )

    def settle(
        self, ticket: Ticket, settlement: Settlement, record: dict[str, Any]
    ) -> StoreUnavailable | None:
        """Apply a settlement; return the store's failure when it could not take it (never
        raise): the caller says so in the answer and keeps the failure's text for the log.

        A unit that is kept is settled, so it counts as spent (``budget_exhausted`` for the
        next items once the budget is full) instead of in flight (retried)."""
        store = self._store
        try:
            if settlement in (Settlement.CONSUMED, Settlement.UNKNOWN):
                store.settle_budget(ticket.subject, ticket.budget_token)
            else:
                store.refund_budget(ticket.subject, ticket.budget_token)
            if settlement in (Settlement.CONSUMED, Settlement.REFUSED):
                store.finish(ticket.key, ticket.claim_token, record, ticket.retention)
            else:
                store.release(ticket.key, ticket.claim_token)
        except StoreUnavailable as exc:
            return exc
        return None

    def _recently_restored(self, item: Item, claim_token: str) -> Verdict | None:
        """A sweep leaves alone an execution restored within the grace period.

        List answers lag behind restores, and a just-restored execution may still read as
        failed for a moment; a second restore then could be accepted. The marker is released,
        not recorded: if the execution really failed again, the next sweep restores it. A
        failure that stopped after the last restore is no stale answer (only the restored run
        can have failed then), so the grace does not hold up a rule's shorter spacing.
        """
        subject = f"{item.graph_name}/{item.execution_name}"
        grace = self._settings.sweep_grace
        try:
            recent = self._store.budget_times(subject, grace)
        except StoreUnavailable as exc:
            self._release(item.event_id, claim_token)
            return _store_down(exc)
        if not recent or (item.failed_at is not None and item.failed_at > recent[-1]):
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

    def renew_lease(self, key: str, token: str, ttl: float) -> bool:
        """Hold ``token``'s lease ``ttl`` more seconds; False when it is not ours any more.

        Raises :class:`StoreUnavailable` (the caller decides how long it can wait)."""
        return self._store.renew(key, token, ttl)

    def release_lease(self, key: str, token: str) -> None:
        self._release(key, token)

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


def _seconds_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _budget_source(rule: Rule) -> str:
    return "RESTORE_MAX_RESTORES" if rule.name == DEFAULT_RULE_NAME else f"rule {rule.name}"


def _forced_rule(limit: int, window: float) -> Rule:
    """The budget a forced restore counts against: the settings' default, whatever the rules."""
    return default_policy(limit, window).rules[0]


def _store_down(exc: StoreUnavailable) -> Verdict:
    # The exception names the store's host or path: the log line gets it, the caller does not.
    return Verdict(
        "retryable_error",
        "state store unavailable, nothing called",
        {"errorCode": "StoreUnavailable"},
        detail=str(exc),
    )


def _names(item: Item) -> dict[str, Any]:
    """The execution a record is for, kept beside its outcome: ``state`` shows it, and an id
    reused for another execution is told apart by it (see _recorded_for_another)."""
    return {"graphName": item.graph_name, "executionName": item.execution_name}


def _recorded_for_another(record: dict[str, Any] | None, item: Item) -> bool:
    """Whether ``record`` is the outcome of another execution than ``item``'s.

    A record without names (written before records carried them) cannot tell: it answers
    as before, for at most its retention.
    """
    if not record or record.get("graphName") is None or record.get("executionName") is None:
        return False
    return (record["graphName"], record["executionName"]) != (
        item.graph_name,
        item.execution_name,
    )


def _duplicate_of(record: dict[str, Any]) -> Verdict:
    """A redelivery answers with what the first delivery recorded."""
    keys = (
        "status", "requestId", "executionUrn", "restoredAt", "errorCode", "errorMessage", "rule",
    )  # fmt: skip
    fields = {k: record.get(k) for k in keys}
    return Verdict(
        "duplicate",
        f"already handled: {record.get('outcome', 'unknown')}",
        {k: v for k, v in fields.items() if v is not None},
    )


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
