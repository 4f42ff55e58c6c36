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
from handler.emulator import Emulator
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
    assert cli.main(["state"]) == 2
    assert "OBS_ENDPOINT" in capsys.readouterr().err


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
