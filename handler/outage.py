"""Outage mode: a restore rate shared by every instance, and a circuit breaker per graph.

On the day a shared downstream (a database, a bucket, a quota) breaks, hundreds of executions
fail within minutes. Judged one by one, each is restored, fails again, and is restored again
until every budget is spent - a restore storm that adds load to the outage and then gives up
on every failure just as the downstream comes back. Two decisions stop it; this module makes
them and nothing else. It does no I/O of its own: it asks the state store (whose calls are
atomic across instances, :mod:`handler.store.base`) and a clock, and it answers with values
the admission stage acts on and events the reporter logs.

* **The rate** (:class:`RateLimit`, ``RESTORE_RATE_LIMIT``): at most N restores per second,
  minute or hour across every instance, a sliding window (never more than N in *any*
  interval). An item over it is deferred until a slot frees. The default, ``60/m``, never
  slows a healthy day: a full sweep (``RESTORE_SWEEP_MAX_RESTORES``, 50, every 10 minutes -
  5 a minute on average) fits in one minute's slots, and a burst of up to 60 events is not
  delayed at all. It bounds what nothing else bounds: the first wave of an outage, before
  any restore has failed again - 60 restores a minute (a storm of 5,000 failures takes 84
  minutes at full rate, instead of arriving in seconds).
* **The breaker** (:class:`Outage`, ``RESTORE_BREAKER_*``): a *re-failure* is a failure of an
  execution whose last accepted restore came before the failure stopped. When
  ``RESTORE_BREAKER_THRESHOLD`` (5) distinct executions of one graph re-fail within
  ``RESTORE_BREAKER_WINDOW`` (15m), the graph's breaker opens and its items are deferred.
  From its second re-failed execution until then the graph is *watched*: a re-failed
  execution waits a cooldown from its re-failure before it is restored again (restoring it
  again would tell the breaker nothing), so the breaker judges the graph on new executions,
  not on the same one restored again.
  After ``RESTORE_BREAKER_COOLDOWN`` (10m) exactly one execution, across instances, is
  restored as a canary; judged again at least a cooldown later, a canary that is not failed
  closes the breaker (the held failures come back under the rate), one that failed again
  reopens it with the cooldown doubled, up to :data:`COOLDOWN_CAP` (1h, or the cooldown when
  that is longer): a canary costs one restore, so an hour between canaries wastes at most 24
  restores a day per broken graph, while recovery is seen at most about two hours after the
  downstream is fixed (a capped cooldown to the canary, and as long again before it is
  judged). When ``RESTORE_BREAKER_GLOBAL`` (3) graphs are open at once the outage is
  systemic: every other graph is held too, while the open ones keep sending their canaries
  (the only way out).

Order, for the admission stage: the breaker, the watch, the systemic hold, then the rate - the rate
slot is taken last, so no slot is spent on an item something else holds. Every method may
raise :class:`~handler.store.StoreUnavailable` except :meth:`Outage.give_back`: the stage
fails closed (``retryable_error``), as for every other store answer.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, NamedTuple

from handler.store import StateStore, StoreUnavailable
from handler.store.base import HALF_OPEN, OPEN, BreakerState

DEFAULT_RATE_LIMIT = "60/m"
DEFAULT_BREAKER_WINDOW = 900.0
DEFAULT_BREAKER_THRESHOLD = 5
DEFAULT_BREAKER_COOLDOWN = 600.0
DEFAULT_BREAKER_GLOBAL = 3
COOLDOWN_CAP = 3600.0  # a doubled cooldown stops growing here (see the module docstring)
MAX_RATE = 10_000  # slots per interval: what the store's sliding log holds per subject
RATE_SUBJECT = "restores"  # one rate for every graph: the service and its downstreams are shared
EVIDENCE_SHOWN = 5  # re-failures a log message names (the fields carry up to EVIDENCE_KEPT)
EVIDENCE_KEPT = 50
# Distinct re-failed executions from which a graph is watched: one alone may be one flaky
# execution, two are the start of a pattern (see Outage._watched).
WATCHED_FROM = 2

RESTORE = "restore"
CANARY = "canary"
DEFERRED = "deferred"
HOLD_BREAKER = "breaker"
HOLD_SYSTEMIC = "systemic"
HOLD_WATCH = "watch"
HOLD_RATE = "rate"

_RATE = re.compile(r"(\d{1,6})\s*/\s*([smh])")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_OFF = ("", "off", "none")


class RateLimit(NamedTuple):
    """``limit`` restores per ``interval`` seconds across every instance."""

    limit: int
    interval: float

    @classmethod
    def parse(cls, text: str) -> RateLimit | None:
        """``N/s``, ``N/m`` or ``N/h`` (N from 1 to 10,000); empty, ``off`` or ``none``: no
        limit (None). Raises ValueError saying the accepted forms, never echoing more than
        40 characters."""
        value = text.strip().lower()
        if value in _OFF:
            return None
        match = _RATE.fullmatch(value)
        if match is None or not 1 <= int(match.group(1)) <= MAX_RATE:
            raise ValueError(
                f"must be N/s, N/m or N/h with N from 1 to {MAX_RATE:,} (or empty/off for no "
                f"limit), got {text[:40]!a}"
            )
        return cls(int(match.group(1)), _UNITS[match.group(2)])

    def __str__(self) -> str:
        unit = next(name for name, seconds in _UNITS.items() if seconds == self.interval)
        return f"{self.limit}/{unit}"


class OutageSettings(NamedTuple):
    """The five settings of outage mode, validated by :mod:`handler.settings`."""

    rate_limit: RateLimit | None = RateLimit(60, 60.0)
    breaker_window: float = DEFAULT_BREAKER_WINDOW
    breaker_threshold: int = DEFAULT_BREAKER_THRESHOLD  # 0: no breaker
    breaker_cooldown: float = DEFAULT_BREAKER_COOLDOWN
    breaker_global: int = DEFAULT_BREAKER_GLOBAL  # 0: no systemic hold

    @property
    def max_cooldown(self) -> float:
        """How long a doubled cooldown may grow: the cap, or the cooldown when longer."""
        return max(self.breaker_cooldown, COOLDOWN_CAP)

    def summary(self) -> dict[str, Any]:
        """For the start-up log line."""
        return {
            "rateLimit": str(self.rate_limit) if self.rate_limit else None,
            "breakerWindowSeconds": self.breaker_window,
            "breakerThreshold": self.breaker_threshold,
            "breakerCooldownSeconds": self.breaker_cooldown,
            "breakerMaxCooldownSeconds": self.max_cooldown,
            "breakerGlobal": self.breaker_global,
        }


class Admission(NamedTuple):
    """May this item restore now? ``decision`` is ``restore``, ``canary`` (restore it: it is
    the breaker's canary) or ``deferred`` (until ``due_at``, ``reason`` saying why, ``hold``
    naming what holds it: ``breaker``, ``watch``, ``systemic`` or ``rate``).

    An admitted item holds a rate slot (``rate_token``) and, as a canary, the canary
    (``canary_token``): :meth:`Outage.give_back` returns them when the restore is not sent or
    is refused.
    """

    decision: str
    graph: str
    due_at: float | None = None
    reason: str = ""
    hold: str = ""
    rate_token: str = ""
    canary_token: str = ""

    @property
    def allowed(self) -> bool:
        return self.decision != DEFERRED


class Canary(NamedTuple):
    """A half-open breaker's canary, due to be judged (:meth:`Outage.canary_due`)."""

    graph: str
    execution: str
    token: str
    restored_at: float
    judged_at: float
    opened_at: float


class Holding(NamedTuple):
    """Which graphs the breakers hold now with no decision to take (:meth:`Outage.holding`):
    those whose breaker is half-open, or open with its canary not yet due, and - while the
    outage is systemic - every other graph too; never an open graph whose canary is due (an
    item of it may be the canary, the only way out).

    While a graph is held so, admitting its failures again can only defer them again until
    their due time: a sweep answers those already deferred and not yet due without doing
    so (:mod:`handler.pipeline.sweeper`)."""

    open: frozenset[str]
    systemic: bool
    canary_due: frozenset[str]

    def holds(self, graph: str) -> bool:
        if graph in self.canary_due:
            return False
        return self.systemic or graph in self.open


class BreakerEvent(NamedTuple):
    """One breaker transition, for one log line: ``opened`` and ``reopened`` at WARNING with
    the evidence, ``closed`` at INFO. Exactly one instance gets each (the store says which)."""

    kind: str
    graph: str
    level: int
    message: str
    fields: Mapping[str, Any] = MappingProxyType({})  # read-only: shared by every event

    def log_fields(self) -> dict[str, Any]:
        """The structured fields of the log line (JSON-ready)."""
        return {"event": f"breaker {self.kind}", "graphName": self.graph, **self.fields}


class Outage:
    """The rate and the breakers over one state store; ``clock`` is the store's.

    ``threshold`` arguments are a rule's own breaker threshold (None: the setting's; 0: the
    rule turns the breaker off - its items are neither counted nor held)."""

    def __init__(
        self,
        settings: OutageSettings,
        store: StateStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._store = store
        self._clock = clock

    # --- admission ------------------------------------------------------------------------

    def admit(
        self,
        graph: str,
        execution: str,
        *,
        threshold: int | None = None,
        refailed: bool = False,
    ) -> Admission:
        """Whether ``execution`` of ``graph`` may be restored now: yes; yes as the canary
        (taken atomically: one caller per cooldown across instances); or deferred, with the
        due time and the reason. ``refailed``: this failure is a re-failure (it stopped after
        the execution's last restore), so the watch may hold it. Call it after every check
        that could still stop the item (rules, spacing, budget): it takes a rate slot and
        maybe the canary."""
        canary = ""
        if self._threshold(threshold) > 0:
            # One read answers both: this graph's breaker, and how many are open at once.
            open_now = self._store.breakers_open()
            state = next((b for b in open_now if b.graph == graph), BreakerState(graph))
            now = self._clock()
            next_canary = state.next_canary_at
            if next_canary is not None and now >= next_canary:
                state = self._store.take_canary(
                    graph, execution, window=self.settings.breaker_window
                )
                canary = state.canary_token if state.changed else ""
            if not canary:
                held = self._held(state, open_now, now, execution if refailed else None)
                if held is not None:
                    return held
        try:
            return self._within_rate(graph, canary)
        except StoreUnavailable:
            self._release_canary(graph, canary)
            raise

    def give_back(self, admission: Admission) -> None:
        """Return what an admitted item holds, when its restore was not sent, or was answered
        with a definite refusal or a transient error (what refunds a budget unit): the rate
        counts restores the service accepted, and a canary whose restore did not happen tests
        nothing. Never raises: a slot the store did not take back frees itself after one
        interval, a canary that was not given back is judged as never restored."""
        with contextlib.suppress(StoreUnavailable):
            if admission.rate_token and self.settings.rate_limit is not None:
                self._store.return_rate_slot(RATE_SUBJECT, admission.rate_token)
        self._release_canary(admission.graph, admission.canary_token)

    # --- what the failures tell ---------------------------------------------------------

    def failure_seen(
        self,
        graph: str,
        execution: str,
        *,
        stopped_at: float,
        last_restore_at: float | None,
        threshold: int | None = None,
    ) -> BreakerEvent | None:
        """A failure of ``execution`` that stopped at ``stopped_at`` (from the list, the
        query, or when first seen): a re-failure if its last accepted restore
        (``last_restore_at``) came before. Counted for the graph's breaker; the event when
        this opened it, or when it was the canary failing again (reopened, cooldown doubled).
        """
        if self._threshold(threshold) < 1 or last_restore_at is None:
            return None
        if not stopped_at > last_restore_at:
            return None  # it failed before its last restore: not a re-failure
        window = self.settings.breaker_window
        state = self._store.breaker(graph, window=window)
        if (
            state.state == HALF_OPEN
            and state.canary_execution == execution
            and state.canary_at is not None
            and stopped_at > state.canary_at
        ):
            return self._reopen(state.graph, state.canary_token, execution, stopped_at)
        recorded = self._store.record_refailure(
            graph,
            execution,
            stopped_at,
            window=window,
            threshold=self._threshold(threshold),
            cooldown=self.settings.breaker_cooldown,
        )
        return self._opened(recorded, self._threshold(threshold)) if recorded.changed else None

    def canary_due(self, graph: str) -> Canary | None:
        """The canary to look at now: ``graph``'s breaker is half-open and its canary was
        restored at least a cooldown ago. The caller queries the execution, then calls
        :meth:`canary_looked_at`."""
        state = self._store.breaker(graph, window=self.settings.breaker_window)
        judged_at = state.canary_judged_at
        if judged_at is None or self._clock() < judged_at:
            return None
        assert state.canary_execution is not None and state.canary_at is not None
        assert state.opened_at is not None
        return Canary(
            graph,
            state.canary_execution,
            state.canary_token,
            state.canary_at,
            judged_at,
            state.opened_at,
        )

    def canary_looked_at(
        self, canary: Canary, *, failed: bool, stopped_at: float | None = None
    ) -> BreakerEvent | None:
        """The canary's execution was looked at again. Not failed (and at least a cooldown
        after its restore): the breaker closes. Failed after its restore (``stopped_at``
        later than the restore, or unknown - OBS gives no stop time): it reopens with the
        cooldown doubled. Failed with a stop time before the restore: the restore never
        reached it, so the canary is given back for the next item to take. The event, for
        the one instance that made the transition."""
        if not failed:
            if self._clock() < canary.judged_at:
                return None  # too early to call the downstream healthy
            return self._closed(canary)
        if stopped_at is not None and stopped_at <= canary.restored_at:
            self._release_canary(canary.graph, canary.token)
            return None
        return self._reopen(canary.graph, canary.token, canary.execution, stopped_at)

    def open_graphs(self) -> list[str]:
        """The graphs whose breaker is open or half-open, the longest open first: the sweep
        looks at their canaries."""
        return [state.graph for state in self._store.breakers_open()]

    def holding(self) -> Holding:
        """What the breakers hold now with no decision to take (:class:`Holding`); one
        store read."""
        if self.settings.breaker_threshold < 1:
            return Holding(frozenset(), systemic=False, canary_due=frozenset())
        open_now = self._store.breakers_open()
        now = self._clock()
        canary_due = frozenset(
            state.graph
            for state in open_now
            if state.next_canary_at is not None and now >= state.next_canary_at
        )
        return Holding(
            frozenset(state.graph for state in open_now),
            systemic=self._systemic(open_now),
            canary_due=canary_due,
        )

    # --- for operators ----------------------------------------------------------------------

    def state(self, graph: str) -> dict[str, Any]:
        """The breaker and rate state ``policy explain`` shows (JSON-ready)."""
        breaker = self._store.breaker(graph, window=self.settings.breaker_window)
        open_now = self._store.breakers_open()
        rate = self.settings.rate_limit
        return {
            "breaker": {
                "state": breaker.state,
                "openedAt": _iso(breaker.opened_at),
                "cooldownSeconds": breaker.cooldown,
                "nextCanaryAt": _iso(breaker.next_canary_at),
                "canaryExecution": breaker.canary_execution,
                "canaryJudgedAt": _iso(breaker.canary_judged_at),
                "refailures": len(breaker.refailures),
                "threshold": self.settings.breaker_threshold,
                "windowSeconds": self.settings.breaker_window,
            },
            "graphsOpen": [state.graph for state in open_now],
            "systemicHold": self._systemic(open_now),
            "rate": {
                "limit": str(rate) if rate else None,
                "used": self._store.rate_used(RATE_SUBJECT, rate.interval) if rate else None,
            },
        }

    # --- internals --------------------------------------------------------------------------

    def _threshold(self, override: int | None) -> int:
        return self.settings.breaker_threshold if override is None else max(override, 0)

    def _systemic(self, open_now: list[BreakerState]) -> bool:
        return 0 < self.settings.breaker_global <= len(open_now)

    def _held(
        self,
        state: BreakerState,
        open_now: list[BreakerState],
        now: float,
        refailed: str | None = None,
    ) -> Admission | None:
        """The deferral an open or half-open breaker, the watch over a re-failed execution
        (``refailed``: its name), or a systemic outage imposes."""
        if state.state == OPEN:
            assert state.opened_at is not None and state.next_canary_at is not None
            due = max(state.next_canary_at, now)
            return Admission(
                DEFERRED,
                state.graph,
                due,
                f"breaker open since {_iso(state.opened_at)}, next canary at {_iso(due)}",
                HOLD_BREAKER,
            )
        if state.state == HALF_OPEN:
            assert state.opened_at is not None and state.canary_judged_at is not None
            due = max(state.canary_judged_at, now)
            return Admission(
                DEFERRED,
                state.graph,
                due,
                f"breaker open since {_iso(state.opened_at)}: canary {state.canary_execution} "
                f"restored at {_iso(state.canary_at)}, judged at {_iso(due)}",
                HOLD_BREAKER,
            )
        if refailed is not None:
            watched = self._watched(state.graph, refailed, now)
            if watched is not None:
                return watched
        open_now = [other for other in open_now if other.graph != state.graph]
        if not self._systemic(open_now):
            return None
        steps = [s.next_canary_at or s.canary_judged_at or now for s in open_now]
        due = max(min(steps), now)
        names = ", ".join(s.graph for s in open_now[:EVIDENCE_SHOWN])
        if len(open_now) > EVIDENCE_SHOWN:
            names += f" and {len(open_now) - EVIDENCE_SHOWN} more"
        return Admission(
            DEFERRED,
            state.graph,
            due,
            f"systemic outage: the breakers of {len(open_now)} graphs are open ({names}; "
            f"RESTORE_BREAKER_GLOBAL {self.settings.breaker_global}): every graph is held, "
            f"next canary at {_iso(due)}",
            HOLD_SYSTEMIC,
        )

    def _watched(self, graph: str, execution: str, now: float) -> Admission | None:
        """The watch: once a second execution of a graph has re-failed within the window, a
        re-failed execution of it waits a cooldown from its re-failure (at most the window:
        the evidence the store keeps) before it is restored again.

        Restoring it again tells the breaker nothing - it counts distinct executions - and
        in a storm it is always the most recently stopped failure, so without the watch the
        rate's few slots go to it again and again, each re-restore wasted, before enough
        other executions have been tried for the breaker to judge the graph. One re-failing
        execution alone is no pattern: it keeps its rule's pace (a restore loop stops at its
        budget). The evidence is the store's, so a close (which drops it: the canary proved
        the outage over) ends every watch at once, on every instance."""
        state = self._store.breaker(graph, window=self.settings.breaker_window)
        if len(state.refailures) < WATCHED_FROM:
            return None
        failed_at = next((r.at for r in state.refailures if r.execution == execution), None)
        if failed_at is None:
            return None
        watch = min(self.settings.breaker_cooldown, self.settings.breaker_window)
        due = failed_at + watch
        if due <= now:
            return None
        return Admission(
            DEFERRED,
            graph,
            due,
            f"graph {graph} is watched after a re-failure: this execution failed again at "
            f"{_iso(failed_at)} after its restore; due at {_iso(due)}, a cooldown later "
            f"(RESTORE_BREAKER_COOLDOWN {_shown(watch)}), unless the breaker opens first",
            HOLD_WATCH,
        )

    def _within_rate(self, graph: str, canary: str) -> Admission:
        decision = CANARY if canary else RESTORE
        rate = self.settings.rate_limit
        if rate is None:
            return Admission(decision, graph, canary_token=canary)
        slot = self._store.take_rate_slot(RATE_SUBJECT, rate.limit, rate.interval)
        if slot.granted:
            return Admission(decision, graph, rate_token=slot.token, canary_token=canary)
        self._release_canary(graph, canary)
        return Admission(
            DEFERRED,
            graph,
            slot.free_at,
            f"restore rate {rate} reached across instances (RESTORE_RATE_LIMIT): "
            f"next slot at {_iso(slot.free_at)}",
            HOLD_RATE,
        )

    def _release_canary(self, graph: str, token: str) -> None:
        if token:
            with contextlib.suppress(StoreUnavailable):
                self._store.release_canary(graph, token, window=self.settings.breaker_window)

    def _opened(self, state: BreakerState, threshold: int) -> BreakerEvent:
        assert state.opened_at is not None and state.next_canary_at is not None
        evidence = state.refailures[-EVIDENCE_KEPT:]
        named = ", ".join(f"{r.execution} at {_iso(r.at)}" for r in evidence[-EVIDENCE_SHOWN:])
        more = len(state.refailures) - EVIDENCE_SHOWN
        if more > 0:
            named = f"{named} and {more} more"
        open_now = self._store.breakers_open()
        systemic = self._systemic(open_now)
        message = (
            f"breaker opened for graph {state.graph}: {len(state.refailures)} executions "
            f"re-failed after their restores within {_shown(self.settings.breaker_window)} "
            f"(threshold {threshold}): {named}; its restores are held, next canary at "
            f"{_iso(state.next_canary_at)}"
        )
        if systemic:
            message += f"; {len(open_now)} graphs open: every graph is held (systemic outage)"
        return BreakerEvent(
            "opened",
            state.graph,
            logging.WARNING,
            message,
            {
                "openedAt": _iso(state.opened_at),
                "nextCanaryAt": _iso(state.next_canary_at),
                "cooldownSeconds": state.cooldown,
                "threshold": threshold,
                "windowSeconds": self.settings.breaker_window,
                "refailures": [
                    {"executionName": r.execution, "failedAt": _iso(r.at)} for r in evidence
                ],
                "graphsOpen": len(open_now),
                "systemicHold": systemic,
            },
        )

    def _reopen(
        self, graph: str, token: str, execution: str, failed_at: float | None
    ) -> BreakerEvent | None:
        state = self._store.reopen_breaker(
            graph,
            token,
            max_cooldown=self.settings.max_cooldown,
            window=self.settings.breaker_window,
        )
        if not state.changed:
            return None  # another instance judged this canary first
        assert state.next_canary_at is not None
        failed = f" at {_iso(failed_at)}" if failed_at is not None else ""
        return BreakerEvent(
            "reopened",
            graph,
            logging.WARNING,
            f"breaker reopened for graph {graph}: canary {execution} failed again{failed}; "
            f"cooldown now {_shown(state.cooldown or 0)}, next canary at "
            f"{_iso(state.next_canary_at)}",
            {
                "canaryExecution": execution,
                "failedAgainAt": _iso(failed_at),
                "openedAt": _iso(state.opened_at),
                "cooldownSeconds": state.cooldown,
                "nextCanaryAt": _iso(state.next_canary_at),
            },
        )

    def _closed(self, canary: Canary) -> BreakerEvent | None:
        state = self._store.close_breaker(
            canary.graph, canary.token, window=self.settings.breaker_window
        )
        if not state.changed:
            return None
        open_now = self._store.breakers_open()
        lifted = self.settings.breaker_global > 0 and (
            len(open_now) + 1 >= self.settings.breaker_global > len(open_now)
        )
        now = self._clock()
        message = (
            f"breaker closed for graph {canary.graph}: canary {canary.execution} restored at "
            f"{_iso(canary.restored_at)} has not failed again; open for "
            f"{_shown(now - canary.opened_at)}, its held failures are released under the "
            f"restore rate"
        )
        if lifted:
            message += "; the systemic hold is lifted"
        return BreakerEvent(
            "closed",
            canary.graph,
            logging.INFO,
            message,
            {
                "canaryExecution": canary.execution,
                "canaryRestoredAt": _iso(canary.restored_at),
                "openedAt": _iso(canary.opened_at),
                "openSeconds": round(now - canary.opened_at, 3),
                "graphsOpen": len(open_now),
                "systemicHoldLifted": lifted,
            },
        )


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shown(seconds: float) -> str:
    """A duration as operators write it: ``15m``, ``2h``, ``90s``."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:.0f}s"
