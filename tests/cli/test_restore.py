"""``restore`` and ``replay``, against the emulator."""

from __future__ import annotations

import json
import sys

from handler import cli
from tests.cli.conftest import one_line_error


def run_restore(capsys, *arguments: str) -> tuple[int, dict]:
    """``restore --json`` with these arguments: the exit code and the printed result (the
    log lines on standard error go to ``run_restore.log``)."""
    command = ["restore", "--graph", "graph-1", "--execution", "exec-1", "--json", *arguments]
    code = cli.main(command)
    captured = capsys.readouterr()
    run_restore.log = [json.loads(line) for line in captured.err.splitlines()]
    return code, json.loads(captured.out)


def restores(emulator) -> int:
    return sum(1 for call in emulator.calls if call.method == "PUT")


def test_restore_succeeds_once_then_asks_before_a_second_restore(emulator, cli_env, capsys):
    code, first = run_restore(capsys)
    assert (code, first["outcome"], first["rule"]) == (0, "restored", "default")
    assert first["status"] == 200 and first["executionUrn"].endswith(":exec-1:emulator-domain")
    assert first["eventId"].startswith("cli:graph-1:exec-1:")
    assert emulator.state("graph-1", "exec-1") == "RUNNING"

    # A second operator restore is judged like an event: it had a restore before, so the
    # service is asked first, and a running execution is left alone (nothing to do: exit 0).
    assert cli.main(["restore", "--graph", "graph-1", "--execution", "exec-1"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == "graph-1/exec-1: skipped (rule default)"
    assert "execution is RUNNING now: restored already" in text
    assert restores(emulator) == 1


def test_restore_obeys_the_allowlist_and_the_rules_and_names_the_rule(
    emulator, cli_env, monkeypatch, capsys
):
    monkeypatch.setenv("RESTORE_GRAPH_ALLOWLIST", "etl-*")
    code, result = run_restore(capsys)
    assert (code, result["outcome"]) == (0, "skipped")
    assert result["reason"] == "graph is not in RESTORE_GRAPH_ALLOWLIST"

    monkeypatch.delenv("RESTORE_GRAPH_ALLOWLIST")
    spaced = {"rules": [{"name": "spaced", "spacing": {"first": "1h"}}]}
    monkeypatch.setenv("RESTORE_POLICY", json.dumps(spaced))
    code, result = run_restore(capsys)  # not due yet: the sweep restores it when due
    assert (code, result["outcome"], result["rule"]) == (0, "deferred", "spaced")
    assert restores(emulator) == 0 and emulator.state("graph-1", "exec-1") == "FAILED"


def test_restore_is_held_to_the_budget_the_function_uses(emulator, cli_env, monkeypatch, capsys):
    monkeypatch.setenv("RESTORE_MAX_RESTORES", "1")
    assert run_restore(capsys)[1]["outcome"] == "restored"
    emulator.seed("graph-1", "exec-1", "FAILED")  # the restored run failed again
    code, result = run_restore(capsys)
    assert (code, result["outcome"], result["rule"]) == (1, "budget_exhausted", "default")
    assert restores(emulator) == 1


def test_restore_dry_run_says_what_the_function_would_decide_and_records_nothing(
    emulator, cli_env, monkeypatch, capsys
):
    code, result = run_restore(capsys, "--dry-run")
    assert (code, result["outcome"], result["executionState"]) == (0, "dry_run", "FAILED")
    assert result["wouldRestore"] is True and result["rule"] == "default"

    monkeypatch.setenv("RESTORE_GRAPH_ALLOWLIST", "etl-*")  # the function would skip it
    code, result = run_restore(capsys, "--dry-run")
    assert (code, result["outcome"], result["wouldRestore"]) == (0, "skipped", False)  # no-op

    monkeypatch.delenv("RESTORE_GRAPH_ALLOWLIST")
    monkeypatch.setenv("RESTORE_MAX_RESTORES", "1")
    assert run_restore(capsys)[1]["outcome"] == "restored"
    emulator.seed("graph-1", "exec-1", "FAILED")
    code, result = run_restore(capsys, "--dry-run")  # the budget would refuse it
    assert (code, result["outcome"], result["wouldRestore"]) == (1, "budget_exhausted", False)

    command = ["restore", "--graph", "graph-1", "--execution", "exec-2", "--dry-run", "--json"]
    assert cli.main(command) == 0  # SUCCESS: admitted, but nothing to restore (a no-op)
    assert json.loads(capsys.readouterr().out)["wouldRestore"] is False
    monkeypatch.setenv("RESTORE_DRY_RUN", "true")  # the setting means the same here
    assert cli.main(["restore", "--graph", "graph-1", "--execution", "exec-1"]) == 1
    assert "wouldRestore: False" in capsys.readouterr().out  # the budget, as above
    assert restores(emulator) == 1
    assert cli.main(["state", "--json"]) == 0
    recorded = [entry["key"] for entry in json.loads(capsys.readouterr().out)["dedupe"]]
    assert len(recorded) == 1  # only the real restore: no dry run left a record


def test_force_skips_the_allowlist_and_rules_but_not_the_budget_and_says_who(
    emulator, cli_env, monkeypatch, capsys
):
    monkeypatch.setenv("LOGNAME", "on-call-ana")  # getpass.getuser() reads it first
    monkeypatch.setenv("RESTORE_GRAPH_ALLOWLIST", "etl-*")
    monkeypatch.setenv("RESTORE_MAX_RESTORES", "1")
    code, result = run_restore(capsys, "--force", "--reason", "ticket OPS-42")
    assert (code, result["outcome"], result["rule"]) == (0, "restored", None)
    assert result["forced"] == {"by": "on-call-ana", "reason": "ticket OPS-42"}
    assert result["reason"].startswith("forced by on-call-ana (restore --force")
    (line,) = [x for x in run_restore.log if x["message"] != "started"]
    assert line["level"] == "WARNING" and line["forced"]["by"] == "on-call-ana"
    assert cli.main(["state", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["dedupe"]
    assert entry["record"]["forced"] == {"by": "on-call-ana", "reason": "ticket OPS-42"}

    emulator.seed("graph-1", "exec-1", "FAILED")
    code, result = run_restore(capsys, "--force")  # the budget still holds
    assert (code, result["outcome"]) == (1, "budget_exhausted")
    assert "state reset-budget graph-1/exec-1" in result["reason"]
    assert restores(emulator) == 1


def test_a_lost_answer_says_the_restore_may_have_been_applied(
    emulator, cli_env, monkeypatch, capsys
):
    monkeypatch.setenv("OBS_MAX_ATTEMPTS", "1")
    emulator.reset_next(2, applied=True)  # the restore's answer and the query's are lost
    assert cli.main(["restore", "--graph", "graph-1", "--execution", "exec-1"]) == 1
    captured = capsys.readouterr()
    headline = captured.out.splitlines()[0]
    assert headline.startswith("graph-1/exec-1: may have been applied, check with `")
    assert "restore --graph graph-1 --execution exec-1 --dry-run`" in headline
    assert "Traceback" not in captured.out + captured.err
    assert emulator.restores("graph-1", "exec-1") == 1


def test_force_is_retried_not_exhausted_while_only_restores_in_flight_fill_the_budget(
    emulator, cli_env, monkeypatch, capsys
):
    monkeypatch.setenv("RESTORE_MAX_RESTORES", "1")
    from handler.store import open_store

    with open_store(cli_env["RESTORE_STATE_URL"]) as store:  # another instance mid-restore
        assert store.reserve_budget("graph-1/exec-1", 1, 86400, in_flight=600).reserved
    code, result = run_restore(capsys, "--force")
    assert (code, result["outcome"], result["errorCode"]) == (
        1,
        "retryable_error",
        "BudgetInFlight",
    )
    assert restores(emulator) == 0


def test_a_reason_without_force_is_a_one_line_error(emulator, cli_env, capsys):
    command = ["restore", "--graph", "graph-1", "--execution", "exec-1", "--reason", "x"]
    assert cli.main(command) == 2
    assert "--reason goes with --force" in one_line_error(capsys)
    assert emulator.calls == []


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


def test_restore_with_the_store_down_calls_nothing_and_exits_2(
    emulator, cli_env, monkeypatch, capsys
):
    """No restore the function could not record: the store is down, so nothing is called."""
    from tests.function_server import free_port

    monkeypatch.setenv("RESTORE_STATE_URL", f"redis://:pw-hunter2@127.0.0.1:{free_port()}/0")
    assert cli.main(["restore", "--graph", "graph-1", "--execution", "exec-1", "--force"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "hunter2" not in captured.err
    assert captured.err.splitlines()[-1] == "error: state store unavailable: nothing was called"
    assert emulator.calls == []
