"""Admission: whether an item may call restore, decided from what is known before it is sent.

Two steps, with the item's facts gathered between them by its caller, never by calling back:

1. :meth:`Admission.enter` - the door: an item the intake skipped or rejected ends here; the
   graph allowlist (``RESTORE_GRAPH_ALLOWLIST``); deduplication by the item's identity (an
   in-progress marker is claimed, so a redelivery of an item in flight or finished never
   calls the API again; an id reused for another execution gets a key of its own); and, for a
   sweep's item, the grace after a recent restore. What passes holds a claim (:class:`Hold`).
2. :meth:`Admission.decide` - the restore rules (:mod:`handler.rules`: the first rule that
   matches the graph and the failure's error text decides - left alone, not due yet, or
   restored within the rule's budget, reserved atomically so concurrent deliveries cannot
   exceed it). :meth:`Admission.decide_forced` is an operator's ``--force``: the budget only.

Both answer a :class:`~handler.pipeline.settlement.Verdict` that ends the item (with what the
store must do about its hold) or, from ``decide``, a :class:`Ticket` to go ahead. The facts
(:class:`FailureFacts`: the error text and stop time a query gave) are asked for only when
:meth:`Admission.needs_facts` says the rules need them.

A new check that stops calls - a pause - goes into :meth:`Admission.decide`, after the
rules and before the budget reservation (see the marked step there): it answers
``Verdict(Outcome.RETRYABLE_ERROR, Settlement.RELEASED, ...)`` so the marker is released and
the platform delivers again, and no unit is reserved.

Outage mode (:mod:`handler.outage`) is the last step, in :meth:`Admission._outage_hold`: the
breaker (with its watch over an execution that re-failed) and the shared restore rate, asked
after the budget unit is reserved (so a rate slot is never spent on an item its budget
stops) and answered with the unit refunded. A held item
ends ``deferred`` and is remembered with its due time, so the sweep restores it when due.
Before the rules' spacing is judged, a failure of an execution restored before is told to
the breaker (:meth:`Admission._note_refailure`): re-failures are what open it.

Fail closed: if the store cannot be reached nothing is called and the item ends
``retryable_error``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import NamedTuple

from handler.intake import Item
from handler.intake.identity import reused_identity
from handler.outage import Admission as OutageAdmission
from handler.outage import BreakerEvent, Outage
from handler.outcomes import Outcome, recorded_for
from handler.pipeline.deferred import Deferral, DeferredFailures
from handler.pipeline.pauses import ALL_GRAPHS, HOLD_PAUSED
from handler.pipeline.settlement import Hold, Settlement, Verdict
from handler.rules import DEFAULT_RULE_NAME, Match, Rule, default_rules
from handler.settings import Settings
from handler.store import StateStore, StoreUnavailable
from handler.store.base import BUSY
from handler.sweep import SWEEP


class FailureFacts(NamedTuple):
    """What the service says about why (and when) an execution failed, for the rules."""

    errors: tuple[str, ...] | None  # the failed nodes' messages; None: the API gives none
    problem: str | None = None  # the query failed transiently: decide on a later delivery
    error_code: str | None = None
    stopped_at: float | None = None  # when it stopped (epoch seconds), if the query said


NO_FACTS = FailureFacts(None)  # what is known of a failure the API says nothing about


class Ticket(NamedTuple):
    """Permission to call restore for one item: its hold, with the reserved unit."""

    hold: Hold
    rule: str | None = DEFAULT_RULE_NAME  # the rule that allowed the restore (None: forced)
    # A restore of this execution was accepted, or sent without an answer, within the rule's
    # window: the caller asks the service before sending another.
    restored_before: bool = False
    # What outage mode gave this restore (a rate slot, maybe the canary): given back when the
    # restore is not sent or is refused (Admission.give_back).
    outage: OutageAdmission | None = None


class Admission:
    """The admission gate over one state store; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        deferred: DeferredFailures,
        clock: Callable[[], float] = time.time,
        *,
        outage: Outage | None = None,
        breaker_log: Callable[[BreakerEvent], None] | None = None,
    ) -> None:
        self._settings = settings
        self._outage = outage or Outage(settings.outage, store, clock)
        # Where a breaker's open and close lines go (the reporter); dropped when not given.
        self._breaker_log = breaker_log or (lambda event: None)
        self._store = store
        self._deferred = deferred
        self._rules = settings.rules
        # Wall-clock seconds; must be the store's clock, since spacing compares the two.
        self._clock = clock
        # Every rule counts the execution's restores, whichever rule made them: a reservation
        # is kept for the longest window anything counts with (the rules', the sweep grace).
        self._budget_keep = max(
            [rule.window for rule in self._rules.rules] + [settings.sweep_grace]
        )

    # --- 1. the door ---------------------------------------------------------------------

    def enter(
        self, item: Item, claim_ttl: float | None = None, *, forced: bool = False
    ) -> Hold | Verdict:
        """The item's claim (:class:`Hold`), or the Verdict that ends it at the door.

        ``forced`` (an operator's ``--force``) skips the allowlist; everything else holds."""
        if item.verdict == "skip":
            return Verdict(Outcome.SKIPPED, reason=item.reason)
        if item.verdict == "reject":
            return Verdict(Outcome.REJECTED, reason=item.reason)
        assert item.graph_name is not None and item.execution_name is not None
        if not forced and not self._settings.graph_allowed(item.graph_name):
            return Verdict(Outcome.SKIPPED, reason="graph is not in RESTORE_GRAPH_ALLOWLIST")
        ttl = claim_ttl or self._settings.claim_ttl
        try:
            claim = self._store.claim(item.event_id, ttl)
            if claim.state == "done" and _recorded_for_another(claim.record, item):
                # The id was used before for another execution: that outcome is not this
                # one's. The item gets a key of its own, so its redeliveries still dedupe.
                own_key = reused_identity(item.event_id, item.graph_name, item.execution_name)
                item = item._replace(event_id=own_key)
                claim = self._store.claim(item.event_id, ttl)
        except StoreUnavailable as exc:
            return _store_down(exc)
        if claim.state == "done":
            record = claim.record or {}
            reason = f"already handled: {record.get('outcome', 'unknown')}"
            return Verdict(Outcome.DUPLICATE, reason=reason, recorded=record)
        if not claim.acquired:
            # Not final: if that invocation dies, only a redelivery can still restore this item.
            return Verdict(
                Outcome.DUPLICATE, reason="in progress in another invocation", redeliver=True
            )
        hold = Hold(item, claim.token, self._retention(item), ttl)
        if item.shape == SWEEP and self._settings.sweep_grace > 0:
            recent = self._recently_restored(hold)
            if recent is not None:
                return recent
        return hold

    def needs_facts(self, hold: Hold) -> bool:
        """Whether the rules need what a query of the execution says: its error text (a rule
        has error patterns), or its stop time (a rule's ``first`` delay, for an item that
        does not carry one)."""
        if self._rules.needs_error_text:
            return True
        return hold.item.failed_at is None and self._rules.needs_stop_time

    # --- 2. the rules and the budget -----------------------------------------------------

    def decide(
        self, hold: Hold, facts: FailureFacts = NO_FACTS, *, dry_run: bool = False
    ) -> Ticket | Verdict:
        """A Ticket to go ahead, or the Verdict that ends the item, from the rules, the
        spacing and the budget. ``dry_run`` makes this one item a dry run even when
        ``RESTORE_DRY_RUN`` is off."""
        dry_run = self._settings.dry_run or dry_run
        try:
            return self._decide(hold, facts, dry_run=dry_run)
        except StoreUnavailable as exc:
            return _store_down(exc, hold)

    def decide_forced(self, hold: Hold, *, dry_run: bool = False) -> Ticket | Verdict:
        """An operator's forced restore (``restore --force``): a Ticket, or the Verdict.

        The allowlist and the rules' decision (patterns, spacing) are skipped - the operator
        has decided - but the rest is an event's: the identity is claimed, a unit of the
        execution's budget (``RESTORE_MAX_RESTORES`` within ``RESTORE_BUDGET_WINDOW``) is
        reserved and the outcome recorded, so a forced restore counts against the loop limit
        like any other. It never lifts that limit: ``state reset-budget`` is the explicit way.
        """
        item = hold.item
        subject = f"{item.graph_name}/{item.execution_name}"
        limit, window = self._settings.max_restores, self._settings.budget_window
        budget = default_rules(limit, window).rules[0]  # the settings' budget, whatever the rules
        dry_run = self._settings.dry_run or dry_run
        try:
            times = self._store.budget_times(subject, window)
            if len(times) >= limit > self._store.budget_used(subject, window, spent_only=True):
                return _busy(hold, budget, None)
            token = None
            if len(times) < limit and not dry_run:
                reservation = self._store.reserve_budget(
                    subject, limit, window, in_flight=hold.ttl, keep=self._budget_keep
                )
                if reservation.state == BUSY:
                    return _busy(hold, budget, None)
                token = reservation.token if reservation.reserved else None
            if token is not None:
                reserved = hold._replace(subject=subject, budget_token=token)
                return Ticket(reserved, None, restored_before=bool(times))
            if dry_run and len(times) < limit:
                return Verdict(
                    Outcome.DRY_RUN,
                    Settlement.RELEASED,
                    f"dry run: a forced restore would be sent (restore {len(times) + 1} of "
                    f"{limit} within RESTORE_BUDGET_WINDOW)",
                    hold=hold,
                )
            return Verdict(
                Outcome.BUDGET_EXHAUSTED,
                Settlement.RELEASED if dry_run else Settlement.RECORDED,
                f"{limit} restores of this execution within {window:g}s already "
                f"(RESTORE_MAX_RESTORES): --force does not lift the budget, "
                f"`state reset-budget {subject}` does",
                hold=hold,
            )
        except StoreUnavailable as exc:
            return _store_down(exc, hold)

    def _decide(self, hold: Hold, facts: FailureFacts, *, dry_run: bool) -> Ticket | Verdict:
        """Match the rules, then check the matching rule's spacing and budget."""
        item = hold.item
        assert item.graph_name is not None
        errors: tuple[str, ...] | None = None
        if self._rules.needs_error_text:
            if facts.problem is not None:
                return Verdict(
                    Outcome.RETRYABLE_ERROR,
                    Settlement.RELEASED,
                    f"the failure's error text is needed by a rule but could not be read: "
                    f"{facts.problem}",
                    error_code=facts.error_code or "ErrorTextUnavailable",
                    hold=hold,
                )
            errors = facts.errors
        match = self._rules.match(item.graph_name, errors)
        if match.rule is None or match.leave:
            return _left_alone(hold, match, dry_run=dry_run)
        stopped_at = item.failed_at if item.failed_at is not None else facts.stopped_at
        return self._when_due(hold, match, stopped_at, dry_run=dry_run)

    def _when_due(
        self, hold: Hold, match: Match, stopped_at: float | None, *, dry_run: bool
    ) -> Ticket | Verdict:
        """Restore now if the rule's budget has room and its spacing says the time has come.

        Not due yet ends ``deferred`` and releases the marker rather than recording an
        outcome: the sweep that finds the same failure later (its own identity, or this one
        redelivered) must still be able to restore it. The unit is reserved in flight for
        the claim's TTL, which the restore call never outlives.
        """
        rule = match.rule
        assert rule is not None
        item = hold.item
        subject = f"{item.graph_name}/{item.execution_name}"
        note = f" ({match.note})" if match.note else ""
        times = self._store.budget_times(subject, rule.window)
        refailed = False
        if times and not dry_run:  # a dry run changes nothing, a breaker least of all
            stopped_at = self._note_refailure(subject, item, rule, times[-1], stopped_at)
            refailed = stopped_at is not None and stopped_at > times[-1]
        if len(times) >= rule.max_restores:
            spent = self._store.budget_used(subject, rule.window, spent_only=True)
            if spent < rule.max_restores:
                return _busy(hold, rule, rule.name)
            return _exhausted(hold, rule)
        now = self._clock()
        failed_at = None
        if not times and rule.spacing.first > 0:
            failed_at = self._failure_time(subject, rule, stopped_at)
        due = self.due_time(rule, subject, times, failed_at, now)
        if due > now:
            if not dry_run:  # a dry run leaves nothing to do later
                self._deferred.remember(item, due)
            return Verdict(
                Outcome.DEFERRED,
                Settlement.RELEASED,
                f"next restore due at {_iso(due)} (in {due - now:.0f}s): rule {rule.name}, "
                f"restore {len(times) + 1} of {rule.max_restores}{note}",
                rule=rule.name,
                hold=hold,
            )
        if dry_run:
            # Say which switch it was: a sweep's --dry-run (or dryRun) leaves the setting off.
            why = "RESTORE_DRY_RUN is on" if self._settings.dry_run else "a dry run was asked for"
            return Verdict(
                Outcome.DRY_RUN,
                Settlement.RELEASED,
                f"{why}: restore not called (rule {rule.name}){note}",
                rule=rule.name,
                hold=hold,
            )
        # A check that stops calls for a while (a pause) goes here: after the rules, before
        # a unit is reserved. It answers
        # Verdict(Outcome.RETRYABLE_ERROR, Settlement.RELEASED, why, hold=hold).
        paused = self._paused_by_operator(hold, rule.name)
        if paused is not None:
            return paused
        reservation = self._store.reserve_budget(
            subject, rule.max_restores, rule.window, in_flight=hold.ttl, keep=self._budget_keep
        )
        if reservation.state == BUSY:
            return _busy(hold, rule, rule.name)
        if not reservation.reserved:
            return _exhausted(hold, rule)
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
                self._deferred.remember(item, now)  # decided again by the next sweep
                return Verdict(
                    Outcome.DEFERRED,
                    Settlement.RELEASED,
                    f"another restore of this execution was reserved at the same moment: "
                    f"rule {rule.name} spaces restores{note}",
                    rule=rule.name,
                    hold=hold,
                )
        held = self._outage_hold(
            hold, rule, subject, budget_token, note, stopped_at, refailed=refailed
        )
        if isinstance(held, Verdict):
            return held
        reserved = hold._replace(subject=subject, budget_token=budget_token)
        return Ticket(reserved, rule.name, restored_before=bool(times), outage=held)

    # --- outage mode (handler.outage) ----------------------------------------------------

    def _outage_hold(
        self,
        hold: Hold,
        rule: Rule,
        subject: str,
        budget_token: str,
        note: str,
        stopped_at: float | None,
        *,
        refailed: bool = False,
    ) -> OutageAdmission | Verdict:
        """The breaker (and its watch over a re-failed execution: ``refailed``) and the rate,
        last: what they give (a slot, maybe the canary), or the ``deferred`` Verdict with the
        budget unit refunded and the item remembered until its due time - the sweep then
        restores it, with the same identity (nothing lost, and dedupe still holds, so nothing
        doubled)."""
        item = hold.item
        assert item.graph_name is not None and item.execution_name is not None
        try:
            admitted = self._outage.admit(
                item.graph_name, item.execution_name, threshold=rule.breaker, refailed=refailed
            )
            if admitted.allowed:
                return admitted
            assert admitted.due_at is not None
            self._store.refund_budget(subject, budget_token)
            # Remembered with when it failed (or was first seen): when it comes due after a
            # later restore - the canary's - it must not read as a failure after that restore.
            seen = stopped_at if stopped_at is not None else self._clock()
            deferral = Deferral(
                admitted.hold,
                f"{admitted.reason} (rule {rule.name}){note}",
                rule.name,
                _HOLD_CODES.get(admitted.hold),
            )
            self._deferred.remember(item._replace(failed_at=seen), admitted.due_at, deferral)
        except StoreUnavailable:
            # Fail closed: nothing is sent; the unit goes back if the store takes it (else it
            # frees itself after the claim's TTL, as every unit in flight does).
            with contextlib.suppress(StoreUnavailable):
                self._store.refund_budget(subject, budget_token)
            raise
        return Verdict(
            Outcome.DEFERRED,
            Settlement.RELEASED,
            deferral.reason,
            rule=deferral.rule,
            error_code=deferral.error_code,
            hold=hold,
        )

    def _note_refailure(
        self, subject: str, item: Item, rule: Rule, last_restore_at: float, stopped_at: float | None
    ) -> float | None:
        """Tell the breaker of a failure of an execution restored before: when it stopped
        (the item's or the query's stop time, else when this failure was first seen after
        that restore), so a failure after its restore counts as a re-failure. Returns the
        stop time it went by."""
        assert item.graph_name is not None and item.execution_name is not None
        threshold = rule.breaker
        if threshold is None:
            threshold = self._settings.outage.breaker_threshold
        if threshold < 1:
            return stopped_at  # no breaker for this failure: no store call either
        if stopped_at is None:
            retention = max(self._settings.dedupe_retention, self._settings.outage.breaker_window)
            stopped_at = self._store.first_seen(subject, retention, after=last_restore_at)
        event = self._outage.failure_seen(
            item.graph_name,
            item.execution_name,
            stopped_at=stopped_at,
            last_restore_at=last_restore_at,
            threshold=rule.breaker,
        )
        if event is not None:
            self._breaker_log(event)
        return stopped_at

    def give_back(self, ticket: Ticket) -> None:
        """Return the rate slot (and canary) of a ticket whose restore was not sent or was
        refused: the rate counts restores the service accepted. Never raises."""
        if ticket.outage is not None:
            self._outage.give_back(ticket.outage)

    def _paused_by_operator(self, hold: Hold, rule_name: str) -> Verdict | None:
        """``deferred`` while an operator's pause (``pause GRAPH|--all``) holds the graph.

        The failure is remembered due at once, so every sweep decides it again: the first one
        after the pause ends - resumed, or expired by itself - restores it. Released, not
        recorded, so a redelivery or the sweep's own find of it can still restore it."""
        item = hold.item
        pauses = self._store.pauses()
        pause = pauses.get(str(item.graph_name)) or pauses.get(ALL_GRAPHS)
        if pause is None:
            return None
        until = pause.get("until")
        until_text = _iso(until) if isinstance(until, (int, float)) else "unknown"
        scope = "every graph" if pause is pauses.get(ALL_GRAPHS) else f"graph {item.graph_name}"
        why = pause.get("reason") or "no reason given"
        reason = (
            f"paused: {scope} paused by {pause.get('by') or 'unknown'} until {until_text}: "
            f"{why}; restored by the first sweep after it ends"
        )
        self._deferred.remember(item, self._clock(), Deferral(HOLD_PAUSED, reason, rule_name))
        return Verdict(Outcome.DEFERRED, Settlement.RELEASED, reason, rule=rule_name, hold=hold)

    def _failure_time(self, subject: str, rule: Rule, stopped_at: float | None) -> float:
        """What a rule's ``first`` delay counts from: when the failure stopped, if the item
        or the service says it, else when the store first saw this failure - each event of
        one failure must find the same reference, or one arriving more often than ``first``
        would be deferred forever. A sighting before the execution's last restore belonged
        to an earlier failure."""
        if stopped_at is not None:
            return stopped_at
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

    def _recently_restored(self, hold: Hold) -> Verdict | None:
        """A sweep leaves alone an execution restored within the grace period.

        List answers lag behind restores, and a just-restored execution may still read as
        failed for a moment; a second restore then could be accepted. The marker is released,
        not recorded: if the execution really failed again, the next sweep restores it. A
        failure that stopped after the last restore is no stale answer (only the restored run
        can have failed then), so the grace does not hold up a rule's shorter spacing.
        """
        item = hold.item
        subject = f"{item.graph_name}/{item.execution_name}"
        grace = self._settings.sweep_grace
        try:
            recent = self._store.budget_times(subject, grace)
        except StoreUnavailable as exc:
            return _store_down(exc, hold)
        if not recent or (item.failed_at is not None and item.failed_at > recent[-1]):
            return None
        return Verdict(
            Outcome.SKIPPED,
            Settlement.RELEASED,
            f"restored within the last {grace:g}s (RESTORE_SWEEP_GRACE); "
            "the next sweep looks again",
            hold=hold,
        )

    def _retention(self, item: Item) -> float:
        """A request without an id of its own is only its content: the same content an hour
        later is a new failure of the same execution, not a redelivery."""
        if item.identified_by_content:
            return self._settings.plain_dedupe_window
        return self._settings.dedupe_retention


# What holds a deferred item, as its error code: an operator filters the log by it.
_HOLD_CODES = {
    "breaker": "BreakerOpen",
    "watch": "BreakerWatch",
    "systemic": "SystemicOutage",
    "rate": "RateLimited",
}


def _left_alone(hold: Hold, match: Match, *, dry_run: bool) -> Verdict:
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
    return Verdict(
        Outcome.SKIPPED,
        Settlement.RELEASED if dry_run else Settlement.RECORDED,
        reason,
        rule=match.rule.name if match.rule else None,
        hold=hold,
    )


def _exhausted(hold: Hold, rule: Rule) -> Verdict:
    """Restores that were accepted or may have been applied fill the budget: final."""
    return Verdict(
        Outcome.BUDGET_EXHAUSTED,
        Settlement.RECORDED,
        f"{rule.max_restores} restores of this execution within "
        f"{rule.window:g}s already ({_budget_source(rule)})",
        rule=rule.name,
        hold=hold,
    )


def _busy(hold: Hold, rule: Rule, rule_name: str | None) -> Verdict:
    """Only restores still in flight fill the budget: none of them has restored anything
    yet, and each may still be refunded, so this item is retried, not decided."""
    return Verdict(
        Outcome.RETRYABLE_ERROR,
        Settlement.RELEASED,
        f"restores of this execution still in flight fill the budget of "
        f"{rule.max_restores} within {rule.window:g}s ({_budget_source(rule)}); "
        "none has been applied yet: deliver again",
        rule=rule_name,
        error_code="BudgetInFlight",
        redeliver=True,
        hold=hold,
    )


def _budget_source(rule: Rule) -> str:
    return "RESTORE_MAX_RESTORES" if rule.name == DEFAULT_RULE_NAME else f"rule {rule.name}"


def _store_down(exc: StoreUnavailable, hold: Hold | None = None) -> Verdict:
    # The exception names the store's host or path: the log line gets it, the caller does not.
    return Verdict(
        Outcome.RETRYABLE_ERROR,
        Settlement.RELEASED if hold is not None else Settlement.NONE,
        "state store unavailable, nothing called",
        error_code="StoreUnavailable",
        detail=str(exc),
        hold=hold,
    )


def _recorded_for_another(record: dict | None, item: Item) -> bool:
    """Whether ``record`` is the outcome of another execution than ``item``'s.

    A record without names (written before records carried them) cannot tell: it answers
    as before, for at most its retention.
    """
    names = recorded_for(record)
    return names is not None and names != (item.graph_name, item.execution_name)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
