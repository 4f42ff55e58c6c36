"""The sweeper: one sweep - the lease, the deferred failures due, every graph in scope - with
each failure found handed to the restorer like an event's item.

It sits beside the :class:`~handler.pipeline.restorer.Restorer` and takes what it needs: the
shared :class:`~handler.pipeline.clients.Clients` to list with, the
:class:`~handler.pipeline.lease.SweepLease` that keeps sweeps from overlapping, the
:class:`~handler.pipeline.deferred.DeferredFailures` to work through first, and the restorer
for each item. How each API lists is the client's
(:meth:`~handler.client.WorkflowApi.listFailedWorkflowExecutions`); what a row becomes is
:mod:`handler.sweep`'s. This module decides how much is worked on - the restore cap, spent
round-robin across graphs, the deadline, the lease - looks at the breakers' canaries that are
due (:mod:`handler.outage`), and what goes wrong with one graph (its name, its listing, a bug) is
named in the summary's ``errors`` while the other graphs are swept. Which graphs a sweep may
leave unlisted - quiet ones, whose slot has not come - is :mod:`handler.pipeline.quiet`'s.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import NamedTuple, TypeVar

from handler.client import ListingError, WorkflowApi
from handler.intake import Item
from handler.invocation import Invocation
from handler.names import InvalidNameError, validate_name
from handler.outage import (
    HOLD_BREAKER,
    HOLD_RATE,
    HOLD_SYSTEMIC,
    HOLD_WATCH,
    BreakerEvent,
    Holding,
    Outage,
)
from handler.outcomes import Answer, Outcome, Result
from handler.pipeline import classify
from handler.pipeline.clients import Clients
from handler.pipeline.deferred import Deferral, DeferredFailures
from handler.pipeline.lease import HeldLease, SweepLease
from handler.pipeline.pauses import ALL_GRAPHS, HOLD_PAUSED
from handler.pipeline.quiet import QuietListings, SweepMarks, interval_for
from handler.pipeline.restorer import Restorer
from handler.report import Reporter
from handler.settings import Settings
from handler.store import StoreUnavailable
from handler.sweep import (
    STOPPED_DEADLINE,
    STOPPED_IN_PROGRESS,
    STOPPED_LEASE_LOST,
    STOPPED_STORE_UNAVAILABLE,
    Failure,
    SweepRequest,
    SweepSummary,
    shown_name,
    time_left_until,
)

T = TypeVar("T")
OUTAGE_HOLDS = frozenset({HOLD_BREAKER, HOLD_WATCH, HOLD_SYSTEMIC, HOLD_RATE})


class Sweeper:
    """Runs sweeps; safe to share between threads (each sweep takes the lease first)."""

    def __init__(
        self,
        restorer: Restorer,
        clients: Clients,
        lease: SweepLease,
        deferred: DeferredFailures,
        reporter: Reporter,
        settings: Settings,
        *,
        outage: Outage,
        breaker_log: Callable[[BreakerEvent], None] | None = None,
        quiet: QuietListings | None = None,
        pauses: Callable[[], Mapping[str, dict]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock  # the lookback counts back from it, as the quiet marks do
        # The operators' pauses (the store's), read once a sweep; None: no paused graph's
        # failures are answered as standing (each is admitted again).
        self._pauses = pauses
        self._outage = outage
        # None: every graph is listed by every sweep (see handler.pipeline.quiet)
        self._quiet = quiet
        # Where a canary's judgement goes: the log line, and a message when one is configured.
        self._breaker_log = breaker_log or reporter.breaker
        self._restorer = restorer
        self._clients = clients
        self._lease = lease
        self._deferred = deferred
        self._reporter = reporter
        self._settings = settings

    def sweep(self, request: SweepRequest, invocation: Invocation) -> tuple[Answer, SweepSummary]:
        """Find failures by listing and restore them like events; the items' answer and the
        sweep's summary (also its ``sweep finished`` line)."""
        started = time.monotonic()
        summary = SweepSummary()
        results: list[Result] = []
        invocation = replace(invocation, dry_run=invocation.dry_run or request.dry_run)
        lease = self._take_lease(invocation, summary)
        if lease is not None:
            try:
                client = self._clients.get(invocation.credentials)
                if client is None:
                    summary.errors.append({"graph": None, "errorCode": "NoCredentials"})
                else:
                    time_left = time_left_until(invocation.deadline)

                    def going_on() -> bool:
                        return time_left() and not lease.lost.is_set()

                    run = _Run(self._restorer, invocation, summary, results, going_on)
                    held = self._look_at_canaries(run, client)
                    deferred = self._due_deferred(request, summary)
                    queues = self._graphs(run, client, request, deferred)
                    if summary.stopped != STOPPED_DEADLINE:  # else: out of time listing
                        self._answer_standing(run, queues)
                        self._restore_fairly(run, queues, request.max_restores, held)
            finally:
                lease.release()
            if lease.lost.is_set():
                summary.stopped = STOPPED_LEASE_LOST
                summary.error(
                    {
                        "graph": None,
                        "errorCode": "LeaseLost",
                        "message": "the sweep's lease could not be renewed: stopped so that no "
                        "second sweep runs beside this one",
                    }
                )
        summary.duration_ms = (time.monotonic() - started) * 1000.0
        self._reporter.sweep_summary(summary.document(), invocation.id)
        return Answer(tuple(results)), summary

    def _take_lease(self, invocation: Invocation, summary: SweepSummary) -> HeldLease | None:
        ttl = self._settings.claim_ttl
        if invocation.deadline is not None:
            ttl = max(1.0, invocation.deadline - time.monotonic() + 5.0)
        try:
            lease = self._lease.take(ttl, renew=invocation.deadline is None)
        except StoreUnavailable as exc:
            summary.stopped = STOPPED_STORE_UNAVAILABLE
            summary.errors.append({"graph": None, "errorCode": "StoreUnavailable"})
            self._reporter.store_problem(str(exc))
            return None
        if lease is None:
            summary.stopped = STOPPED_IN_PROGRESS
        return lease

    def _look_at_canaries(self, run: _Run, client: WorkflowApi) -> set[str]:
        """Judge every breaker's canary that is due (:meth:`Outage.canary_due`): its
        execution is queried; not failed again a cooldown after its restore, the breaker
        closes (its held failures come back under the rate); failed again, it reopens with
        the cooldown doubled. A query that cannot be read judges nothing: the next sweep
        looks again. A dry run judges nothing either: it changes no state.

        Returns the graphs whose breaker is still open or half-open."""
        try:
            graphs = self._outage.open_graphs()
        except StoreUnavailable as exc:
            self._reporter.store_problem(str(exc))
            return set()
        held = set(graphs)
        if run.invocation.dry_run:
            return held
        for graph in graphs:
            if not run.going_on():
                return held
            try:
                canary = self._outage.canary_due(graph)
                if canary is None:
                    continue
                answer = client.getWorkflowExecution(
                    canary.execution, graph, deadline=run.invocation.deadline
                )
                state = classify.state_of(answer)
                if state is None:
                    continue  # unreadable: judged by a later sweep, never guessed
                event = self._outage.canary_looked_at(
                    canary, failed=state == "FAILED", stopped_at=classify.stopped_at(answer)
                )
            except StoreUnavailable as exc:
                self._reporter.store_problem(str(exc))
                return held
            except Exception as exc:  # a bug in one canary's look must not cost the sweep
                self._reporter.crashed(exc)
                continue
            if event is not None:
                self._breaker_log(event)
                if event.kind == "closed":
                    held.discard(graph)
        return held

    def _due_deferred(self, request: SweepRequest, summary: SweepSummary) -> list[Item]:
        """The deferred failures that are due, for the round-robin beside the listed ones.

        A failure deferred by a rule's spacing, the breaker or the rate may be due after
        every listing has dropped it (its delay outlasts the lookback), or was reported by an
        event no listing shows: the store remembers it until it has a final outcome. Each
        goes through the same admission, with the same identity (so dedupe holds)."""
        if request.max_restores < 1:
            return []
        try:
            items = self._deferred.due(request.max_restores)
        except StoreUnavailable as exc:
            summary.error({"graph": None, "errorCode": "StoreUnavailable"})
            self._reporter.store_problem(str(exc))
            return []
        return [item for item in items if not request.graphs or item.graph_name in request.graphs]

    def _answer_standing(self, run: _Run, queues: dict[str, list[_Queued]]) -> None:
        """Answer the failures of held graphs that are deferred already, by a hold that still
        stands, without admitting them again; the rest are left in ``queues``.

        A graph held by its breaker (half-open, or open with its canary not yet due), by a
        systemic outage, or paused by an operator lists the same failures at every sweep,
        and admitting each again (a claim, the budget, the breaker, the deferral written
        again, its line, its ledger entries) can only defer it again. One store read tells
        which are remembered deferred: one deferred by outage mode and not yet due, or by
        the pause in force, is answered ``deferred`` with its deferral's reason and rule, and
        keeps its memory and due time (:meth:`Restorer.still_deferred`). Everything else -
        a new failure, one come due, one of a graph whose canary is due or whose breaker
        closed - goes through admission as before, so no canary is missed and nothing is
        held past its time. A dry run answers as admission would (it holds nothing)."""
        if run.invocation.dry_run or not queues:
            return
        try:
            holding = self._outage.holding()
            pauses = self._pauses() if self._pauses is not None else {}
            held = [
                graph
                for graph in queues
                if holding.holds(graph) or _pause_of(pauses, graph) is not None
            ]
            for graph in held:
                queues[graph] = _once_each(queues[graph])  # one answer per identity
            keys = [queued.item.event_id for graph in held for queued in queues[graph]]
            remembered = self._deferred.standing(keys) if keys else {}
        except StoreUnavailable as exc:
            # Each goes through admission, which fails closed item by item.
            self._reporter.store_problem(str(exc))
            return
        now = self._clock()
        for graph in held:
            if not run.going_on():
                return  # the rest are admitted, or stopped, by the round-robin
            pause = _pause_of(pauses, graph)
            standing, rest = [], []
            for queued in queues[graph]:
                entry = remembered.get(queued.item.event_id)
                if (
                    entry is not None
                    and self._deferred.kept_long(entry[0], now)
                    and _stands(*entry, pause, holding, graph, now)
                ):
                    standing.append((queued.item, *entry))
                else:
                    rest.append(queued)
            if standing:
                queues[graph] = rest
                run.still_deferred(graph, standing)

    def _restore_fairly(
        self, run: _Run, queues: dict[str, list[_Queued]], cap: int, held: set[str]
    ) -> None:
        """Spend the restore cap round-robin: one failure of each graph per turn, the most
        recently stopped first within a graph. A graph with 10,000 failures then cannot
        starve one with 5, and new failures are not starved by old ones that keep being
        deferred (an outage's held failures all come due at once).

        A graph whose breaker is open (``held``) restores only its canary: there the oldest
        failure goes first, so the canary rotates instead of being, every time, the
        execution that failed most recently - the last canary - until its budget is spent."""
        turns = []
        for graph, queue in queues.items():
            queue = _once_each(queue)
            # Newest stopped first (oldest, when held); one without a stop time (OBS lists
            # none) keeps its place after those that have one (a stable sort).
            if graph in held:
                queue.sort(
                    key=lambda queued: (queued.item.failed_at is None, queued.item.failed_at or 0.0)
                )
            else:
                queue.sort(key=lambda queued: -(queued.item.failed_at or 0.0))
            if queue:
                turns.append(deque(queue))
        restored = 0
        rate = self._rate_full(run, turns)
        try:
            while turns:
                for queue in turns:
                    if restored >= cap:
                        run.summary.waiting += sum(q.listed for queue in turns for q in queue)
                        return
                    if not run.going_on():
                        run.summary.stopped = STOPPED_DEADLINE
                        return
                    item = queue.popleft().item
                    if rate.answers(item):
                        continue
                    result = run.handle(item)
                    if result.outcome is Outcome.RESTORED:
                        restored += 1
                    rate.noted(result)
                turns = [queue for queue in turns if queue]
        finally:
            rate.answer(run)

    def _rate_full(self, run: _Run, turns: list[deque[_Queued]]) -> _WhileRateFull:
        """What answers the failures the shared rate would defer again, once it is full."""
        if run.invocation.dry_run or self._settings.outage.rate_limit is None or not turns:
            return _WhileRateFull(self._deferred, {}, self._clock)
        keys = [queued.item.event_id for queue in turns for queued in queue]
        try:
            remembered = self._deferred.standing(keys)
        except StoreUnavailable as exc:
            self._reporter.store_problem(str(exc))
            remembered = {}
        return _WhileRateFull(self._deferred, remembered, self._clock)

    def _graphs(
        self, run: _Run, client: WorkflowApi, request: SweepRequest, deferred: list[Item]
    ) -> dict[str, list[_Queued]]:
        """Every graph in scope, each failure listed within the lookback, in one queue per
        graph beside the deferred failures due: listed in full first, so restores cannot
        shift a listing's offsets, and the cap is then spent fairly."""
        summary, going_on = run.summary, run.going_on
        queues: dict[str, list[_Queued]] = {}
        max_pages = self._settings.sweep_max_pages
        deadline = run.invocation.deadline
        quiet = self._quiet_marks(run, request)
        graphs = request.graphs or (
            graph
            for page in _while(
                going_on, client.listWorkflowNames(deadline=deadline, max_pages=max_pages)
            )
            for graph in page
            if self._settings.graph_allowed(graph)
        )
        since = datetime.fromtimestamp(self._clock() - request.lookback, timezone.utc)
        swept: set[str] = set()  # a graph the list names twice is swept once
        try:
            for graph in graphs:
                if not going_on():
                    summary.stopped = STOPPED_DEADLINE
                    break
                if graph in swept:
                    continue
                swept.add(graph)
                try:
                    validate_name(graph, "graph name")
                except InvalidNameError as exc:  # it could not be listed, let alone restored
                    summary.error(
                        {
                            "graph": shown_name(graph),
                            "errorCode": "InvalidGraphName",
                            "message": str(exc),
                        }
                    )
                    continue
                if quiet is not None and quiet.skips(graph):
                    summary.graphs_quiet += 1  # no failure at its last listing: not due yet
                    continue
                summary.graphs_scanned += 1
                queue = queues.setdefault(graph, [])
                listing = client.listFailedWorkflowExecutions(
                    graph, since, deadline=deadline, max_pages=max_pages
                )
                found = False
                try:
                    for row in (row for page in _while(going_on, listing) for row in page):
                        found = True  # even one that cannot be restored: listed again soon
                        try:
                            failure = Failure.listed(graph, row)
                        except InvalidNameError as exc:  # it cannot be restored
                            summary.error(
                                {
                                    "graph": graph,
                                    "execution": shown_name(row.execution_name),
                                    "errorCode": "InvalidExecutionName",
                                    "message": str(exc),
                                }
                            )
                            continue
                        summary.found(graph)
                        self._reporter.failure_found(failure.event_data())
                        queue.append(_Queued(failure.item(), True))
                    # Read to its end (a listing cut short by the deadline is not): quiet
                    # until its next slot, or - with a failure - listed by the next sweep.
                    if quiet is not None and going_on():
                        quiet.listed(graph, found_failures=found)
                except ListingError as exc:
                    summary.error(exc.document())
                except Exception as exc:  # a bug in one graph's listing must not cost the rest
                    self._reporter.crashed(exc)
                    summary.error({"graph": graph, "errorCode": "InternalError"})
                finally:
                    summary.pages += listing.pages
                    summary.executions_listed += listing.listed
            if not going_on():
                summary.stopped = STOPPED_DEADLINE
        except ListingError as exc:  # the list of graphs itself
            summary.error(exc.document())
        except Exception as exc:  # a bug in reading the list of graphs: the graphs swept stand
            self._reporter.crashed(exc)
            summary.error({"graph": None, "errorCode": "InternalError"})
        if quiet is not None:
            quiet.save()
        for item in deferred:
            assert item.graph_name is not None
            queues.setdefault(item.graph_name, []).append(_Queued(item, False))
        return queues

    def _quiet_marks(self, run: _Run, request: SweepRequest) -> SweepMarks | None:
        """This sweep's quiet marks, or None: every graph is listed (no quiet listings, a
        request that turned them off, or a dry run - it changes no state)."""
        if self._quiet is None or run.invocation.dry_run:
            return None
        return self._quiet.for_sweep(interval_for(request.quiet_interval, request.lookback))


class _Queued(NamedTuple):
    """One failure waiting for its turn: listed by this sweep, or deferred and due."""

    item: Item
    listed: bool  # counted as waiting for the next sweep when the cap leaves it


def _once_each(queue: list[_Queued]) -> list[_Queued]:
    """The queue with each identity once: a deferred failure that comes due is often still
    listed, under the same identity (a held one always is, until the hold ends). Handled
    twice it would be counted twice - two ``deferred``, or ``restored`` and ``duplicate`` -
    and admitted twice; the listed one stays (it is what ``failuresFound`` counted)."""
    listed = {queued.item.event_id for queued in queue if queued.listed}
    kept = []
    for queued in queue:
        if not queued.listed and queued.item.event_id in listed:
            continue
        kept.append(queued)
    return kept


class _WhileRateFull:
    """The failures a sweep finds once the shared rate is full, deferred by the rate before.

    When an item is refused by the rate (``RateLimited``), no slot frees before the moment
    its deferral names - the rate is a sliding log: only a slot given back elsewhere could
    come sooner. Until then, a failure the rate deferred before (remembered with the same
    rule) would only be deferred by it again: it is answered ``deferred`` with that fresh
    refusal's reason, without admission (:meth:`Restorer.still_deferred`), and keeps its
    memory, so the next sweep decides it. Everything else is admitted as before."""

    def __init__(
        self,
        deferred: DeferredFailures,
        remembered: dict[str, tuple[float, Deferral]],
        clock: Callable[[], float],
    ) -> None:
        self._deferred = deferred
        self._remembered = remembered
        self._clock = clock
        self._until: float | None = None
        self._refusal: Deferral | None = None
        self._standing: dict[str, list[tuple[Item, float, Deferral]]] = {}

    def noted(self, result: Result) -> None:
        """Learn from an item's result that the rate is full, and until when."""
        if not self._remembered or result.error_code != _HOLD_CODES_RATE:
            return
        if result.outcome is not Outcome.DEFERRED or result.event_id is None:
            return
        try:
            refused = self._deferred.standing([result.event_id]).get(result.event_id)
        except StoreUnavailable:
            return  # every later item is admitted, and fails closed there
        if refused is not None and refused[1].hold == HOLD_RATE:
            self._until, self._refusal = refused

    def answers(self, item: Item) -> bool:
        """Whether ``item`` is answered as still deferred by the full rate (at the end)."""
        if self._refusal is None or self._until is None or item.graph_name is None:
            return False
        entry = self._remembered.get(item.event_id)
        if entry is None or entry[1].hold != HOLD_RATE or entry[1].rule != self._refusal.rule:
            return False
        now = self._clock()
        if now >= self._until:
            self._refusal = None  # a slot is free again: admitted from here on
            return False
        if not self._deferred.kept_long(entry[0], now):
            return False  # admitted: remembered anew
        self._standing.setdefault(item.graph_name, []).append((item, self._until, self._refusal))
        return True

    def answer(self, run: _Run) -> None:
        """Answer the failures held so, one line per graph."""
        for graph, standing in self._standing.items():
            run.still_deferred(graph, standing)
        self._standing = {}


_HOLD_CODES_RATE = "RateLimited"  # a rate refusal's error code (see handler.pipeline.admission)


def _pause_of(pauses: Mapping[str, dict], graph: str) -> dict | None:
    """The pause that holds ``graph`` (its own, else every graph's), as admission finds it."""
    return pauses.get(graph) or pauses.get(ALL_GRAPHS)


def _stands(
    due_at: float, deferral: Deferral, pause: dict | None, holding: Holding, graph: str, now: float
) -> bool:
    """Whether a remembered deferral still stands: decided under the pause in force (a pause
    made since is a new one, with a reason of its own); or - no pause - by outage mode on a
    graph still held, and not yet due (a breaker's deferral is due when its canary may be
    taken or judged). A systemic hold's due time is only when to look again: it stands as
    long as the store says the outage is systemic and the graph's own breaker is not open
    (an open one goes by its own due times)."""
    if pause is not None:
        at = pause.get("at")
        return deferral.hold == HOLD_PAUSED and isinstance(at, (int, float)) and due_at >= at
    if not holding.holds(graph) or deferral.hold not in OUTAGE_HOLDS:
        return False
    if deferral.hold == HOLD_SYSTEMIC and holding.systemic and graph not in holding.open:
        return True
    return due_at > now


def _while(going_on: Callable[[], bool], pages: Iterable[T]) -> Iterator[T]:
    """The pages of a listing, the next one asked for (and so read) only while the sweep
    goes on: a listing is lazy, so a sweep out of time simply stops asking."""
    iterator = iter(pages)
    while going_on():
        page = next(iterator, None)
        if page is None:
            return
        yield page


class _Run:
    """One sweep's running state: its invocation, summary and results so far."""

    def __init__(
        self,
        restorer: Restorer,
        invocation: Invocation,
        summary: SweepSummary,
        results: list[Result],
        going_on: Callable[[], bool],
    ) -> None:
        self.invocation = invocation
        self.summary = summary
        self.going_on = going_on
        self._restorer = restorer
        self._results = results

    def still_deferred(self, graph: str, standing: list[tuple[Item, float, Deferral]]) -> None:
        """Failures whose deferral stands, answered and counted without admission."""
        results = self._restorer.still_deferred(graph, standing, self.invocation)
        self._results.extend(results)
        counted = self.summary.outcomes.get(Outcome.DEFERRED.value, 0)
        self.summary.outcomes[Outcome.DEFERRED.value] = counted + len(results)

    def handle(self, item: Item) -> Result:
        """One item through the restorer, counted in the summary; its result."""
        result = self._restorer.handle(item, self.invocation)
        self._results.append(result)
        outcome = result.outcome.value
        self.summary.outcomes[outcome] = self.summary.outcomes.get(outcome, 0) + 1
        return result
