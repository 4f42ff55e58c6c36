"""``state``, ``state forget`` and ``state reset-budget``, on SQLite and an unreachable Redis."""

from __future__ import annotations

import json
import re

import pytest

from handler import cli
from tests.cli.conftest import one_line_error
from tests.function_server import free_port


def test_state_shows_dedupe_and_budget_records(emulator, cli_env, tmp_path, capsys):
    delivery = tmp_path / "one.json"
    delivery.write_text(json.dumps({"graphName": "graph-1", "executionName": "exec-1"}))
    cli.main(["replay", str(delivery)])
    capsys.readouterr()
    assert cli.main(["state", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records["dedupe"][0]["record"]["outcome"] == "restored"
    budget = records["budget"][0]
    assert (budget["subject"], budget["used"]) == ("graph-1/exec-1", 1)


def test_state_says_which_execution_each_record_is_about_and_when(
    emulator, cli_env, tmp_path, capsys
):
    """The key alone (a CloudEvent's source/id) does not say what to forget or reset."""
    delivery = tmp_path / "event.json"
    event = {"specversion": "1.0", "id": "e-7", "source": "HC.OBS", "type": "failed",
             "data": {"graphName": "graph-1", "executionName": "exec-1"}}  # fmt: skip
    delivery.write_text(json.dumps(event))
    cli.main(["replay", str(delivery)])
    capsys.readouterr()
    assert cli.main(["state"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (record,) = [line for line in lines if line.endswith("ce:HC.OBS:e-7")]
    assert re.match(
        r"^  done +restored +graph-1/exec-1 +restored 20\d\d-\d\d-\d\dT[\d:.]+Z"
        r"  until 20\d\d-\d\d-\d\dT[\d:]+Z  ce:HC\.OBS:e-7$",
        record,
    ), record
    (budget,) = [line for line in lines if "used" in line]
    assert re.match(r"^ +1 used  graph-1/exec-1 +last 20\d\d-\d\d-\d\dT[\d:]+Z$", budget), budget


def test_state_needs_only_the_store_settings(tmp_path, monkeypatch, capsys):
    for name in ("OBS_ENDPOINT", "OBS_ACCESS_KEY_ID", "OBS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RESTORE_STATE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    assert cli.main(["state", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dedupe"] == []
    monkeypatch.setenv("RESTORE_STATE_URL", f"sqlite:///{tmp_path / 'state.db'}?busy=1")
    assert cli.main(["state"]) == 2
    assert one_line_error(capsys).startswith("configuration error: RESTORE_STATE_URL:")


def test_state_with_the_store_down_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OBS_ENDPOINT", raising=False)
    monkeypatch.setenv("RESTORE_STATE_URL", f"redis://:pw-hunter2@127.0.0.1:{free_port()}/0")
    for command in (["state"], ["state", "forget", "x"], ["state", "reset-budget", "g/e"]):
        assert cli.main(command) == 2
        line = one_line_error(capsys)
        assert line.startswith("error: state store") and "hunter2" not in line
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("RESTORE_STATE_URL", f"sqlite:///{blocker / 'state.db'}")
    assert cli.main(["state"]) == 2
    assert "a-file" in one_line_error(capsys)


def test_state_forget_lets_an_event_run_again(emulator, cli_env, tmp_path, capsys):
    delivery = tmp_path / "event.json"
    delivery.write_text(
        json.dumps(
            {
                "specversion": "1.0",
                "id": "event-1",
                "source": "HC.OBS",
                "type": "com.huaweicloud.obs.workflow.execution.failed",
                "subject": "graph-1/exec-1",
                "data": {
                    "execution_urn": "urn:fgs:cn-north-4:0123456789abcdef:execution:graph-1:"
                    "exec-1:fedcba9876543210",
                    "execution_state": "FAILED",
                },
            }
        )
    )
    assert cli.main(["replay", str(delivery), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"] == {"restored": 1}
    emulator.seed("graph-1", "exec-1", "FAILED")  # it failed again
    assert cli.main(["replay", str(delivery), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"] == {"duplicate": 1}

    assert cli.main(["state", "--json"]) == 0
    key = json.loads(capsys.readouterr().out)["dedupe"][0]["key"]
    assert cli.main(["state", "forget", key, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["forgotten"] is True
    assert cli.main(["state", "forget", key]) == 0
    assert "nothing recorded" in capsys.readouterr().out

    assert cli.main(["replay", str(delivery), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"] == {"restored": 1}
    assert emulator.restores("graph-1", "exec-1") == 2


def test_state_reset_budget_lets_an_execution_be_restored_again(
    emulator, cli_env, monkeypatch, capsys
):
    monkeypatch.setenv("RESTORE_MAX_RESTORES", "1")
    assert cli.main(["restore", "--graph", "graph-1", "--execution", "exec-1"]) == 0
    emulator.seed("graph-1", "exec-1", "FAILED")  # it failed again: the budget holds it
    assert cli.main(["restore", "--graph", "graph-1", "--execution", "exec-1"]) == 1
    assert "budget_exhausted" in capsys.readouterr().out
    from handler.store import open_store

    assert cli.main(["state", "reset-budget", "graph-1/exec-1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dropped"] == 1
    with open_store(cli_env["RESTORE_STATE_URL"]) as store:
        assert store.budget_used("graph-1/exec-1", 3600) == 0
    assert cli.main(["restore", "--graph", "graph-1", "--execution", "exec-1"]) == 0
    assert "restored" in capsys.readouterr().out and emulator.restores("graph-1", "exec-1") == 2
    assert cli.main(["state", "reset-budget", "graph-1/exec-1"]) == 0
    assert "dropped 1" in capsys.readouterr().out
    for bad in ("no-slash", "graph-1/../x", "/exec-1"):
        assert cli.main(["state", "reset-budget", bad]) == 2
        assert one_line_error(capsys).startswith("error: invalid")


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["state", "forget", ""], "argument EVENT_ID: must not be empty"),
        (["state", "forget", "   "], "argument EVENT_ID: must not be empty"),
        (["state", "--limit", "99999999999999999999"], "argument --limit: must be 1-1000"),
        (["state", "--limit", "0"], "argument --limit: must be 1-1000"),
        (["state", "--limit", "-1"], "argument --limit: must be 1-1000"),
        (["state", "--limit", "ten"], "argument --limit: must be a whole number 1-1000"),
    ],
)
def test_a_bad_state_argument_is_a_one_line_error_and_exit_2(
    tmp_path, monkeypatch, capsys, command, expected
):
    monkeypatch.setenv("RESTORE_STATE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    try:
        code = cli.main(command)
    except SystemExit as exit_:  # argparse's own checks exit
        code = exit_.code
    assert code == 2
    assert expected in one_line_error(capsys)
