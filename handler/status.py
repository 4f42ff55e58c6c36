"""What an operator asks on a bad day: per graph, is it paused or held by its breaker, how many
restores in the last hour and day, how many given up, and what waits (deferred failures and
give-up messages not yet sent) - read from the state store alone, so ``status`` works wherever
the store is reachable and ``GET /status`` answers the same document.

Restores are the budget's reservations within the last hour and day; ``gaveUp`` counts the
executions given up on - ``budget_exhausted``, ``failed``, or ``skipped`` by a ``leave_on``
rule, not forced - among the outcomes the store still keeps (the dedupe retention), each
execution once however many events of it ended so; ``deferredWaiting`` every deferred failure
remembered, due or not yet, and ``notificationsWaiting`` the give-up messages in the outbox. The
counts come from the store's recent records (at most :data:`RECENT_LIMIT` of each, newest
first): ``countsLeftOff`` says there were more, and the counts are the newest ones only.
``lastSweep`` is the newest sweep's summary as the store keeps it (when it finished, how long
it took, why it stopped early if it did, what it found and what became of it), or null; each
graph's ``lastSweep`` is what became of that graph's items in it (outcome -> count), or null.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from handler.store import StateStore

__all__ = ["RECENT_LIMIT", "history_document", "status_document"]

RECENT_LIMIT = 1000
WAITING_READ = 1000
_HOUR, _DAY = 3600.0, 86400.0

_GAVE_UP = frozenset({"budget_exhausted", "failed"})
_LEFT_ALONE = "left alone: leave_on"  # the reason a leave_on rule gives
_NOTIFY_PREFIX = "notify:"  # handler.escalation's key family


def status_document(store: StateStore, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """The status document; raises :class:`~handler.store.StoreUnavailable`."""
    now = clock()
    graphs: dict[str, dict[str, Any]] = {}

    def graph(name: str) -> dict[str, Any]:
        return graphs.setdefault(name, {
            "paused": None, "breaker": "closed", "restoredLastHour": 0, "restoredLastDay": 0,
            "gaveUp": 0, "deferredWaiting": 0, "notificationsWaiting": 0, "lastSweep": None,
        })  # fmt: skip

    pauses = store.pauses()
    for subject, pause in pauses.items():
        if subject != "*":
            graph(subject)["paused"] = pause
    for breaker in store.breakers_open():
        graph(breaker.graph)["breaker"] = breaker.state
    # Restores: the budget's reservations (each restore sent holds one), per window.
    for window, field in ((_HOUR, "restoredLastHour"), (_DAY, "restoredLastDay")):
        for held in store.recent(RECENT_LIMIT, window=window).get("budget", []):
            name = str(held.get("subject", "")).partition("/")[0]
            if name:
                graph(name)[field] += int(held.get("used") or 0)
    records = store.recent(RECENT_LIMIT).get("dedupe", [])
    gave_up = {
        (record["graphName"], record.get("executionName"))
        for record in (entry.get("record") or {} for entry in records)
        if isinstance(record.get("graphName"), str) and _is_give_up(record)
    }
    for name, _ in gave_up:
        graph(name)["gaveUp"] += 1
    # Everything that waits, due or not yet: a failure a rule deferred for ten minutes waits
    # as much as one due now.
    for key, entry in store.waiting_deferred(WAITING_READ):
        if key.startswith(_NOTIFY_PREFIX):
            name = entry.get("graphName")
            if isinstance(name, str):
                graph(name)["notificationsWaiting"] += 1
        elif isinstance(entry.get("graph"), str):
            graph(entry["graph"])["deferredWaiting"] += 1
    last_sweep = store.last_sweep()
    per_graph = (last_sweep or {}).get("perGraph")
    if isinstance(per_graph, dict):
        for name, outcomes in per_graph.items():
            graph(name)["lastSweep"] = outcomes
    return {
        "store": store.describe,
        "allPaused": pauses.get("*"),
        "graphs": dict(sorted(graphs.items())),
        "countsLeftOff": len(records) >= RECENT_LIMIT,
        "lastSweep": last_sweep,
        "at": now,
    }


def _is_give_up(record: dict[str, Any]) -> bool:
    """Whether a recorded outcome is a give-up (as :mod:`handler.escalation` tells them):
    budget exhausted, refused, or left alone by a ``leave_on`` rule - never a forced one."""
    if record.get("forced"):
        return False
    if record.get("outcome") in _GAVE_UP:
        return True
    reason = record.get("reason")
    return record.get("outcome") == "skipped" and str(reason).startswith(_LEFT_ALONE)


def history_document(
    store: StateStore, graph: str, execution: str, budget_window: float
) -> dict[str, Any]:
    """One execution's ledger (:mod:`handler.ledger`), oldest first - each failure seen, what
    became of it, each give-up message - and the restores its budget holds within
    ``budget_window``. Raises :class:`~handler.store.StoreUnavailable`."""
    return {
        "graphName": graph,
        "executionName": execution,
        "entries": store.ledger(graph, execution),
        "restoresSentAt": store.budget_times(f"{graph}/{execution}", budget_window),
    }
