"""Every saved delivery in examples/ replays as it is, through the whole pipeline.

``obs-workflow-restore replay FILE`` takes each file unchanged (no wrapper, the default
Content-Type), and together they show every shape the intake reads - the README points
newcomers here rather than at tests/fixtures/, whose files wrap a body with its expectations.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handler import cli, intake
from handler.devtools.emulator import DwrEmulator
from handler.intake import items as shapes
from tests.conftest import AK, SK

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))
PROJECT = "0123456789abcdef0123456789abcdef"
ALL_SHAPES = {
    shapes.PLAIN, shapes.CLOUDEVENT, shapes.CLOUDEVENT_BATCH, shapes.EVENTGRID, shapes.SMN,
    shapes.SMN_TRIGGER, shapes.APIG,
}  # fmt: skip


def requests_in(example: Path) -> list[intake.Item]:
    return intake.from_http(example.read_bytes(), {"Content-Type": "application/json"})


def test_there_is_an_example_of_every_accepted_shape():
    covered = {item.shape for example in EXAMPLES for item in requests_in(example)}
    assert covered == ALL_SHAPES
    for example in EXAMPLES:  # each a delivery as sent, not a test fixture's wrapper
        document = json.loads(example.read_text())
        assert not isinstance(document, dict) or not {"description", "expected"} & set(document)


@pytest.fixture
def dwr_api(tmp_path, monkeypatch):
    """The DWR API on loopback with every execution the examples name failed, and the
    command line's environment pointing at it (the API an account opened today has)."""
    named = {(i.graph_name, i.execution_name) for e in EXAMPLES for i in requests_in(e)}
    with DwrEmulator({AK: SK}, project_id=PROJECT) as emulator:
        for graph, execution in named - {(None, None)}:
            emulator.seed(graph, execution, "fail")
        for name in ("OBS_ENDPOINT", "WORKFLOW_API", "DWR_REGION", "RESTORE_DRY_RUN"):
            monkeypatch.delenv(name, raising=False)
        for name, value in {
            "DWR_ENDPOINT": emulator.url,
            "DWR_PROJECT_ID": PROJECT,
            "OBS_ACCESS_KEY_ID": AK,
            "OBS_SECRET_ACCESS_KEY": SK,
            "RESTORE_STATE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        }.items():
            monkeypatch.setenv(name, value)
        yield emulator


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_each_example_replays_as_it_is(example, dwr_api, capsys):
    assert cli.main(["replay", str(example), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    expected = requests_in(example)
    assert document["status"] == 200 and len(document["results"]) == len(expected)
    for item, result in zip(expected, document["results"], strict=True):
        outcome = "restored" if item.verdict == "restore" else "skipped"
        assert result["outcome"] == outcome, result
        if outcome == "restored":
            assert dwr_api.restores(item.graph_name, item.execution_name) == 1
            assert dwr_api.state(item.graph_name, item.execution_name) == "running"
