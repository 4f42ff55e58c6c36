"""Running a sweep: one lease, every graph in scope, each failure through the restorer.

:mod:`handler.sweep` lists; this module decides how much of what it lists is worked on (the
restore cap, the deadline), holds the lease that keeps sweeps from overlapping, and hands
each failure to :meth:`Restorer.handle <handler.pipeline.restorer.Restorer.handle>` like an
event item. What goes wrong with one graph - its name, its listing, a bug - is named in the
summary's ``errors`` and the other graphs are swept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from handler.client import ListingError, WorkflowApi
from handler.names import InvalidNameError, validate_name
from handler.pipeline.delivery import Delivery, Invocation
from handler.store import StoreUnavailable
from handler.sweep import Failure, SweepRequest, SweepSummary, shown_name, time_left_until

if TYPE_CHECKING:
    from handler.pipeline.restorer import Restorer

SWEEP_LEASE = "sweep:lease"  # the state-store key one sweep at a time holds
# A lease held without a deadline is renewed this often, as a fraction of its TTL: two
# renewals may fail (the store briefly away) before it could expire.
LEASE_RENEW_FRACTION = 1 / 3
LEASE_LOST = "lease lost"


def run_sweep(
    restorer: Restorer, request: SweepRequest, invocation: Invocation
) -> tuple[Delivery, SweepSummary]:
    """Find failures by listing (:mod:`handler.sweep`) and restore them like events.

    One sweep at a time: a lease in the state store makes an overlapping sweep (a slow one
    and the next timer, or instances sharing Redis) end at once, "sweep in progress". The
    lease is held for as long as the sweep runs: sized to the invocation's deadline when it
    has one, else (the command line) renewed while it runs, so it can outlast
    ``RESTORE_CLAIM_TTL`` without a second sweep starting beside it.
    """
    started = time.monotonic()
    summary = SweepSummary()
    delivery = Delivery([])
    invocation = replace(invocation, dry_run=invocation.dry_run or request.dry_run)
    lease = _take_lease(restorer, invocation, summary)
    if lease is not None:
        try:
            client = restorer.client_for(invocation.credentials)
            if client is None:
                summary.errors.append({"graph": None, "errorCode": "NoCredentials"})
            else:
                time_left = time_left_until(invocation.deadline)

                def going_on() -> bool:
                    return time_left() and not lease.lost.is_set()

                restored = _restore_due_deferred(
                    restorer, request, invocation, summary, delivery, going_on
                )
                request = replace(request, max_restores=request.max_restores - restored)
                _sweep_graphs(restorer, client, request, invocation, summary, delivery, going_on)
        finally:
            lease.stop()
            restorer.policy.release_lease(SWEEP_LEASE, lease.token)
        if lease.lost.is_set():
            summary.stopped = LEASE_LOST
            summary.error(
                {
                    "graph": None,
                    "errorCode": "LeaseLost",
                    "message": "the sweep's lease could not be renewed: stopped so that no "
                    "second sweep runs beside this one",
                }
            )
    summary.duration_ms = (time.monotonic() - started) * 1000.0
    restorer.reporter.sweep_summary(summary.document(), invocation.id)
    return delivery, summary


class _Lease:
    """The sweep's lease; without a deadline, a background thread renews it while it runs.

    ``lost`` is set when a renewal is refused (someone else holds the lease now) or the
    store could not be reached before the lease would have expired: the sweep then stops at
    its next step, so that no two sweeps ever work side by side.
    """

    def __init__(self, restorer: Restorer, token: str, ttl: float, renew: bool) -> None:
        self.token = token
        self.lost = threading.Event()
        self._restorer = restorer
        self._ttl = ttl
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        if renew:
            self._thread = threading.Thread(target=self._keep, name="sweep-lease", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self._ttl)

    def _keep(self) -> None:
        policy = self._restorer.policy
        held_until = time.monotonic() + self._ttl
        while not self._stopping.wait(self._ttl * LEASE_RENEW_FRACTION):
            asked = time.monotonic()
            try:
                renewed = policy.renew_lease(SWEEP_LEASE, self.token, self._ttl)
            except StoreUnavailable as exc:
                if time.monotonic() >= held_until:
                    self._restorer.reporter.store_problem(str(exc))
                    self.lost.set()
                    return
                continue
            if not renewed:
                self.lost.set()
                return
            held_until = asked + self._ttl


def _take_lease(restorer: Restorer, invocation: Invocation, summary: SweepSummary) -> _Lease | None:
    ttl = restorer.settings.claim_ttl
    if invocation.deadline is not None:
        ttl = max(1.0, invocation.deadline - time.monotonic() + 5.0)
    try:
        token = restorer.policy.take_lease(SWEEP_LEASE, ttl)
    except StoreUnavailable as exc:
        summary.stopped = "state store unavailable"
        summary.errors.append({"graph": None, "errorCode": "StoreUnavailable"})
        restorer.reporter.store_problem(str(exc))
        return None
    if token is None:
        summary.stopped = "sweep in progress"
        return None
    return _Lease(restorer, token, ttl, renew=invocation.deadline is None)


def _restore_due_deferred(
    restorer: Restorer,
    request: SweepRequest,
    invocation: Invocation,
    summary: SweepSummary,
    delivery: Delivery,
    going_on: Callable[[], bool],
) -> int:
    """Hand the deferred failures that are due back to the restorer, before listing.

    A failure deferred by a rule's spacing may be due after every listing has dropped it
    (its delay outlasts the lookback), or was reported by an event no listing shows: the
    store remembers it until it has a final outcome. Each goes through the same admission,
    with the same identity (so dedupe holds), within the sweep's restore cap; returns how
    many were restored.
    """
    if request.max_restores < 1:
        return 0
    try:
        items = restorer.policy.due_deferred(request.max_restores)
    except StoreUnavailable as exc:
        summary.error({"graph": None, "errorCode": "StoreUnavailable"})
        restorer.reporter.store_problem(str(exc))
        return 0
    restored = 0
    for item in items:
        if request.graphs and item.graph_name not in request.graphs:
            continue
        if not going_on():
            summary.stopped = "deadline"
            break
        outcome = restorer.handle(item, invocation, delivery)
        summary.outcomes[outcome] = summary.outcomes.get(outcome, 0) + 1
        if outcome == "restored":
            restored += 1
    return restored


def _sweep_graphs(
    restorer: Restorer,
    client: WorkflowApi,
    request: SweepRequest,
    invocation: Invocation,
    summary: SweepSummary,
    delivery: Delivery,
    time_left: Callable[[], bool],
) -> None:
    max_pages = restorer.settings.sweep_max_pages
    deadline = invocation.deadline
    graphs = request.graphs or (
        g
        for g in client.listWorkflowNames(
            deadline=deadline, max_pages=max_pages, keep_going=time_left
        )
        if restorer.settings.graph_allowed(g)
    )
    since = datetime.now(timezone.utc) - timedelta(seconds=request.lookback)
    restored = 0
    swept: set[str] = set()  # a graph the list names twice is swept once
    try:
        for graph in graphs:
            if not time_left():
                summary.stopped = "deadline"
                return
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
            summary.graphs_scanned += 1
            listing = client.listFailedWorkflowExecutions(
                graph, since, deadline=deadline, max_pages=max_pages, keep_going=time_left
            )
            try:
                for row in listing:
                    try:
                        failure = Failure.listed(graph, row)
                    except InvalidNameError as exc:
                        summary.error(
                            {
                                "graph": graph,
                                "execution": shown_name(row.execution_name),
                                "errorCode": "InvalidExecutionName",
                                "message": str(exc),
                            }
                        )
                        continue
                    summary.failures_found += 1
                    restorer.reporter.failure_found(failure.event_data())
                    if restored >= request.max_restores:
                        summary.waiting += 1
                        continue
                    if not time_left():
                        summary.stopped = "deadline"
                        return
                    outcome = restorer.handle(failure.item(), invocation, delivery)
                    summary.outcomes[outcome] = summary.outcomes.get(outcome, 0) + 1
                    if outcome == "restored":
                        restored += 1
                        listing.restored()
            except ListingError as exc:
                summary.error(exc.document())
            except Exception as exc:  # a bug in one graph's listing must not cost the others
                restorer.reporter.crashed(exc)
                summary.error({"graph": graph, "errorCode": "InternalError"})
            finally:
                summary.pages += listing.pages
                summary.executions_listed += listing.listed
        if not time_left():
            summary.stopped = "deadline"
    except ListingError as exc:  # the list of graphs itself
        summary.error(exc.document())
    except Exception as exc:  # a bug in reading the list of graphs: the graphs swept stand
        restorer.reporter.crashed(exc)
        summary.error({"graph": None, "errorCode": "InternalError"})
