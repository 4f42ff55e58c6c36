"""One exit-code rule for every command (handler/cli/output.py), and a quiet command line.

0: every item succeeded or needed nothing; 1: some item failed or must be retried; 2: the
command could not run. The function's own log lines - the start-up settings document first -
reach standard error only with ``-v``.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from werkzeug import Response

from handler import cli
from handler.cli.output import DONE_OUTCOMES, EXIT_DONE, EXIT_NOT_DONE, exit_code
from tests.test_sweep import NOW, WorkflowService


def replay(tmp_path, delivery, *flags: str) -> int:
    path = tmp_path / f"delivery-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(delivery))
    return cli.main(["replay", str(path), *flags])


def test_the_rule_counts_only_succeeded_and_nothing_to_do_as_done():
    assert exit_code(["restored", "skipped", "duplicate", "deferred", "dry_run"]) == EXIT_DONE
    for outcome in ("failed", "rejected", "budget_exhausted", "retryable_error", "new-outcome"):
        assert outcome not in DONE_OUTCOMES
        assert exit_code(["restored", outcome]) == EXIT_NOT_DONE
    assert exit_code(["restored"], incomplete=True) == EXIT_NOT_DONE


def test_replay_exits_1_when_every_item_failed(emulator, cli_env, tmp_path, capsys):
    """The workflow API refusing for good (no such execution) is a failure, not 'done'."""
    delivery = {"graphName": "graph-1", "executionName": "no-such-execution"}
    assert replay(tmp_path, delivery, "--json") == 1
    assert json.loads(capsys.readouterr().out)["summary"] == {"failed": 1}


def test_replay_exits_0_when_every_item_was_restored_or_needed_nothing(
    emulator, cli_env, tmp_path, capsys
):
    delivery = [
        {"graphName": "graph-1", "executionName": "exec-1"},
        {"graphName": "graph-1", "executionName": "exec-2", "execution_state": "SUCCESS"},
    ]
    assert replay(tmp_path, delivery, "--json") == 0
    assert json.loads(capsys.readouterr().out)["summary"] == {"restored": 1, "skipped": 1}
    assert replay(tmp_path, delivery) == 0  # the redelivery: duplicate, and skipped again


def test_replay_exits_1_when_an_item_is_rejected(emulator, cli_env, tmp_path, capsys):
    delivery = [{"graphName": "graph-1", "executionName": "exec-1"}, {"graphName": "a b"}]
    assert replay(tmp_path, delivery, "--json") == 1
    assert json.loads(capsys.readouterr().out)["summary"] == {"restored": 1, "rejected": 1}


def test_restore_exits_by_the_same_rule(emulator, cli_env, capsys):
    command = ["restore", "--graph", "graph-1", "--execution"]
    assert cli.main([*command, "exec-1"]) == 0  # restored
    assert cli.main([*command, "exec-1"]) == 0  # asked first: not failed any more, a no-op
    assert cli.main([*command, "exec-2", "--dry-run"]) == 0  # nothing to do: SUCCESS
    assert "wouldRestore: False" in capsys.readouterr().out
    assert cli.main([*command, "no-such-execution", "--dry-run"]) == 1  # cannot be answered


class PermanentlyRefusingService(WorkflowService):
    """Lists and queries like its parent; every restore is refused for good (400)."""

    def _answer(self, request):
        if request.method in ("PUT", "POST") and request.path != "/sink":
            self.restore_calls += 1
            return Response('{"code": "WF.400", "message": "bad request"}', status=400)
        return super()._answer(request)


def test_sweep_exits_1_when_a_restore_failed(httpserver, function_env, capsys):
    service = PermanentlyRefusingService()
    httpserver.expect_request(re.compile(".*")).respond_with_handler(service)
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    function_env.apply()
    assert cli.main(["sweep", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["sweep"]["outcomes"] == {"failed": 1}


def test_sweep_exits_1_when_failures_wait_for_the_next_sweep(httpserver, function_env, capsys):
    service = WorkflowService()
    httpserver.expect_request(re.compile(".*")).respond_with_handler(service)
    for number in range(3):
        service.add("graph-1", f"run-{number}", "FAILED", NOW - timedelta(minutes=5))
    function_env.update(RESTORE_SWEEP_MAX_RESTORES="1")
    function_env.apply()
    assert cli.main(["sweep", "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["sweep"]["outcomes"] == {"restored": 1}
    assert document["sweep"]["waitingForNextSweep"] == 2


@pytest.mark.parametrize("where", ["before", "after"])
def test_the_settings_document_is_shown_only_with_dash_v(
    emulator, cli_env, tmp_path, capsys, where
):
    delivery = {"graphName": "graph-1", "executionName": "exec-1"}
    assert replay(tmp_path, delivery) == 0
    assert capsys.readouterr().err == ""  # quiet: the table on stdout, nothing else

    path = tmp_path / "again.json"
    path.write_text(json.dumps(delivery))
    argv = ["-v", "replay", str(path)] if where == "before" else ["replay", str(path), "-v"]
    assert cli.main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    started = [line for line in lines if line["message"] == "started"]
    assert len(started) == 1 and started[0]["settings"]["workflowApi"] == "obs"
    assert any(line.get("outcome") == "duplicate" for line in lines)


def test_warnings_still_reach_standard_error_when_quiet(
    emulator, cli_env, tmp_path, capsys, monkeypatch
):
    """An exhausted budget is logged at ERROR: quiet hides the chatter, not the trouble."""
    monkeypatch.setenv("RESTORE_MAX_RESTORES", "1")
    emulator.seed("graph-1", "exec-3", "FAILED")
    first = {"graphName": "graph-1", "executionName": "exec-3", "eventId": "one"}
    assert replay(tmp_path, first) == 0
    emulator.seed("graph-1", "exec-3", "FAILED")  # failed again
    second = {"graphName": "graph-1", "executionName": "exec-3", "eventId": "two"}
    assert replay(tmp_path, second) == 1
    captured = capsys.readouterr()
    assert "budget_exhausted" in captured.out
    errors = [json.loads(line) for line in captured.err.splitlines()]
    assert [line["outcome"] for line in errors] == ["budget_exhausted"]
