"""The pipeline on its own: an unexpected failure in one item never costs the others theirs."""

from __future__ import annotations

import io
import json

from handler.intake import from_http
from handler.pipeline import Invocation, Restorer
from handler.report import Reporter, configure_logging
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
    restorer = Restorer(
        settings, BrokenClaimStore(items[0].event_id), Reporter(configure_logging("INFO", stream))
    )

    delivery = restorer.run(items, Invocation(id="inv-1"))

    assert [r["outcome"] for r in delivery.results] == ["retryable_error", "dry_run"]
    assert delivery.results[0]["errorCode"] == "InternalError"
    assert delivery.retry and delivery.status == 503
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    assert "KeyError" in lines[0]["exception"] and "exception" not in lines[1]
