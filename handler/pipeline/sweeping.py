"""Running a sweep: one lease, every graph in scope, each failure through the restorer.

:mod:`handler.sweep` lists; this module decides how much of what it lists is worked on (the
restore cap, the deadline), holds the lease that keeps sweeps from overlapping, and hands
each failure to :meth:`Restorer.handle <handler.pipeline.restorer.Restorer.handle>` like an
event item.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from handler.pipeline.delivery import Delivery, Invocation
from handler.store import StoreUnavailable
from handler.sweep import Lister, ListingError, SweepRequest, SweepSummary, time_left_until

if TYPE_CHECKING:
    from handler.client import DwrClient, WorkflowClient
    from handler.pipeline.restorer import Restorer

SWEEP_LEASE = "sweep:lease"  # the state-store key one sweep at a time holds


def run_sweep(
    restorer: Restorer, request: SweepRequest, invocation: Invocation
) -> tuple[Delivery, SweepSummary]:
    """Find failures by listing (:mod:`handler.sweep`) and restore them like events.

    One sweep at a time: a lease in the state store makes an overlapping sweep (a slow one
    and the next timer, or instances sharing Redis) end at once, "sweep in progress".
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
                restored = _restore_due_deferred(restorer, request, invocation, summary, delivery)
                request = replace(request, max_restores=request.max_restores - restored)
                _sweep_graphs(restorer, client, request, invocation, summary, delivery)
        finally:
            restorer.policy.release_lease(SWEEP_LEASE, lease)
    summary.duration_ms = (time.monotonic() - started) * 1000.0
    restorer.reporter.sweep_summary(summary.document(), invocation.id)
    return delivery, summary


def _take_lease(restorer: Restorer, invocation: Invocation, summary: SweepSummary) -> str | None:
    ttl = restorer.settings.claim_ttl
    if invocation.deadline is not None:
        ttl = max(1.0, invocation.deadline - time.monotonic() + 5.0)
    try:
        lease = restorer.policy.take_lease(SWEEP_LEASE, ttl)
    except StoreUnavailable as exc:
        summary.stopped = "state store unavailable"
        summary.errors.append({"graph": None, "errorCode": "StoreUnavailable"})
        restorer.reporter.store_problem(str(exc))
        return None
    if lease is None:
        summary.stopped = "sweep in progress"
    return lease


def _restore_due_deferred(
    restorer: Restorer,
    request: SweepRequest,
    invocation: Invocation,
    summary: SweepSummary,
    delivery: Delivery,
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
        summary.errors.append({"graph": None, "errorCode": "StoreUnavailable"})
        restorer.reporter.store_problem(str(exc))
        return 0
    time_left = time_left_until(invocation.deadline)
    restored = 0
    for item in items:
        if request.graphs and item.graph_name not in request.graphs:
            continue
        if not time_left():
            summary.stopped = "deadline"
            break
        outcome = restorer.handle(item, invocation, delivery)
        summary.outcomes[outcome] = summary.outcomes.get(outcome, 0) + 1
        if outcome == "restored":
            restored += 1
    return restored


def _sweep_graphs(
    restorer: Restorer,
    client: WorkflowClient | DwrClient,
    request: SweepRequest,
    invocation: Invocation,
    summary: SweepSummary,
    delivery: Delivery,
) -> None:
    time_left = time_left_until(invocation.deadline)
    lister = Lister(
        client,
        restorer.settings.workflow_api,
        summary,
        time_left=time_left,
        deadline=invocation.deadline,
        max_pages=restorer.settings.sweep_max_pages,
    )
    graphs = request.graphs or (g for g in lister.graphs() if restorer.settings.graph_allowed(g))
    restored = 0
    try:
        for graph in graphs:
            if not time_left():
                summary.stopped = "deadline"
                return
            summary.graphs_scanned += 1
            try:
                for failure in lister.failures(graph, request.lookback):
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
                        lister.restored()
            except ListingError as exc:
                summary.errors.append(listing_error(exc))
        if not time_left():
            summary.stopped = "deadline"
    except ListingError as exc:  # the list of graphs itself
        summary.errors.append(listing_error(exc))


def listing_error(exc: ListingError) -> dict[str, Any]:
    return {"graph": exc.graph, "status": exc.status, "errorCode": exc.error_code}
