"""The pipeline on its own: an unexpected failure in one item never costs the others theirs."""

from __future__ import annotations

import io
import json

from handler.intake import from_http
from handler.invocation import Invocation
from handler.report import Reporter, configure_logging
from handler.runtime import Runtime
from handler.settings import Settings
from handler.store import open_store


class BrokenClaimStore:
    """A store with a bug in claim() for one key: stands in for any unexpected exception."""

    def __init__(self, broken_key: str) -> None:
        self._store = open_store("memory://")
        self._broken_key = broken_key
        self.describe = "broken"

    def claim(self, key, ttl):
        if key == self._broken_key:
            raise KeyError("bug")
        return self._store.claim(key, ttl)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_an_unexpected_exception_is_contained_to_its_item_and_logged():
    items = from_http(
        json.dumps(
            [{"graphName": "g", "executionName": "a"}, {"graphName": "g", "executionName": "b"}]
        ).encode(),
        {},
    )
    stream = io.StringIO()
    settings = Settings(endpoint="http://127.0.0.1:9", dry_run=True)
    runtime = Runtime(
        settings, BrokenClaimStore(items[0].event_id), Reporter(configure_logging("INFO", stream))
    )

    answer = runtime.run(items, Invocation(id="inv-1"))

    assert [r["outcome"] for r in answer.document()["results"]] == ["retryable_error", "dry_run"]
    assert answer.document()["results"][0]["errorCode"] == "InternalError"
    assert answer.retry and answer.status == 503
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    assert "KeyError" in lines[0]["exception"] and "exception" not in lines[1]


class FinishFailsStore:
    """A store that takes the claim and the budget but cannot record the outcome."""

    def __init__(self) -> None:
        self._store = open_store("memory://")
        self.describe = "flaky"

    def finish(self, key, token, record, retention):
        from handler.store import StoreUnavailable

        raise StoreUnavailable("state store redis://:hunter2@10.0.0.7:6379/0 unavailable: reset")

    def settle_item(self, key, token, *, record, **parts):
        if record is not None:  # the step that records an outcome (with the unit settled)
            self.finish(key, token, record, parts["retention"])
        self._store.settle_item(key, token, record=record, **parts)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_an_outcome_the_store_could_not_record_is_said_without_the_store_s_address(httpserver):
    from tests.conftest import PATH, RESTORED

    httpserver.expect_request(PATH, method="PUT").respond_with_json(RESTORED)
    stream = io.StringIO()
    settings = Settings(
        endpoint=httpserver.url_for("").rstrip("/"),
        access_key_id="AK",
        secret_access_key="SK-secret",
    )
    runtime = Runtime(settings, FinishFailsStore(), Reporter(configure_logging("INFO", stream)))
    items = from_http(json.dumps({"graphName": "graph-1", "executionName": "exec-1"}).encode(), {})

    answer = runtime.run(items, Invocation(id="inv-1")).document()

    (result,) = answer["results"]
    assert result["outcome"] == "restored"
    assert "outcome not recorded" in result["reason"]
    assert "10.0.0.7" not in json.dumps(answer) and "hunter2" not in json.dumps(answer)
    (line,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert "10.0.0.7" in line["detail"] and "10.0.0.7" not in line["reason"]


def test_each_observer_sees_every_result_once_after_its_line_and_a_broken_one_costs_nothing():
    """The after-outcome seam (notifications, metrics): each observer gets every item's frozen
    Result once; one that raises is logged and changes no outcome."""
    items = from_http(
        json.dumps(
            [{"graphName": "g", "executionName": "a"}, {"graphName": "g", "executionName": "b"}]
        ).encode(),
        {},
    )
    stream = io.StringIO()
    seen = []

    def broken(result, invocation):
        raise RuntimeError("an observer's bug")

    runtime = Runtime(
        Settings(endpoint="http://127.0.0.1:9", dry_run=True),
        open_store("memory://"),
        Reporter(configure_logging("INFO", stream)),
        observers=(broken, lambda result, invocation: seen.append((result, invocation.id))),
    )

    answer = runtime.run(items, Invocation(id="inv-1"))

    assert [(result.execution_name, inv) for result, inv in seen] == [
        ("a", "inv-1"),
        ("b", "inv-1"),
    ]
    assert [result.outcome for result, _ in seen] == ["dry_run", "dry_run"]
    assert answer.summary == {"dry_run": 2} and answer.status == 200
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == [
        "restore dry_run", "unexpected error", "restore dry_run", "unexpected error",
    ]  # fmt: skip


class WritesCounted:
    """A real memory store that counts the calls of each method that writes."""

    WRITES = frozenset({
        "claim", "finish", "release", "reserve_budget", "settle_budget", "refund_budget",
        "ledger_append", "settle_item", "take_rate_slot", "first_seen", "remember_deferred",
    })  # fmt: skip

    def __init__(self) -> None:
        self._store = open_store("memory://")
        self.describe = "counted"
        self.writes: list[str] = []

    def __getattr__(self, name):
        if name in self.WRITES:
            self.writes.append(name)
        return getattr(self._store, name)


def test_a_restored_item_writes_the_store_once_after_its_restore(httpserver):
    """Its unit settled, its outcome recorded and its ledger written are one step after the
    restore; what it holds before sending it (claim, unit, rate slot) stays committed first."""
    from tests.conftest import PATH, RESTORED

    httpserver.expect_request(PATH, method="PUT").respond_with_json(RESTORED)
    store = WritesCounted()
    settings = Settings(
        endpoint=httpserver.url_for("").rstrip("/"), access_key_id="AK", secret_access_key="SK"
    )
    runtime = Runtime(settings, store, Reporter(configure_logging("INFO", io.StringIO())))
    items = from_http(json.dumps({"graphName": "graph-1", "executionName": "exec-1"}).encode(), {})

    (result,) = runtime.run(items, Invocation(id="inv-1")).document()["results"]

    assert result["outcome"] == "restored"
    assert store.writes == ["claim", "reserve_budget", "take_rate_slot", "settle_item"]
    assert [entry["kind"] for entry in store.ledger("graph-1", "exec-1")] == ["failure", "restore"]
    assert store.claim(items[0].event_id, 60).state == "done"
