"""Every documented delivery shape, as a table of fixture files, read into the expected Items.

Each file in ``tests/fixtures/events/`` is one delivery: ``headers`` + ``body`` (a JSON value)
or ``body_text`` (raw text) for the HTTP URL, ``event`` for a FunctionGraph event function, or
``cloudevent`` (``attributes`` + ``data``) for a CloudEvent decoded by functions-framework. Its
``expected`` list is the Items the delivery must produce, in order. Expected identities are
literal, so they also pin the identity scheme across processes and releases.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handler.intake import Item, from_cloudevent, from_event, from_http

FIXTURES = Path(__file__).parents[1] / "fixtures" / "events"
FILES = sorted(FIXTURES.glob("*.json"))


def deliver(fixture: dict) -> list[Item]:
    """Run a fixture through the entry point its delivery arrives at."""
    if "event" in fixture:
        return from_event(fixture["event"])
    if "cloudevent" in fixture:
        return from_cloudevent(fixture["cloudevent"]["attributes"], fixture["cloudevent"]["data"])
    if "body_text" in fixture:
        body = fixture["body_text"].encode("utf-8")
    else:
        body = json.dumps(fixture["body"]).encode("utf-8")
    return from_http(body, fixture["headers"])


def test_there_is_a_fixture_for_every_shape():
    shapes = {
        expected["shape"]
        for path in FILES
        for expected in json.loads(path.read_text(encoding="utf-8"))["expected"]
    }
    assert shapes == {
        "cloudevent",
        "cloudevent-batch",
        "eventgrid",
        "smn",
        "smn-trigger",
        "apig",
        "plain",
    }


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_fixture_delivery_yields_exactly_the_expected_items(path: Path):
    fixture = json.loads(path.read_text(encoding="utf-8"))
    assert fixture["description"]

    items = deliver(fixture)

    assert len(items) == len(fixture["expected"]), [item.reason for item in items]
    for position, (item, expected) in enumerate(zip(items, fixture["expected"], strict=True)):
        where = f"{path.stem} item {position}: {item}"
        assert item.verdict == expected["verdict"], where
        assert item.event_id == expected["event_id"], where
        assert item.shape == expected["shape"], where
        assert item.graph_name == expected["graph_name"], where
        assert item.execution_name == expected["execution_name"], where
        assert expected.get("reason_contains", "") in item.reason, where
        assert (item.reason == "") == (item.verdict == "restore"), where
