"""The ledger observer: what one item's result adds to its execution's ledger, and what it
never adds - a secret, a redelivery, a dry run, a request that was no failure."""

from __future__ import annotations

import json
import logging

from handler.invocation import Forced, Invocation
from handler.ledger import MAX_ENTRIES, TEXT_CHARS, Ledger
from handler.outcomes import Outcome, Result
from handler.report import Reporter
from handler.store import open_store
from tests.store.conftest import START, FakeClock

PASSWORD = "s3cr3t-pa55"


def ledger_and_store():
    clock = FakeClock()
    store = open_store("memory://", clock=clock)
    return Ledger(store, 86400.0, Reporter(logging.getLogger("ledger")), clock), store


def result(**fields) -> Result:
    values = dict(event_id="ce:src:1", graph_name="g", execution_name="e",
                  outcome=Outcome.RESTORED, door="event")  # fmt: skip
    values.update(fields)
    return Result(**values)


def test_a_restore_sent_is_a_failure_entry_then_a_restore_entry_in_utc():
    ledger, store = ledger_and_store()
    sent = result(rule="default", attempts=1, status=200, request_id="req-1",
                  failed_at=START - 60, execution_error="node x: timed out")  # fmt: skip
    ledger(sent, Invocation())
    seen, restore = store.ledger("g", "e")
    assert seen == {"at": "2023-11-14T22:13:20Z", "kind": "failure", "eventId": "ce:src:1",
                    "door": "event", "stoppedAt": "2023-11-14T22:12:20Z",
                    "executionError": "node x: timed out"}  # fmt: skip
    assert restore["kind"] == "restore" and restore["requestId"] == "req-1"
    assert (restore["outcome"], restore["rule"], restore["status"]) == ("restored", "default", 200)


def test_a_decision_that_sent_nothing_says_so_and_who_forced_it():
    ledger, store = ledger_and_store()
    forced = Forced("alice (command line)", "ticket 42")
    ledger(result(outcome=Outcome.DEFERRED, reason="due at 03:10", door="cli", forced=forced),
           Invocation())  # fmt: skip
    _, decision = store.ledger("g", "e")
    assert decision["kind"] == "decision" and decision["outcome"] == "deferred"
    assert decision["forcedBy"] == "alice (command line)" and "due at 03:10" in decision["reason"]
    assert "requestId" not in decision


def test_no_secret_reaches_the_ledger_and_long_texts_are_cut():
    ledger, store = ledger_and_store()
    leaky = result(
        outcome=Outcome.RETRYABLE_ERROR,
        detail=f"redis://:{PASSWORD}@10.0.0.5:6379 refused",  # a log line's, never answered
        error_message="x" * 5000,
        attempts=1,
    ).unrecorded(f"state store redis://:{PASSWORD}@10.0.0.5:6379/0 unavailable")
    ledger(leaky, Invocation())
    text = json.dumps(store.ledger("g", "e"))
    assert PASSWORD not in text and "10.0.0.5" not in text
    assert len(store.ledger("g", "e")[1]["errorMessage"]) == TEXT_CHARS


def test_redeliveries_dry_runs_and_requests_that_were_no_failure_add_nothing():
    ledger, store = ledger_and_store()
    ledger(result(outcome=Outcome.DUPLICATE), Invocation())
    ledger(result(outcome=Outcome.DRY_RUN), Invocation(dry_run=True))
    ledger(result(outcome=Outcome.SKIPPED, door=None), Invocation())  # e.g. state "running"
    ledger(result(graph_name=None, execution_name=None), Invocation())  # a rejected request
    assert store.ledger("g", "e") == []


def test_an_execution_failing_in_a_loop_keeps_only_its_newest_entries():
    ledger, store = ledger_and_store()
    for n in range(MAX_ENTRIES):
        ledger(result(event_id=f"ce:src:{n}"), Invocation())
    kept = store.ledger("g", "e")
    assert len(kept) == MAX_ENTRIES
    assert kept[-2]["eventId"] == f"ce:src:{MAX_ENTRIES - 1}"
    assert kept[0]["eventId"] == f"ce:src:{MAX_ENTRIES // 2}"
