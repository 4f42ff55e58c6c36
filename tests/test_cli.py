"""The obs-workflow-restore command line, against the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from handler import cli
from handler.devtools.emulator import Emulator
from tests.conftest import AK, SK
from tests.function_server import free_port

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = str(Path(sys.executable).parent / "obs-workflow-restore")


@pytest.fixture
def emulator():
    with Emulator(credentials={AK: SK}) as running:
        running.seed("graph-1", "exec-1", "FAILED")
        running.seed("graph-1", "exec-2", "SUCCESS")
        yield running


@pytest.fixture
def cli_env(emulator, tmp_path, monkeypatch):
    environment = {
        "OBS_ENDPOINT": emulator.url,
        "OBS_ACCESS_KEY_ID": AK,
        "OBS_SECRET_ACCESS_KEY": SK,
        "RESTORE_STATE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


def test_restore_succeeds_once_then_reports_the_refusal(emulator, cli_env, capsys):
    assert cli.main(["restore", "--graph", "graph-1", "--execution", "exec-1", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["status"] == 200 and first["executionUrn"].endswith(":exec-1:emulator-domain")
    assert emulator.state("graph-1", "exec-1") == "RUNNING"

    assert cli.main(["restore", "--graph", "graph-1", "--execution", "exec-1"]) == 1
    text = capsys.readouterr().out
    assert "409" in text and "WF.ExecutionNotFailed" in text


def test_restore_refuses_bad_names_before_any_call(emulator, cli_env, capsys):
    assert cli.main(["restore", "--graph", "graph-1", "--execution", "../x"]) == 2
    assert "executionName" in capsys.readouterr().err
    assert emulator.calls == []


def test_replay_runs_a_saved_delivery_through_the_pipeline(emulator, cli_env, tmp_path, capsys):
    delivery = tmp_path / "delivery.json"
    delivery.write_text(
        json.dumps(
            [
                {"graphName": "graph-1", "executionName": "exec-1"},
                {"graphName": "graph-1", "executionName": "bad name"},
            ]
        )
    )
    assert cli.main(["replay", str(delivery), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["status"] == 200
    assert document["summary"] == {"restored": 1, "rejected": 1}

    assert cli.main(["replay", str(delivery)]) == 0  # a table, and the redelivery is a duplicate
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["outcome", "graphName", "executionName"]
    assert "duplicate" in table and "status 200: 1 duplicate, 1 rejected" in table


def test_replay_reads_standard_input_and_fails_on_unreadable_input(cli_env, monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"{not json")))
    assert cli.main(["replay", "-"]) == 1
    assert "status 400" in capsys.readouterr().out


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


def test_missing_settings_name_the_variable(monkeypatch, capsys):
    monkeypatch.delenv("OBS_ENDPOINT", raising=False)
    assert cli.main(["restore", "--graph", "g", "--execution", "e"]) == 2
    assert "OBS_ENDPOINT" in capsys.readouterr().err


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_replay_of_a_missing_file_or_a_directory_is_a_one_line_error(cli_env, tmp_path, capsys):
    assert cli.main(["replay", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in one_line_error(capsys)
    assert cli.main(["replay", str(tmp_path)]) == 2
    assert "directory" in one_line_error(capsys).lower()


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
    capsys.readouterr()
    from handler.store import open_store

    with open_store(cli_env["RESTORE_STATE_URL"]) as store:  # as the function would have
        assert store.reserve_budget("graph-1/exec-1", 1, 3600) is not None
        assert store.reserve_budget("graph-1/exec-1", 1, 3600) is None
    assert cli.main(["state", "reset-budget", "graph-1/exec-1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dropped"] == 1
    with open_store(cli_env["RESTORE_STATE_URL"]) as store:
        assert store.budget_used("graph-1/exec-1", 3600) == 0
    assert cli.main(["state", "reset-budget", "graph-1/exec-1"]) == 0
    assert "dropped 0" in capsys.readouterr().out
    for bad in ("no-slash", "graph-1/../x", "/exec-1"):
        assert cli.main(["state", "reset-budget", bad]) == 2
        assert one_line_error(capsys).startswith("error: invalid")


def test_restore_dry_run_queries_and_never_restores(emulator, cli_env, monkeypatch, capsys):
    command = ["restore", "--graph", "graph-1", "--execution", "exec-1", "--dry-run", "--json"]
    assert cli.main(command) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dryRun"] is True and result["executionState"] == "FAILED"
    assert result["wouldRestore"] is True
    command[4] = "exec-2"  # SUCCESS: nothing to restore
    assert cli.main(command) == 1
    assert json.loads(capsys.readouterr().out)["wouldRestore"] is False
    monkeypatch.setenv("RESTORE_DRY_RUN", "true")  # the setting means the same here
    assert cli.main(["restore", "--graph", "graph-1", "--execution", "exec-1"]) == 0
    assert "wouldRestore: True" in capsys.readouterr().out
    assert [call.method for call in emulator.calls] == ["GET", "GET", "GET"]
    assert emulator.state("graph-1", "exec-1") == "FAILED"


def test_help_lists_every_command():
    done = subprocess.run(
        [SCRIPT, "--help"], capture_output=True, text=True, timeout=30, check=True
    )
    for command in ("restore", "replay", "serve", "emulator", "state"):
        assert command in done.stdout


def test_emulator_command_starts_a_seeded_emulator():
    command = [
        SCRIPT,
        "emulator",
        "--port",
        "0",
        "--execution",
        "g/e=FAILED",
        "--access-key",
        AK,
        "--secret-key",
        SK,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        from handler.client import WorkflowClient

        with WorkflowClient(AK, SK, server=url) as client:
            assert (
                client.getWorkflowExecution("e", "g").body.executionInfo["execution_state"]
                == "FAILED"
            )
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert SK not in process.stderr.read()


def test_serve_runs_the_http_function(cli_env):
    port = free_port()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_")},
        "RESTORE_ALLOW_UNAUTHENTICATED": "true",
    }
    process = subprocess.Popen(
        [SCRIPT, "serve", "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        give_up = time.monotonic() + 30
        while True:
            try:
                health = requests.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < give_up and process.poll() is None
                time.sleep(0.1)
        assert health.json()["status"] == "ok"
        answer = requests.post(
            f"http://127.0.0.1:{port}/",
            timeout=10,
            json={"graphName": "graph-1", "executionName": "exec-1"},
        )
        assert answer.json()["summary"] == {"restored": 1}
    finally:
        process.terminate()
        process.wait(timeout=10)
