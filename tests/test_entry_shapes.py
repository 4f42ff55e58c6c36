"""Every fixture delivery, through the real entry points (dry run, so OBS is never called).

The HTTP fixtures go through functions-framework's app for ``restore``; the FunctionGraph ones
through ``handler(event, context)``; the decoded CloudEvents through ``restore_cloudevent``.
Each expected item must come back as exactly one result with the matching outcome.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import AUTH_TOKEN, log_lines

BEARER = {"Authorization": f"Bearer {AUTH_TOKEN}"}

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "events").glob("*.json"))
OUTCOME_OF_VERDICT = {"restore": "dry_run", "skip": "skipped", "reject": "rejected"}


def fixtures_with(key: str) -> list[Path]:
    return [path for path in FIXTURES if key in json.loads(path.read_text(encoding="utf-8"))]


def assert_results_match(results: list[dict], expected: list[dict], where: str) -> None:
    assert len(results) == len(expected), where
    for result, item in zip(results, expected, strict=True):
        assert result["outcome"] == OUTCOME_OF_VERDICT[item["verdict"]], (where, result)
        assert result["eventId"] == item["event_id"], where
        assert (result["graphName"], result["executionName"]) == (
            item["graph_name"],
            item["execution_name"],
        ), where


@pytest.fixture
def dry_run(function_env):
    function_env["RESTORE_DRY_RUN"] = "true"
    return function_env


HTTP_FIXTURES = [
    p for p in FIXTURES if p not in fixtures_with("event") and p not in fixtures_with("cloudevent")
]


@pytest.mark.parametrize("path", HTTP_FIXTURES, ids=[p.stem for p in HTTP_FIXTURES])
def test_every_http_shape_through_the_function_url(httpserver, http_function, dry_run, path):
    fixture = json.loads(path.read_text(encoding="utf-8"))
    body = fixture.get("body_text") or json.dumps(fixture["body"])
    response = http_function().post(
        "/",
        data=body.encode("utf-8"),
        headers={**fixture["headers"], "Authorization": f"Bearer {AUTH_TOKEN}"},
    )
    document = response.get_json()
    assert_results_match(document["results"], fixture["expected"], path.stem)
    everything_rejected = all(e["verdict"] == "reject" for e in fixture["expected"])
    assert response.status_code == (400 if everything_rejected else 200)
    assert httpserver.log == []


@pytest.mark.parametrize("path", fixtures_with("event"), ids=lambda p: p.stem)
def test_every_functiongraph_shape_through_the_handler(httpserver, load_function, dry_run, path):
    fixture = json.loads(path.read_text(encoding="utf-8"))
    event = fixture["event"]
    if isinstance(event, dict) and "httpMethod" in event:  # API Gateway: callers authenticate
        event = {**event, "headers": {**(event.get("headers") or {}), **BEARER}}
    answer = load_function().handler(event, None)
    if "statusCode" in answer and "body" in answer:  # an API Gateway trigger's response
        answer = json.loads(answer["body"])
    assert_results_match(answer["results"], fixture["expected"], path.stem)
    assert httpserver.log == []


@pytest.mark.parametrize("path", fixtures_with("cloudevent"), ids=lambda p: p.stem)
def test_every_cloudevent_through_the_cloudevent_target(
    httpserver, http_function, dry_run, capsys, path
):
    fixture = json.loads(path.read_text(encoding="utf-8"))
    attributes, data = fixture["cloudevent"]["attributes"], fixture["cloudevent"]["data"]
    headers = {
        f"ce-{name}": str(value)
        for name, value in attributes.items()
        if name not in ("datacontenttype", "data")
    }
    client = http_function("restore_cloudevent", "cloudevent")
    response = client.post(
        "/",
        data=json.dumps(data),
        headers={
            **headers,
            **BEARER,
            "Content-Type": attributes.get("datacontenttype", "application/json"),
        },
    )
    assert response.status_code == 200
    lines = [line for line in log_lines(capsys.readouterr().out) if line.get("outcome")]
    assert_results_match(lines, fixture["expected"], path.stem)
