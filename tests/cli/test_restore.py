"""``restore`` and ``replay``, against the emulator."""

from __future__ import annotations

import json
import sys

from handler import cli
from tests.cli.conftest import one_line_error


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
    assert cli.main(["replay", str(delivery), "--json"]) == 1  # an item was rejected
    document = json.loads(capsys.readouterr().out)
    assert document["status"] == 200
    assert document["summary"] == {"restored": 1, "rejected": 1}

    assert cli.main(["replay", str(delivery)]) == 1  # a table, and the redelivery is a duplicate
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["outcome", "graphName", "executionName"]
    assert "duplicate" in table and "status 200: 1 duplicate, 1 rejected" in table


def test_replay_reads_standard_input_and_fails_on_unreadable_input(cli_env, monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"{not json")))
    assert cli.main(["replay", "-"]) == 1
    assert "status 400" in capsys.readouterr().out


def test_missing_settings_name_the_variable(monkeypatch, capsys):
    monkeypatch.delenv("OBS_ENDPOINT", raising=False)
    assert cli.main(["restore", "--graph", "g", "--execution", "e"]) == 2
    assert "OBS_ENDPOINT" in capsys.readouterr().err


def test_replay_of_a_missing_file_or_a_directory_is_a_one_line_error(cli_env, tmp_path, capsys):
    assert cli.main(["replay", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in one_line_error(capsys)
    assert cli.main(["replay", str(tmp_path)]) == 2
    assert "directory" in one_line_error(capsys).lower()


def test_restore_dry_run_queries_and_never_restores(emulator, cli_env, monkeypatch, capsys):
    command = ["restore", "--graph", "graph-1", "--execution", "exec-1", "--dry-run", "--json"]
    assert cli.main(command) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dryRun"] is True and result["executionState"] == "FAILED"
    assert result["wouldRestore"] is True
    command[4] = "exec-2"  # SUCCESS: nothing to restore, which is nothing to do
    assert cli.main(command) == 0
    assert json.loads(capsys.readouterr().out)["wouldRestore"] is False
    monkeypatch.setenv("RESTORE_DRY_RUN", "true")  # the setting means the same here
    assert cli.main(["restore", "--graph", "graph-1", "--execution", "exec-1"]) == 0
    assert "wouldRestore: True" in capsys.readouterr().out
    assert [call.method for call in emulator.calls] == ["GET", "GET", "GET"]
    assert emulator.state("graph-1", "exec-1") == "FAILED"
