"""The store's contract: what every backend promises, and the records and checks they share.

Failure events arrive at least once, and several function instances may handle copies of one
event at the same time. Two questions must therefore be answered atomically by a store that
every instance sees:

* *dedupe* - has this event been handled (then answer with the recorded outcome), or is some
  instance handling it right now (then back off)? :meth:`StateStore.claim` takes an
  in-progress marker that expires after a TTL, so a crashed instance cannot block an event
  forever; :meth:`~StateStore.finish` replaces it with the final outcome, kept for a
  retention period; :meth:`~StateStore.release` drops it after a transient failure so a
  redelivery can try again.
* *budget* - how many restores has this execution had within a sliding window?
  :meth:`~StateStore.reserve_budget` counts and reserves in one atomic step, so concurrent
  instances can never exceed the limit. A unit is reserved *in flight* before the restore is
  sent; :meth:`~StateStore.settle_budget` marks it *spent* once the restore was accepted or
  sent without an answer, :meth:`~StateStore.refund_budget` returns a unit that turned out
  not to be consumed, and one still in flight past its time counts as spent (its holder died
  mid-call and may have sent it). So a full budget answers (:class:`Reservation`) whether
  restores that happened fill it (``spent``: final) or only ones in flight do (``busy``: ask
  again). Reservations are kept for the longest window any caller counts them with
  (``keep``): the budget is the execution's, whichever rule counts it.

Two memories serve the restore rules' spacing:

* :meth:`~StateStore.first_seen` - when a failure was first seen, kept for the dedupe
  retention: the ``first`` delay counts from it when the service gives no stop time, so
  every event of one failure finds the same reference.
* :meth:`~StateStore.remember_deferred` / :meth:`~StateStore.due_deferred` - the failures
  deferred until a due time, kept until :meth:`~StateStore.finish` records a final outcome
  for them (in the same step) or a retention after they were due: a sweep works through the
  due ones, so a failure no listing shows any more is still restored;
  :meth:`~StateStore.deferred_among` tells, in one read, which of a sweep's listed failures
  are remembered so, with their due times.

Two answers serve outage mode (:mod:`handler.outage`), where hundreds of executions fail at
once because something they share broke:

* :meth:`~StateStore.take_rate_slot` - a restore rate of ``limit`` per ``interval`` across
  every instance: a *sliding log* of the slots taken (each kept one interval), not a token
  bucket, because the promise is "never more than ``limit`` in *any* interval", which a
  bucket refilled at ``limit``/``interval`` breaks at the seam of two intervals (a full
  bucket spent at once, then refilled, allows almost twice the limit in one interval). The
  log holds at most ``limit`` entries per subject. A full log answers when the next slot
  frees (the item's due time); :meth:`~StateStore.return_rate_slot` gives back a slot whose
  restore was not sent or was refused.
* a circuit breaker per graph (:class:`BreakerState`): :meth:`~StateStore.record_refailure`
  counts the distinct executions that failed again after a restore within a window and opens
  the breaker in the same step when they reach the threshold; after the cooldown
  :meth:`~StateStore.take_canary` gives exactly one caller the canary (half-open);
  :meth:`~StateStore.close_breaker` and :meth:`~StateStore.reopen_breaker` (cooldown doubled,
  capped) act only for the canary's token, so of several instances that looked at it exactly
  one makes the transition (``changed``) and logs it; :meth:`~StateStore.release_canary`
  gives back a canary whose restore never reached the execution;
  :meth:`~StateStore.breakers_open` lists the graphs not closed (the global hold). Nothing is
  kept for ever: a re-failure counts for its window, a close is remembered for one window
  (re-failures that stopped before it are not counted again), and an open breaker nobody
  came back to for a window after its canary was due is forgotten (closed, without a line).

:meth:`~StateStore.settle_item` is an item's end in one step: its unit settled or refunded,
its outcome recorded or its marker released, and its ledger entries appended - what
:meth:`~StateStore.settle_budget` / :meth:`~StateStore.refund_budget`,
:meth:`~StateStore.finish` / :meth:`~StateStore.release` and
:meth:`~StateStore.ledger_append` do, all or nothing, so an item that restored writes once
after its restore.

For operators reading what happened: :meth:`~StateStore.ledger_append` and
:meth:`~StateStore.ledger` keep a bounded list of entries per execution (each expiring by
itself), and :meth:`~StateStore.record_sweep` / :meth:`~StateStore.last_sweep` the newest
sweep's summary.

An operator's pause (:meth:`~StateStore.pause`, :meth:`~StateStore.resume`,
:meth:`~StateStore.pauses`) is one record per graph (or ``"*"``), expiring by itself at its
``until``: every instance's admission reads it, so a pause holds across the fleet.

For operators and readiness probes: :meth:`~StateStore.forget` drops one event's outcome or
marker, :meth:`~StateStore.reset_budget` one execution's reservations, and
:meth:`~StateStore.check_writable` proves a write works now without leaving anything behind.

All times come from the injectable ``clock`` (wall-clock seconds, which must agree across the
processes sharing a store). Every backend failure - unreachable, read-only, locked past the
busy timeout - raises :class:`StoreUnavailable`, whose message never contains a password from
the URL; its subclass :class:`RecordsNotKept` says a read-only store holds no records of that
kind at all (a SQLite file opened ``mode=ro`` that no version keeping them has opened). The
argument checks live here, so a bad argument fails the same way, before any I/O,
on every backend.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Collection, Mapping
from typing import NamedTuple, Protocol

ACQUIRED = "acquired"
IN_PROGRESS = "in_progress"
DONE = "done"

RESERVED = "reserved"
SPENT = "spent"
BUSY = "busy"


class StoreUnavailable(Exception):
    """The store cannot be reached or written; the caller should treat it as transient.

    The message names the store by its redacted description and never contains a password.
    """


class RecordsNotKept(StoreUnavailable):
    """A read-only store has no place for this kind of record: a SQLite file opened
    ``mode=ro`` that was made by a version before the records existed, and that no later
    version has opened since (opening it writable adds them). There are none to read - not
    "none recorded", since nothing could record them there - so operators' reads say so
    instead of failing; every other caller treats it as the store being unavailable.

    ``kind`` names the records (the missing table's name).
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class Claim(NamedTuple):
    """The answer to :meth:`StateStore.claim`.

    ``state`` is ``"acquired"`` (``acquired`` is true and ``token`` identifies our marker),
    ``"in_progress"`` (someone else holds a live marker) or ``"done"`` (``record`` is the
    recorded outcome).
    """

    acquired: bool
    token: str
    state: str
    record: dict | None


class Reservation(NamedTuple):
    """The answer to :meth:`StateStore.reserve_budget`.

    ``state`` is ``"reserved"`` (``reserved`` is true and ``token`` is our unit, in flight
    until settled or refunded), ``"spent"`` (spent reservations alone fill the budget:
    restores that happened or may have - final) or ``"busy"`` (reservations still in flight
    fill what the spent ones leave: none of them has restored anything yet, so ask again
    later).
    """

    reserved: bool
    token: str
    state: str


class RateSlot(NamedTuple):
    """The answer to :meth:`StateStore.take_rate_slot`.

    ``granted`` with ``token`` naming the slot (kept one interval), or not granted and
    ``free_at`` the earliest moment a slot is free again (when granted, ``free_at`` is now).
    """

    granted: bool
    token: str
    free_at: float


CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
BREAKER_STATES = (CLOSED, OPEN, HALF_OPEN)
# Re-failures kept per graph (the most recent): the most a threshold can ask for, and what
# bounds a graph's record however many of its executions fail.
REFAILURES_KEPT = 1000


class Refailure(NamedTuple):
    """One execution that failed again after a restore, and when (its latest such failure)."""

    execution: str
    at: float


class BreakerState(NamedTuple):
    """A graph's circuit breaker as the store holds it, answered by every breaker call.

    ``state`` is ``"closed"``, ``"open"`` (since ``opened_at``; the canary may be taken at
    ``opened_at + cooldown``) or ``"half_open"`` (``canary_execution`` was restored at
    ``canary_at`` under ``canary_token``; it is judged at ``canary_at + cooldown``).
    ``refailures`` are the distinct executions that re-failed within the window, oldest
    first (the evidence; the read and record calls fill it, the others leave it empty).
    ``changed`` is true only in the answer of the call that made the transition it asked for
    (opened, took the canary, closed, reopened, released): across every instance exactly one
    caller sees it, and that one logs the event.
    """

    graph: str
    state: str = CLOSED
    opened_at: float | None = None
    cooldown: float | None = None
    canary_token: str = ""
    canary_execution: str | None = None
    canary_at: float | None = None
    refailures: tuple[Refailure, ...] = ()
    changed: bool = False

    @property
    def next_canary_at(self) -> float | None:
        """When an open breaker's canary may be taken (None unless open)."""
        if self.state != OPEN or self.opened_at is None or self.cooldown is None:
            return None
        return self.opened_at + self.cooldown

    @property
    def canary_judged_at(self) -> float | None:
        """When a half-open breaker's canary may be judged (None unless half-open)."""
        if self.state != HALF_OPEN or self.canary_at is None or self.cooldown is None:
            return None
        return self.canary_at + self.cooldown


class StateStore(Protocol):
    """What the pipeline needs from a store; see the module docstring for the semantics."""

    @property
    def describe(self) -> str:
        """A redacted one-line description for logs, e.g. ``redis://:***@host:6379/0``."""
        ...

    def claim(self, key: str, ttl: float) -> Claim:
        """Atomically answer "done", "in progress", or take a marker expiring in ``ttl`` s.

        An expired marker or an expired outcome counts as absent and is taken over.
        """
        ...

    def finish(self, key: str, token: str, record: dict, retention: float) -> None:
        """Record ``key``'s final outcome for ``retention`` s, replacing any marker.

        Recorded even if our marker expired meanwhile: the outcome is true regardless. In the
        same step it forgets ``key``'s deferred failure (:meth:`remember_deferred`): a
        failure with a final outcome is not due any more, whichever path reached it.
        """
        ...

    def release(self, key: str, token: str) -> None:
        """Drop the in-progress marker if ``token`` still owns it, so a redelivery can retry."""
        ...

    def renew(self, key: str, token: str, ttl: float) -> bool:
        """Make ``token``'s live in-progress marker expire ``ttl`` s from now; False (and
        nothing changed) when ``token`` no longer owns a live marker on ``key`` (it expired,
        was taken over or finished). A holder that runs longer than one TTL (a sweep) renews
        its marker before it expires."""
        ...

    def reserve_budget(
        self,
        subject: str,
        limit: int,
        window: float,
        *,
        in_flight: float,
        keep: float | None = None,
    ) -> Reservation:
        """Reserve one unit if fewer than ``limit`` were reserved in the last ``window`` s.

        Concurrent callers can never exceed ``limit`` (nothing is reserved for
        ``limit < 1``). A new reservation is *in flight* - its restore has not happened yet -
        until :meth:`settle_budget` or :meth:`refund_budget`, or for ``in_flight`` seconds at
        most: one still in flight after that belongs to a caller that died mid-call, which may
        have sent its restore, so it counts as spent from then on. A full budget answers
        ``spent`` when spent reservations fill it, else ``busy``.

        The reservation is kept for ``window`` or ``keep`` seconds, whichever is longer, and
        counts for every window only while it is kept: callers that count one subject with
        several windows pass the longest as ``keep``, so that no call forgets what another
        still counts.
        """
        ...

    def settle_budget(self, subject: str, token: str) -> None:
        """Mark a reservation spent: its restore happened, or was sent and may have.

        It is no longer in flight and counts until it leaves the window; an unknown token
        (refunded, expired, never made) is ignored.
        """
        ...

    def refund_budget(self, subject: str, token: str) -> None:
        """Remove a reservation: the operation turned out not to consume budget."""
        ...

    def budget_used(self, subject: str, window: float, *, spent_only: bool = False) -> int:
        """How many reservations ``subject`` holds from the last ``window`` seconds; with
        ``spent_only``, only those no longer in flight."""
        ...

    def budget_times(self, subject: str, window: float) -> list[float]:
        """When each of ``subject``'s reservations from the last ``window`` s was made, oldest
        first: restore rules space restores from the last one (``budget_used`` is its length).
        """
        ...

    def first_seen(self, key: str, retention: float, *, after: float | None = None) -> float:
        """When ``key`` (a failure) was first seen: now, if the store keeps no sighting of it
        (or the one it keeps is not later than ``after``), and that is kept for ``retention``
        seconds. Concurrent first sightings agree on one time.

        The restore rules' ``first`` delay counts from it when the service does not say when
        the failure stopped: each event of one failure then finds the same reference.
        ``after`` is the last restore of the execution: a sighting before it belongs to an
        earlier failure.
        """
        ...

    def remember_deferred(self, key: str, failure: dict, due_at: float, retention: float) -> None:
        """Remember that ``key``'s failure was deferred until ``due_at`` (replacing what was
        remembered for ``key``), until :meth:`finish` records its outcome or ``retention``
        seconds after ``due_at``.

        A deferred failure may be due long after any listing still shows it; a sweep works
        through :meth:`due_deferred` so that it is restored whatever the lookback.
        ``failure`` is what rebuilds the item (a JSON object).
        """
        ...

    def due_deferred(self, limit: int) -> list[tuple[str, dict]]:
        """Up to ``limit`` remembered failures whose due time has come, ``(key, failure)``,
        the longest due first."""
        ...

    def take_rate_slot(self, subject: str, limit: int, interval: float) -> RateSlot:
        """Take one of ``limit`` slots per sliding ``interval`` s shared by every caller of
        ``subject``, or answer when the next one is free.

        Never more than ``limit`` slots are held from any ``interval``-long stretch of time,
        however many callers race (nothing is granted for ``limit < 1``; ``free_at`` is then
        infinite). A slot taken at ``t`` is free again at ``t + interval``.
        """
        ...

    def return_rate_slot(self, subject: str, token: str) -> None:
        """Give a slot back: its restore was not sent, or was refused. Unknown: ignored."""
        ...

    def rate_used(self, subject: str, interval: float) -> int:
        """How many slots of ``subject`` were taken within the last ``interval`` seconds."""
        ...

    def record_refailure(
        self,
        graph: str,
        execution: str,
        failed_at: float,
        *,
        window: float,
        threshold: int,
        cooldown: float,
    ) -> BreakerState:
        """Count that ``execution`` of ``graph`` failed again (at ``failed_at``, not later
        than now) after a restore; open the breaker when the distinct executions that
        re-failed within the last ``window`` s reach ``threshold``.

        One execution counts once however often it re-fails (its latest time is kept). A
        re-failure older than the window, or that stopped before the breaker last closed,
        is not counted. An open or half-open breaker is left as it is. The answer carries the
        evidence; ``changed`` when this call opened the breaker (``cooldown`` from now).
        """
        ...

    def breaker(self, graph: str, *, window: float) -> BreakerState:
        """``graph``'s breaker now, with the re-failures within the last ``window`` s."""
        ...

    def take_canary(self, graph: str, execution: str, *, window: float) -> BreakerState:
        """Make ``execution`` the canary of ``graph``'s open breaker whose cooldown is over:
        half-open, with a new ``canary_token``; ``changed`` for the one caller that took it.
        Any other state, or a cooldown not over, answers the state unchanged.

        A half-open breaker nobody judges within ``window`` s after its canary was due to be
        judged is forgotten.
        """
        ...

    def close_breaker(self, graph: str, token: str, *, window: float) -> BreakerState:
        """Close ``graph``'s half-open breaker if ``token`` is its canary's (the canary did
        not fail again): its re-failures are dropped, and for ``window`` s re-failures that
        stopped before now are not counted again. ``changed`` for the caller that closed it.
        """
        ...

    def reopen_breaker(
        self, graph: str, token: str, *, max_cooldown: float, window: float
    ) -> BreakerState:
        """Open ``graph``'s half-open breaker again if ``token`` is its canary's (the canary
        failed again): open since now, its cooldown doubled - at most ``max_cooldown``, and
        never shorter than it was. ``changed`` for the caller that reopened it."""
        ...

    def release_canary(self, graph: str, token: str, *, window: float) -> BreakerState:
        """Give back ``token``'s canary (its restore never reached the execution): open
        again as before, so the next caller may take a canary at once."""
        ...

    def breakers_open(self) -> list[BreakerState]:
        """Every graph whose breaker is open or half-open (without re-failures), the
        longest open first: the global hold counts them."""
        ...

    def reset_breaker(self, graph: str) -> bool:
        """Forget ``graph``'s breaker and re-failures (an operator closing it by hand);
        whether it was open or half-open."""
        ...

    def pause(self, subject: str, record: dict, until: float) -> None:
        """Pause ``subject`` (a graph, or ``"*"`` for every graph) until ``until`` (wall-clock
        seconds), replacing an earlier pause of it; ``record`` says who paused it and why."""
        ...

    def resume(self, subject: str) -> bool:
        """End ``subject``'s pause now; whether it was paused."""
        ...

    def pauses(self) -> dict[str, dict]:
        """The pauses not yet expired: subject -> its record, with ``until`` added."""
        ...

    def recent(self, limit: int = 20, *, window: float | None = None) -> dict:
        """A snapshot for operators: ``{"dedupe": [...], "budget": [...]}``, newest first.

        ``dedupe`` items are ``{"key", "state", "expires_at", "record"}`` for live entries;
        ``budget`` items ``{"subject", "used", "last_at"}``. ``used`` counts reservations
        within ``window`` when given, else every reservation the store still holds.
        """
        ...

    def forget(self, key: str) -> bool:
        """Drop ``key``'s recorded outcome or in-progress marker, so the event can run again.

        For operators undoing a wrong outcome; returns whether a live entry was there.
        """
        ...

    def reset_budget(self, subject: str) -> int:
        """Drop every budget reservation of ``subject``; returns how many the store held.

        The count may include reservations already outside the window that the store had
        not collected yet.
        """
        ...

    def check_writable(self) -> None:
        """Raise :class:`StoreUnavailable` unless a write succeeds now (readiness probes).

        The probe write is undone in the same step: it leaves nothing behind.
        """
        ...

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers."""
        ...

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...

    def ledger_append(
        self, graph: str, execution: str, entries: list[dict], *, keep: float, max_entries: int
    ) -> None:
        """Append ``entries`` (JSON objects, in order) to the ledger of ``execution`` of
        ``graph``, in one atomic step with the trim: each entry is kept ``keep`` seconds, and
        the ledger holds at most ``max_entries``, the newest (older ones are dropped first).
        The ledger is what an operator reads of one execution (``history``)."""
        ...

    def ledger(self, graph: str, execution: str) -> list[dict]:
        """The entries of ``execution``'s ledger still kept, oldest first (appended order)."""
        ...

    def record_sweep(self, summary: dict) -> None:
        """Keep ``summary`` as the newest sweep's, replacing the one before (one small
        record, never expiring: ``status`` shows when the last sweep ran, however long ago)."""
        ...

    def last_sweep(self) -> dict | None:
        """The summary :meth:`record_sweep` kept last, or None when no sweep was recorded."""
        ...

    def waiting_deferred(self, limit: int) -> list[tuple[str, dict]]:
        """Up to ``limit`` remembered deferred failures (:meth:`remember_deferred`), due or
        not yet, ``(key, failure)``, the soonest due first: what waits, for ``status``."""
        ...

    def quiet_until(self) -> dict[str, float]:
        """Every graph whose listing a sweep may skip, and until when (epoch seconds): the
        marks not yet passed, as :meth:`set_quiet_until` left them (one read per sweep,
        whatever the number of graphs)."""
        ...

    def set_quiet_until(self, marks: Mapping[str, float]) -> None:
        """Remember, per graph, until when a sweep may skip listing it (replacing an earlier
        mark of that graph); a mark not after now forgets the graph's. A mark is forgotten
        once it has passed: a graph nobody marks again is listed by every sweep."""
        ...

    def deferred_among(self, keys: Collection[str]) -> dict[str, tuple[float, dict]]:
        """Which of ``keys`` are remembered deferred (:meth:`remember_deferred`, not yet
        finished or expired), each as ``key -> (due_at, failure)``, due or not.

        One read for a whole sweep's listing, whatever its size: a graph held by its breaker
        lists the same thousands of deferred failures at every sweep, and this is how the
        sweep tells them apart from new ones without admitting each again."""
        ...

    def settle_item(
        self,
        key: str,
        token: str,
        *,
        record: dict | None,
        retention: float,
        budget: tuple[str, str] | None = None,
        spent: bool = False,
        ledger: LedgerBatch | None = None,
    ) -> None:
        """What an item's end leaves in the store, in one atomic step (all or nothing):
        ``budget``'s unit (subject, token) settled (``spent``: as :meth:`settle_budget`) or
        refunded (as :meth:`refund_budget`); ``record`` recorded for ``retention`` s (as
        :meth:`finish`), or with ``record`` None ``token``'s marker released (as
        :meth:`release`); and ``ledger``'s entries appended (as :meth:`ledger_append`).

        One step instead of up to four: an item that restored pays for one write, and a
        failure between them can no longer leave the unit settled but the outcome unrecorded.
        """
        ...


def new_token() -> str:
    """A marker's or reservation's owner: unguessable, so no other caller can release it."""
    return secrets.token_hex(16)


def dump_record(record: dict) -> str:
    """Serialise before any I/O, so a bad record fails the same way on every backend."""
    if not isinstance(record, dict):
        raise TypeError(f"record must be a dict, not {type(record).__name__}")
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


def positive_seconds(name: str, value: float) -> float:
    """A TTL, retention or window: zero, negative, NaN or infinite would never expire right."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def check_text(name: str, value: object) -> str:
    """A key or subject: an empty one would merge unrelated events into one entry."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def budget_kept(window: float, keep: float | None) -> float:
    """How long a reservation is kept: its own window, or ``keep`` when that is longer.

    The budget is per execution, while rules count it with windows of their own: a
    reservation must outlive the longest window anyone counts it with, not only the one it
    was made with, or a short-window rule's call would let a long-window rule forget.
    """
    if keep is None:
        return window
    return max(window, positive_seconds("keep", keep))


def check_time(name: str, value: float) -> float:
    """A moment (epoch seconds): NaN or infinity would never come, or always have come."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    return float(value)


def free_slot_at(times: list[float], limit: int, interval: float) -> float:
    """When a full rate log frees a slot: ``times`` are the slots held within the interval,
    oldest first (at least ``limit`` of them). The one whose leaving brings them below
    ``limit`` frees it, one interval after it was taken (more than ``limit`` are held only
    when the limit was lowered meanwhile)."""
    if limit < 1:
        return math.inf
    return times[len(times) - limit] + interval


def check_limit(limit: int) -> int:
    """A budget limit: ``True`` is an int to Python, but never a meant number of restores."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, not {type(limit).__name__}")
    return limit


def recent_view(dedupe: list[dict], budget: list[dict], limit: int) -> dict:
    """:meth:`~StateStore.recent`'s answer from every live entry a backend collected.

    For backends that cannot sort and cut on the server: each ``dedupe`` item carries its
    ``updated_at`` to sort by, which the answer leaves out.
    """
    dedupe = _newest_first(dedupe, "updated_at", limit)
    for item in dedupe:
        del item["updated_at"]
    return {"dedupe": dedupe, "budget": _newest_first(budget, "last_at", limit)}


def _newest_first(items: list[dict], by: str, limit: int) -> list[dict]:
    items.sort(key=lambda item: item[by], reverse=True)
    return items[: max(limit, 0)]


def ledger_batch(
    graph: str, execution: str, entries: list[dict], keep: float, max_entries: int
) -> tuple[float, int, list[str]]:
    """:meth:`~StateStore.ledger_append`'s checked arguments: the retention, the bound, and
    each entry serialised - before any I/O, so a bad call fails alike on every backend."""
    check_text("graph", graph)
    check_text("execution", execution)
    keep = positive_seconds("keep", keep)
    max_entries = check_limit(max_entries)
    if max_entries < 1:
        raise ValueError(f"max_entries must be at least 1, got {max_entries}")
    if not isinstance(entries, list):
        raise TypeError(f"entries must be a list, not {type(entries).__name__}")
    return keep, max_entries, [dump_record(entry) for entry in entries]


def check_keys(keys: Collection[str]) -> list[str]:
    """Keys to look up, each a non-empty string (checked before any I/O), once each."""
    if isinstance(keys, (str, bytes)):
        raise TypeError("keys must be a collection of strings, not one string")
    return list(dict.fromkeys(check_text("key", key) for key in keys))


def check_quiet_marks(marks: Mapping[str, float]) -> dict[str, float]:
    """Quiet marks to store: graph names (non-empty strings) to finite moments."""
    if not isinstance(marks, Mapping):
        raise TypeError("marks must be a mapping of graph names to moments")
    return {
        check_text("graph", graph): check_time("until", until) for graph, until in marks.items()
    }


class LedgerBatch(NamedTuple):
    """Entries for :meth:`StateStore.settle_item` to append to an execution's ledger, with
    :meth:`~StateStore.ledger_append`'s retention and bound."""

    graph: str
    execution: str
    entries: list[dict]
    keep: float
    max_entries: int


def settled_item(
    key: str, record: dict | None, retention: float, budget: tuple[str, str] | None
) -> tuple[str | None, float]:
    """:meth:`~StateStore.settle_item`'s checked outcome: the record serialised (None: the
    marker is released) and its retention - before any I/O, alike on every backend."""
    check_text("key", key)
    if budget is not None:
        check_text("subject", budget[0])
    if record is None:
        return None, 0.0
    return dump_record(record), positive_seconds("retention", retention)
