"""The ledger: what happened to one execution, entry by entry, for ``history``.

Every failure the function saw (its identity, when it stopped, the execution's error text when
the API gave it, and the door it came in by: ``event``, ``sweep`` or ``cli``), what became of
it (a restore sent - its outcome, rule and the API's request id - or a decision that sent
none: deferred, skipped, given up), and every give-up message (queued, sent alone or in a
digest, kept after SMN did not take it, refused). :class:`Ledger` gives the first two to the
restorer, which writes them in the store step that settles the item (:meth:`Ledger.batch`;
as an observer, after the log line, when there was nothing to settle or that step failed) -
and :mod:`handler.escalation` the messages.

Telling operators never changes or delays an outcome: a ledger the store cannot write is one
``ledger not written`` line, nothing else. Entries carry only what an item's answer carries
(never a log line's ``detail``, which may name hosts or paths), so no secret reaches them.

Each entry is kept for ``RESTORE_DEDUPE_RETENTION`` - as long as the outcome it tells of
answers redeliveries - and an execution's ledger holds at most :data:`MAX_ENTRIES`, the
newest: a failure handled takes two entries and a give-up two more, so fifty hold a whole
day of an execution restored and failing again under the default budget (three restores a
day) with room for redeliveries and retries, while one execution failing all day in a loop
can never grow its record past about 52 KB (fifty entries with every text at its
:data:`TEXT_CHARS` cut; a typical ledger of that size is under 10 KB).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from handler.invocation import Invocation
from handler.outcomes import Outcome, Result
from handler.report import Reporter
from handler.store import StateStore, StoreUnavailable
from handler.store.base import LedgerBatch

__all__ = ["MAX_ENTRIES", "TEXT_CHARS", "Ledger", "iso_utc"]

MAX_ENTRIES = 50
TEXT_CHARS = 500  # an error text or reason is cut here: the ledger is read, not archived


def iso_utc(seconds: float) -> str:
    """Wall-clock seconds as ISO 8601 UTC to the second: what an operator reads."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Ledger:
    """Writes executions' ledger entries; called as the restorer's observer for outcomes."""

    def __init__(
        self,
        store: StateStore,
        keep: float,
        reporter: Reporter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._keep = keep
        self._reporter = reporter
        self._clock = clock

    def __call__(self, result: Result, invocation: Invocation) -> None:
        """The failure an item was, and what became of it (nothing for a redelivery of a
        handled item, a request that was no failure, a dry run, which changes nothing, or an
        outcome that stands from before: the entries of its decision are there already)."""
        batch = self.batch(result, invocation)
        if batch is not None:
            self.append(batch.graph, batch.execution, batch.entries)

    def batch(self, result: Result, invocation: Invocation) -> LedgerBatch | None:
        """The entries :meth:`__call__` would write for ``result``, for the restorer to write
        in the same store step as the item's settlement (one write, not two); None when
        there are none."""
        if invocation.dry_run or result.door is None or result.outcome is Outcome.DUPLICATE:
            return None
        if result.standing:
            return None
        if not result.graph_name or not result.execution_name:
            return None
        at = iso_utc(self._clock())
        seen = {
            "at": at,
            "kind": "failure",
            "eventId": result.event_id,
            "door": result.door,
            "stoppedAt": iso_utc(result.failed_at) if result.failed_at is not None else None,
            "executionError": _cut(result.execution_error),
        }
        entries = [seen, _became(result, at)]
        return LedgerBatch(
            result.graph_name, result.execution_name, entries, self._keep, MAX_ENTRIES
        )

    def notification(self, graph: str, execution: str, state: str, **fields: Any) -> None:
        """A give-up message's step: ``queued``, ``sent``, ``kept`` (SMN did not take it;
        the next invocation sends it) or ``refused``."""
        entry = {"at": iso_utc(self._clock()), "kind": "notification", "state": state, **fields}
        self.append(graph, execution, [entry])

    def append(self, graph: str, execution: str, entries: list[dict[str, Any]]) -> None:
        """Write ``entries``; a store that cannot is logged, and costs nothing else."""
        try:
            self._store.ledger_append(
                graph, execution, entries, keep=self._keep, max_entries=MAX_ENTRIES
            )
        except StoreUnavailable as exc:
            self._reporter.ledger_not_written(str(exc), graph, execution)


def _became(result: Result, at: str) -> dict[str, Any]:
    """What became of the failure: a restore sent (``attempts`` counts the calls that
    carried it) or a decision that sent none."""
    entry: dict[str, Any] = {
        "at": at,
        "kind": "restore" if result.attempts > 0 else "decision",
        "outcome": result.outcome.value,
        "rule": result.rule,
        "reason": _cut(result.shown_reason) or None,
    }
    if result.attempts > 0:
        entry.update(
            requestId=result.request_id,
            status=result.status,
            errorCode=result.error_code,
            errorMessage=_cut(result.error_message),
        )
    elif result.error_code:
        entry["errorCode"] = result.error_code
    if result.forced is not None:
        entry["forcedBy"] = result.forced.by
    return entry


def _cut(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "…"
