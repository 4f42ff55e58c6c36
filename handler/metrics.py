"""Metrics in Cloud Eye: what each invocation did, per graph, in one batched call at its end.

:class:`InvocationMetrics` is an observer of the restorer: it counts every result (after its
log line, no I/O) and :meth:`InvocationMetrics.flush` - at the end of the invocation, where
the sink is flushed - sends what it counted in one ``POST /V1.0/{project_id}/metric-data``
(more only when 512 KB cannot hold it), bounded in time. Metrics never block an outcome: a
send that fails is logged and, when Cloud Eye surely did not take it (refused before it left,
5xx, 429), kept for the next flush; one whose answer was lost is dropped, because sending it
again could count it twice, and a missing point is a gap an alarm can treat as such while a
doubled one is a lie.

Every metric has the one dimension ``graph``:

* ``restored``, ``failed``, ``deferred``, ``retryable`` - items that ended so;
* ``gave_up`` - the give-ups (:func:`handler.escalation.give_up_reason`): ``budget_exhausted``,
  ``failed``, left alone by a ``leave_on`` rule;
* ``failures_found`` - every failure this invocation handled (a redelivery of one already
  handled is not found again);
* ``breaker_open`` - 1 while the graph's circuit breaker is open or half-open, else 0 (for
  each graph the invocation counted, from the state store at the flush);
* ``time_to_restore`` - for each accepted restore, the seconds from the failure's stop time to
  the restore (only when the stop time is known: the event said it, or a DWR query did).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from handler.client.ces import CesClient, InvalidMetricError, MetricDatum, metric_batches
from handler.client.sending import SendOutcome
from handler.credentials import Credentials
from handler.escalation import give_up_reason
from handler.invocation import Invocation
from handler.outcomes import Outcome, Result
from handler.report import Reporter
from handler.store import StateStore, StoreUnavailable

__all__ = ["COUNTED", "InvocationMetrics"]

# The counters, and which outcome each counts (gave_up and failures_found are computed).
COUNTED = {
    "restored": Outcome.RESTORED,
    "failed": Outcome.FAILED,
    "deferred": Outcome.DEFERRED,
    "retryable": Outcome.RETRYABLE_ERROR,
}
_KEPT_POINTS = 10_000  # what a Cloud Eye outage may pile up before the oldest are dropped

Sender = Callable[[Credentials], CesClient]


@dataclass
class _Counts:
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (metric, graph) -> n
    restore_times: list[tuple[str, float, float]] = field(default_factory=list)  # graph, s, at


class InvocationMetrics:
    """Counts results as they come, sends them at :meth:`flush`; safe between threads.

    ``sender`` makes the Cloud Eye client for a set of credentials (the settings' keys, else
    the last invocation's agency keys).
    """

    def __init__(
        self,
        reporter: Reporter,
        store: StateStore,
        sender: Sender,
        credentials: Credentials | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reporter = reporter
        self._store = store
        self._sender = sender
        self._credentials = credentials
        self._clock = clock
        self._lock = threading.Lock()
        self._pending = _Counts()
        self._clients: dict[Credentials, CesClient] = {}

    def __call__(self, result: Result, invocation: Invocation) -> None:
        """Count one result (memory only)."""
        if invocation.credentials is not None and self._credentials is None:
            self._credentials = invocation.credentials
        graph = result.graph_name
        if not graph or result.outcome is Outcome.DUPLICATE:
            return  # nothing about a graph, or nothing new: a redelivery
        now = self._clock()
        with self._lock:
            counts = self._pending.counts
            counts["failures_found", graph] += 1
            for name, outcome in COUNTED.items():
                counts[name, graph] += result.outcome is outcome
            counts["gave_up", graph] += give_up_reason(result) is not None
            if result.outcome is Outcome.RESTORED and result.failed_at is not None:
                seconds = max(0.0, now - result.failed_at)
                self._pending.restore_times.append((graph, seconds, now))

    def flush(self, seconds: float) -> bool:
        """Send what was counted since the last flush within ``seconds``; True when Cloud Eye
        took it (or there was nothing to send)."""
        deadline = time.monotonic() + max(0.0, seconds)
        with self._lock:
            taken, self._pending = self._pending, _Counts()
        if not taken.counts:
            return True
        client = self._client()
        if client is None:
            self._reporter.notification(
                logging.WARNING, "metrics not sent", {"reason": "no credentials"}
            )
            return False
        data = _data(taken, self._clock(), self._breakers_open())
        try:
            batches = metric_batches(client.namespace, data)
        except InvalidMetricError as exc:  # a graph name Cloud Eye refuses: say so, move on
            self._reporter.notification(logging.ERROR, "metrics refused", {"reason": str(exc)})
            return False
        for batch in batches:
            result = client.put_metric_data(batch, deadline=deadline)
            if result.outcome is SendOutcome.ACCEPTED:
                continue
            fields = {"status": result.status, "errorCode": result.error_code,
                      "errorMessage": result.error_message, "points": len(data)}  # fmt: skip
            if result.outcome is SendOutcome.TRANSIENT and not result.maybe_sent:
                self._keep(taken)
                self._reporter.notification(logging.WARNING, "metrics kept for later", fields)
            else:
                self._reporter.notification(logging.ERROR, "metrics not sent", fields)
            return False
        return True

    def _breakers_open(self) -> frozenset[str] | None:
        """The graphs whose breaker is not closed; None when the store cannot say (then no
        ``breaker_open`` point is sent rather than a false 0)."""
        try:
            return frozenset(breaker.graph for breaker in self._store.breakers_open())
        except StoreUnavailable:
            return None

    def _keep(self, taken: _Counts) -> None:
        """Put counts back for the next flush (Cloud Eye surely did not take them)."""
        with self._lock:
            self._pending.counts.update(taken.counts)
            times = taken.restore_times + self._pending.restore_times
            self._pending.restore_times = times[-_KEPT_POINTS:]

    def _client(self) -> CesClient | None:
        credentials = self._credentials
        if credentials is None:
            return None
        if credentials not in self._clients:
            self._clients[credentials] = self._sender(credentials)
        return self._clients[credentials]


def _data(taken: _Counts, now: float, open_breakers: frozenset[str] | None) -> list[MetricDatum]:
    now_ms = int(now * 1000)
    data = [
        MetricDatum(name, value, {"graph": graph}, now_ms, unit="count")
        for (name, graph), value in sorted(taken.counts.items())
    ]
    if open_breakers is not None:
        graphs = sorted({graph for _, graph in taken.counts})
        data += [
            MetricDatum("breaker_open", int(graph in open_breakers), {"graph": graph}, now_ms)
            for graph in graphs
        ]
    data += [
        MetricDatum(
            "time_to_restore",
            round(seconds, 3),
            {"graph": graph},
            int(at * 1000),
            unit="s",
            type="float",
        )
        for graph, seconds, at in taken.restore_times
    ]
    return data
