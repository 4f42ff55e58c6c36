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
first, and at most :data:`WAITING_READ` waiting): ``countsLeftOff`` says some list was cut,
and its counts are the newest (or soonest due) ones only.
``lastSweep`` is the newest sweep's summary as the store keeps it (when it finished, how long
it took, why it stopped early if it did, what it found and what became of it), or null; each
graph's ``lastSweep`` is that graph's part in it - ``failuresFound`` by its listing, the
``errors`` named for it, and ``outcomes`` (outcome -> count) of its items - or null.
``notKept`` names the kinds of records a read-only store has no place for (a SQLite file from
an earlier version, see :class:`~handler.store.RecordsNotKept`): there are none of them, and
the figures read from them are zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from handler.store import RecordsNotKept, StateStore

__all__ = ["RECENT_LIMIT", "history_document", "status_document"]

RECENT_LIMIT = 1000
WAITING_READ = 1000
_HOUR, _DAY = 3600.0, 86400.0

_GAVE_UP = frozenset({"budget_exhausted", "failed"})
_LEFT_ALONE = "left alone: leave_on"  # the reason a leave_on rule gives
_NOTIFY_PREFIX = "notify:"  # handler.escalation's key family
T = TypeVar("T")


def status_document(store: StateStore, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """The status document; raises :class:`~handler.store.StoreUnavailable`."""
    now = clock()
    graphs: dict[str, dict[str, Any]] = {}
    not_kept: list[str] = []

    def graph(name: str) -> dict[str, Any]:
        return graphs.setdefault(name, {
            "paused": None, "breaker": "closed", "restoredLastHour": 0, "restoredLastDay": 0,
            "gaveUp": 0, "deferredWaiting": 0, "notificationsWaiting": 0, "lastSweep": None,
        })  # fmt: skip

    pauses = _kept(store.pauses, {}, not_kept)
    for subject, pause in pauses.items():
        if subject != "*":
            graph(subject)["paused"] = pause
    for breaker in _kept(store.breakers_open, [], not_kept):
        graph(breaker.graph)["breaker"] = breaker.state
    # Restores: the budget's reservations (each restore sent holds one), per window.
    left_off = False
    for window, field in ((_HOUR, "restoredLastHour"), (_DAY, "restoredLastDay")):
        held_by = store.recent(RECENT_LIMIT, window=window).get("budget", [])
        left_off = left_off or len(held_by) >= RECENT_LIMIT
        for held in held_by:
            name = str(held.get("subject", "")).partition("/")[0]
            if name:
                graph(name)[field] += int(held.get("used") or 0)
    records = store.recent(RECENT_LIMIT).get("dedupe", [])
    left_off = left_off or len(records) >= RECENT_LIMIT
    gave_up = {
        (record["graphName"], record.get("executionName"))
        for record in (entry.get("record") or {} for entry in records)
        if isinstance(record.get("graphName"), str) and _is_give_up(record)
    }
    for name, _ in gave_up:
        graph(name)["gaveUp"] += 1
    # Everything that waits, due or not yet: a failure a rule deferred for ten minutes waits
    # as much as one due now.
    waiting = _kept(lambda: store.waiting_deferred(WAITING_READ), [], not_kept)
    left_off = left_off or len(waiting) >= WAITING_READ
    for key, entry in waiting:
        if key.startswith(_NOTIFY_PREFIX):
            name = entry.get("graphName")
            if isinstance(name, str):
                graph(name)["notificationsWaiting"] += 1
        elif isinstance(entry.get("graph"), str):
            graph(entry["graph"])["deferredWaiting"] += 1
    last_sweep = _kept(store.last_sweep, None, not_kept)
    per_graph = (last_sweep or {}).get("perGraph")
    if isinstance(per_graph, dict):
        for name, part in per_graph.items():
            graph(name)["lastSweep"] = _graph_part(part)
    return {
        "store": store.describe,
        "allPaused": pauses.get("*"),
        "graphs": dict(sorted(graphs.items())),
        "countsLeftOff": left_off,
        "lastSweep": last_sweep,
        "notKept": not_kept,
        "at": now,
    }


def _kept(read: Callable[[], T], none: T, not_kept: list[str]) -> T:
    """``read()``, or ``none`` when the store keeps no such records (a read-only file from an
    earlier version: there are none), noting which in ``not_kept``."""
    try:
        return read()
    except RecordsNotKept as exc:
        not_kept.append(exc.kind)
        return none


def _graph_part(part: Any) -> dict[str, Any] | None:
    """A graph's part of the last sweep: ``{"failuresFound", "errors", "outcomes"}``. A
    record that kept only the outcomes (an earlier version's) says nothing of the rest."""
    if not isinstance(part, dict):
        return None
    if "outcomes" in part:
        return part
    return {"failuresFound": None, "errors": None, "outcomes": part}


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
    ``budget_window``; ``notKept`` names ``ledger`` when the store keeps none (a read-only
    file from before the ledger). Raises :class:`~handler.store.StoreUnavailable`."""
    not_kept: list[str] = []
    return {
        "graphName": graph,
        "executionName": execution,
        "entries": _kept(lambda: store.ledger(graph, execution), [], not_kept),
        "restoresSentAt": store.budget_times(f"{graph}/{execution}", budget_window),
        "notKept": not_kept,
    }
