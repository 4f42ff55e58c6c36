"""The in-process backend (``memory://``): tests, the demo and the operator CLI.

Nothing to set up and nothing left behind, with the same contract as the shared backends - so
tests and the demo exercise the pipeline's real dedupe and budget logic. A function instance
in production uses SQLite or Redis: what is held here dies with the process.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Collection, Mapping

from handler.store import breaker_steps as steps
from handler.store.base import (
    ACQUIRED,
    BUSY,
    CLOSED,
    DONE,
    IN_PROGRESS,
    REFAILURES_KEPT,
    RESERVED,
    SPENT,
    BreakerState,
    Claim,
    LedgerBatch,
    RateSlot,
    Refailure,
    Reservation,
    budget_kept,
    check_keys,
    check_limit,
    check_quiet_marks,
    check_text,
    check_time,
    dump_record,
    free_slot_at,
    ledger_batch,
    new_token,
    positive_seconds,
    recent_view,
    settled_item,
)


class MemoryStore:
    """In-process store: correct for the threads of one process, invisible to any other.

    Expired entries are swept once the calls since the last sweep outnumber the entries, so
    the sweeping cost per call stays constant on average.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (state, token, expires_at, record_json, updated_at)
        self._dedupe: dict[str, tuple[str, str, float, str | None, float]] = {}
        # subject -> token -> (at, expires_at, in flight until; None once settled)
        self._budget: dict[str, dict[str, tuple[float, float, float | None]]] = {}
        # failure key -> (first seen at, expires_at)
        self._seen: dict[str, tuple[float, float]] = {}
        # item key -> (failure_json, due_at, expires_at)
        self._deferred: dict[str, tuple[str, float, float]] = {}
        # rate subject -> slot token -> (taken at, expires_at: one interval later)
        self._rate: dict[str, dict[str, tuple[float, float]]] = {}
        # graph -> its breaker record; graph -> execution -> (re-failed at, expires_at)
        self._breakers: dict[str, steps.BreakerRecord] = {}
        self._refailures: dict[str, dict[str, tuple[float, float]]] = {}
        # paused subject (a graph or "*") -> (record_json, until)
        self._pauses: dict[str, tuple[str, float]] = {}
        # (graph, execution) -> its ledger, oldest first: (entry_json, expires_at)
        self._ledgers: dict[tuple[str, str], list[tuple[str, float]]] = {}
        self._quiet: dict[str, float] = {}  # graph -> until when a sweep may skip listing it
        self._last_sweep: str | None = None
        self._calls = 0

    @property
    def describe(self) -> str:
        return "memory://"

    def __repr__(self) -> str:
        return "MemoryStore('memory://')"

    def claim(self, key: str, ttl: float) -> Claim:
        check_text("key", key)
        ttl = positive_seconds("ttl", ttl)
        with self._lock:
            now = self._clock()
            self._sweep(now)
            entry = self._dedupe.get(key)
            if entry is not None and entry[2] > now:
                if entry[0] == DONE:
                    return Claim(False, "", DONE, json.loads(entry[3] or "{}"))
                return Claim(False, "", IN_PROGRESS, None)
            token = new_token()
            self._dedupe[key] = (IN_PROGRESS, token, now + ttl, None, now)
            return Claim(True, token, ACQUIRED, None)

    def finish(self, key: str, token: str, record: dict, retention: float) -> None:
        check_text("key", key)
        retention = positive_seconds("retention", retention)
        data = dump_record(record)
        with self._lock:
            now = self._clock()
            self._dedupe[key] = (DONE, token, now + retention, data, now)
            self._deferred.pop(key, None)

    def release(self, key: str, token: str) -> None:
        check_text("key", key)
        with self._lock:
            entry = self._dedupe.get(key)
            if entry is not None and entry[0] == IN_PROGRESS and entry[1] == token:
                del self._dedupe[key]

    def renew(self, key: str, token: str, ttl: float) -> bool:
        check_text("key", key)
        ttl = positive_seconds("ttl", ttl)
        with self._lock:
            now = self._clock()
            entry = self._dedupe.get(key)
            if entry is None or entry[0] != IN_PROGRESS or entry[1] != token or entry[2] <= now:
                return False
            self._dedupe[key] = (IN_PROGRESS, token, now + ttl, None, entry[4])
            return True

    def reserve_budget(
        self,
        subject: str,
        limit: int,
        window: float,
        *,
        in_flight: float,
        keep: float | None = None,
    ) -> Reservation:
        check_text("subject", subject)
        limit = check_limit(limit)
        window = positive_seconds("window", window)
        in_flight = positive_seconds("in_flight", in_flight)
        kept = budget_kept(window, keep)
        with self._lock:
            now = self._clock()
            self._sweep(now)
            live = self._live(subject, window, now)
            if len(live) >= limit:
                spent = sum(1 for _, until in live if until is None or until <= now)
                return Reservation(False, "", SPENT if spent >= limit else BUSY)
            token = new_token()
            self._budget.setdefault(subject, {})[token] = (now, now + kept, now + in_flight)
            return Reservation(True, token, RESERVED)

    def settle_budget(self, subject: str, token: str) -> None:
        with self._lock:
            held = self._budget.get(subject, {})
            if token in held:
                at, expires_at, _ = held[token]
                held[token] = (at, expires_at, None)

    def refund_budget(self, subject: str, token: str) -> None:
        with self._lock:
            held = self._budget.get(subject)
            if held is not None:
                held.pop(token, None)
                if not held:
                    del self._budget[subject]

    def budget_used(self, subject: str, window: float, *, spent_only: bool = False) -> int:
        window = positive_seconds("window", window)
        with self._lock:
            now = self._clock()
            live = self._live(subject, window, now)
        if spent_only:
            return sum(1 for _, until in live if until is None or until <= now)
        return len(live)

    def budget_times(self, subject: str, window: float) -> list[float]:
        window = positive_seconds("window", window)
        with self._lock:
            return sorted(at for at, _ in self._live(subject, window, self._clock()))

    def _live(self, subject: str, window: float, now: float) -> list[tuple[float, float | None]]:
        """(made at, in flight until) of ``subject``'s reservations kept and within ``window``."""
        held = self._budget.get(subject, {})
        return [
            (at, until)
            for at, expires_at, until in held.values()
            if at > now - window and expires_at > now
        ]

    def first_seen(self, key: str, retention: float, *, after: float | None = None) -> float:
        check_text("key", key)
        retention = positive_seconds("retention", retention)
        with self._lock:
            now = self._clock()
            self._sweep(now)
            seen = self._seen.get(key)
            if seen is not None and seen[1] > now and (after is None or seen[0] > after):
                return seen[0]
            self._seen[key] = (now, now + retention)
            return now

    def remember_deferred(self, key: str, failure: dict, due_at: float, retention: float) -> None:
        check_text("key", key)
        retention = positive_seconds("retention", retention)
        data = dump_record(failure)
        due_at = check_time("due_at", due_at)
        with self._lock:
            self._sweep(self._clock())
            self._deferred[key] = (data, due_at, due_at + retention)

    def due_deferred(self, limit: int) -> list[tuple[str, dict]]:
        limit = check_limit(limit)
        with self._lock:
            now = self._clock()
            due = sorted(
                (due_at, key, data)
                for key, (data, due_at, expires_at) in self._deferred.items()
                if due_at <= now < expires_at
            )
        return [(key, json.loads(data)) for _, key, data in due[: max(limit, 0)]]

    def take_rate_slot(self, subject: str, limit: int, interval: float) -> RateSlot:
        check_text("subject", subject)
        limit = check_limit(limit)
        interval = positive_seconds("interval", interval)
        with self._lock:
            now = self._clock()
            self._sweep(now)
            held = self._rate.setdefault(subject, {})
            for token in [t for t, (at, _) in held.items() if at <= now - interval]:
                del held[token]
            if len(held) < limit:
                token = new_token()
                held[token] = (now, now + interval)
                return RateSlot(True, token, now)
            times = sorted(at for at, _ in held.values())
            if not held:
                del self._rate[subject]
            return RateSlot(False, "", free_slot_at(times, limit, interval))

    def return_rate_slot(self, subject: str, token: str) -> None:
        with self._lock:
            held = self._rate.get(subject)
            if held is not None:
                held.pop(token, None)

    def rate_used(self, subject: str, interval: float) -> int:
        interval = positive_seconds("interval", interval)
        with self._lock:
            now = self._clock()
            held = self._rate.get(subject, {}).values()
            return sum(1 for at, expires_at in held if at > now - interval and expires_at > now)

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
        check_text("graph", graph)
        check_text("execution", execution)
        failed_at = check_time("failed_at", failed_at)
        window = positive_seconds("window", window)
        threshold = check_limit(threshold)
        cooldown = positive_seconds("cooldown", cooldown)
        with self._lock:
            now = self._clock()
            self._sweep(now)
            failed_at = min(failed_at, now)
            record = steps.live(self._breakers.get(graph), now)
            held = self._refailures.setdefault(graph, {})
            if steps.counts(record, failed_at, now, window):
                latest = max(failed_at, held.get(execution, (failed_at, 0.0))[0])
                held[execution] = (latest, latest + window)
                if len(held) > REFAILURES_KEPT:
                    oldest = sorted(held, key=lambda name: held[name][0])
                    for name in oldest[: len(held) - REFAILURES_KEPT]:
                        del held[name]
            evidence = self._evidence(graph, now, window)
            opened = steps.after_refailure(
                record, len(evidence), now, threshold=threshold, cooldown=cooldown, window=window
            )
            if opened is not None:
                self._breakers[graph] = record = opened
            return steps.state_of(graph, record, evidence, changed=opened is not None)

    def breaker(self, graph: str, *, window: float) -> BreakerState:
        check_text("graph", graph)
        window = positive_seconds("window", window)
        with self._lock:
            now = self._clock()
            record = steps.live(self._breakers.get(graph), now)
            return steps.state_of(graph, record, self._evidence(graph, now, window))

    def take_canary(self, graph: str, execution: str, *, window: float) -> BreakerState:
        check_text("graph", graph)
        check_text("execution", execution)
        window = positive_seconds("window", window)
        token = new_token()
        return self._transition(
            graph,
            lambda record, now: steps.after_take_canary(
                record, execution, token, now, window=window
            ),
        )

    def close_breaker(self, graph: str, token: str, *, window: float) -> BreakerState:
        check_text("graph", graph)
        window = positive_seconds("window", window)
        answer = self._transition(
            graph, lambda record, now: steps.after_close(record, token, now, window=window)
        )
        if answer.changed:
            with self._lock:
                self._refailures.pop(graph, None)
        return answer

    def reopen_breaker(
        self, graph: str, token: str, *, max_cooldown: float, window: float
    ) -> BreakerState:
        check_text("graph", graph)
        max_cooldown = positive_seconds("max_cooldown", max_cooldown)
        window = positive_seconds("window", window)
        return self._transition(
            graph,
            lambda record, now: steps.after_reopen(
                record, token, now, max_cooldown=max_cooldown, window=window
            ),
        )

    def release_canary(self, graph: str, token: str, *, window: float) -> BreakerState:
        check_text("graph", graph)
        window = positive_seconds("window", window)
        return self._transition(
            graph, lambda record, now: steps.after_release(record, token, now, window=window)
        )

    def breakers_open(self) -> list[BreakerState]:
        with self._lock:
            now = self._clock()
            held = [
                (record.opened_at or 0.0, graph, record)
                for graph, record in self._breakers.items()
                if record.expires_at > now and record.state != CLOSED
            ]
        return [steps.state_of(graph, record) for _, graph, record in sorted(held)]

    def pause(self, subject: str, record: dict, until: float) -> None:
        check_text("subject", subject)
        data = dump_record(record)
        until = check_time("until", until)
        with self._lock:
            self._pauses[subject] = (data, until)

    def resume(self, subject: str) -> bool:
        check_text("subject", subject)
        with self._lock:
            found = self._pauses.pop(subject, None)
        return found is not None and found[1] > self._clock()

    def pauses(self) -> dict[str, dict]:
        now = self._clock()
        with self._lock:
            for subject in [s for s, (_, until) in self._pauses.items() if until <= now]:
                del self._pauses[subject]  # a pause expires by itself
            live = dict(self._pauses)
        return {s: {**json.loads(data), "until": until} for s, (data, until) in live.items()}

    def reset_breaker(self, graph: str) -> bool:
        check_text("graph", graph)
        with self._lock:
            record = steps.live(self._breakers.pop(graph, None), self._clock())
            self._refailures.pop(graph, None)
        return record is not None and record.state != CLOSED

    def _transition(self, graph: str, step) -> BreakerState:
        """Apply one breaker step under the lock; the answer says whether it changed."""
        with self._lock:
            now = self._clock()
            self._sweep(now)
            record = steps.live(self._breakers.get(graph), now)
            changed = step(record, now)
            if changed is not None:
                self._breakers[graph] = record = changed
            return steps.state_of(graph, record, changed=changed is not None)

    def _evidence(self, graph: str, now: float, window: float) -> tuple[Refailure, ...]:
        """The graph's re-failures within ``window``, oldest first; the caller holds the lock."""
        held = self._refailures.get(graph, {})
        return tuple(
            Refailure(execution, at)
            for at, execution in sorted((at, name) for name, (at, _) in held.items())
            if at > now - window
        )

    def recent(self, limit: int = 20, *, window: float | None = None) -> dict:
        with self._lock:
            now = self._clock()
            dedupe = [
                {
                    "key": key,
                    "state": state,
                    "expires_at": expires_at,
                    "record": json.loads(data) if data is not None else None,
                    "updated_at": updated_at,
                }
                for key, (state, _, expires_at, data, updated_at) in self._dedupe.items()
                if expires_at > now
            ]
            budget = []
            for subject, held in self._budget.items():
                live = [
                    at
                    for at, expires_at, _ in held.values()
                    if expires_at > now and (window is None or at > now - window)
                ]
                if live:
                    budget.append({"subject": subject, "used": len(live), "last_at": max(live)})
        return recent_view(dedupe, budget, limit)

    def forget(self, key: str) -> bool:
        check_text("key", key)
        with self._lock:
            entry = self._dedupe.pop(key, None)
            return entry is not None and entry[2] > self._clock()

    def reset_budget(self, subject: str) -> int:
        check_text("subject", subject)
        with self._lock:
            return len(self._budget.pop(subject, {}))

    def check_writable(self) -> None:
        return None  # process memory: writable while the process lives

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _sweep(self, now: float) -> None:
        """Drop expired entries, amortised: one full pass per ``len(entries)`` calls."""
        self._calls += 1
        entries = len(self._dedupe) + len(self._budget) + len(self._seen) + len(self._deferred)
        entries += len(self._rate) + len(self._breakers) + len(self._refailures)
        entries += len(self._ledgers)
        if self._calls < max(64, entries):
            return
        self._calls = 0
        for key in [k for k, entry in self._dedupe.items() if entry[2] <= now]:
            del self._dedupe[key]
        for key in [k for k, (_, expires_at) in self._seen.items() if expires_at <= now]:
            del self._seen[key]
        for key in [k for k, (_, _, expires_at) in self._deferred.items() if expires_at <= now]:
            del self._deferred[key]
        for subject in list(self._budget):
            held = self._budget[subject]
            for token in [t for t, (_, expires_at, _) in held.items() if expires_at <= now]:
                del held[token]
            if not held:
                del self._budget[subject]
        for subject in list(self._rate):
            slots = self._rate[subject]
            for token in [t for t, (_, expires_at) in slots.items() if expires_at <= now]:
                del slots[token]
            if not slots:
                del self._rate[subject]
        for key in [k for k, record in self._breakers.items() if record.expires_at <= now]:
            del self._breakers[key]
        for graph in list(self._refailures):
            kept = self._refailures[graph]
            for name in [n for n, (_, expires_at) in kept.items() if expires_at <= now]:
                del kept[name]
            if not kept:
                del self._refailures[graph]
        for name in list(self._ledgers):
            self._ledgers[name] = [e for e in self._ledgers[name] if e[1] > now]
            if not self._ledgers[name]:
                del self._ledgers[name]

    def ledger_append(
        self, graph: str, execution: str, entries: list[dict], *, keep: float, max_entries: int
    ) -> None:
        keep, max_entries, data = ledger_batch(graph, execution, entries, keep, max_entries)
        with self._lock:
            now = self._clock()
            self._sweep(now)
            held = self._ledgers.setdefault((graph, execution), [])
            held[:] = [entry for entry in held if entry[1] > now]
            held.extend((item, now + keep) for item in data)
            del held[: max(0, len(held) - max_entries)]

    def ledger(self, graph: str, execution: str) -> list[dict]:
        check_text("graph", graph)
        check_text("execution", execution)
        with self._lock:
            now = self._clock()
            held = list(self._ledgers.get((graph, execution), ()))
        return [json.loads(data) for data, expires_at in held if expires_at > now]

    def record_sweep(self, summary: dict) -> None:
        data = dump_record(summary)
        with self._lock:
            self._last_sweep = data

    def last_sweep(self) -> dict | None:
        with self._lock:
            data = self._last_sweep
        return json.loads(data) if data is not None else None

    def waiting_deferred(self, limit: int) -> list[tuple[str, dict]]:
        limit = check_limit(limit)
        with self._lock:
            now = self._clock()
            waiting = sorted(
                (due_at, key, data)
                for key, (data, due_at, expires_at) in self._deferred.items()
                if expires_at > now
            )
        return [(key, json.loads(data)) for _, key, data in waiting[: max(limit, 0)]]

    def quiet_until(self) -> dict[str, float]:
        now = self._clock()
        with self._lock:
            return {graph: until for graph, until in self._quiet.items() if until > now}

    def set_quiet_until(self, marks: Mapping[str, float]) -> None:
        marks = check_quiet_marks(marks)
        now = self._clock()
        with self._lock:
            quiet = self._quiet
            quiet.update(marks)
            for graph in [g for g, until in quiet.items() if until <= now]:
                del quiet[graph]  # passed, or forgotten on purpose: the graph is listed

    def deferred_among(self, keys: Collection[str]) -> dict[str, tuple[float, dict]]:
        keys = check_keys(keys)
        with self._lock:
            now = self._clock()
            entries = [(key, self._deferred.get(key)) for key in keys]
        return {
            key: (entry[1], json.loads(entry[0]))
            for key, entry in entries
            if entry is not None and entry[2] > now
        }

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
        data, retention = settled_item(key, record, retention, budget)
        batch = None if ledger is None else (ledger.graph, ledger.execution, *ledger_batch(*ledger))
        with self._lock:  # one lock: nobody sees the item half settled
            now = self._clock()
            if budget is not None:
                subject, unit = budget
                held = self._budget.get(subject, {})
                if unit in held and spent:
                    at, expires_at, _ = held[unit]
                    held[unit] = (at, expires_at, None)
                elif unit in held:
                    del held[unit]
                    if not held:
                        del self._budget[subject]
            entry = self._dedupe.get(key)
            if data is not None:
                self._dedupe[key] = (DONE, token, now + retention, data, now)
                self._deferred.pop(key, None)
            elif entry is not None and entry[0] == IN_PROGRESS and entry[1] == token:
                del self._dedupe[key]
            if batch is not None:
                graph, execution, keep, max_entries, lines = batch
                self._sweep(now)
                kept = self._ledgers.setdefault((graph, execution), [])
                kept[:] = [line for line in kept if line[1] > now]
                kept.extend((line, now + keep) for line in lines)
                del kept[: max(0, len(kept) - max_entries)]
