"""The obs-workflow-restore command line, against the emulator."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from werkzeug import Response

from handler import cli
from handler.devtools.emulator import Emulator
from tests.conftest import AK, SK
from tests.function_server import free_port
from tests.test_sweep import NOW, PROJECT, WorkflowService, seed_many

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
    for command in ("restore", "replay", "sweep", "serve", "emulator", "state"):
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


# --------------------------------------------------------------------------------- sweep
# Against the stand-in of tests/test_sweep.py, which serves both APIs' list, query and restore.


@pytest.fixture
def service(httpserver):
    fake = WorkflowService()
    httpserver.expect_request(re.compile(".*")).respond_with_handler(fake)
    return fake


@pytest.fixture
def sweep_env(function_env, httpserver):
    """The function's environment for ``sweep``; ``use(api, **more)`` applies it."""

    def use(api: str = "obs", **more: str) -> dict:
        if api == "dwr":
            del function_env["OBS_ENDPOINT"]
            function_env.update(
                WORKFLOW_API="dwr",
                DWR_ENDPOINT=httpserver.url_for("").rstrip("/"),
                DWR_PROJECT_ID=PROJECT,
            )
        function_env.update(more)
        function_env.apply()
        return function_env

    return use


def sweep_json(capsys, *flags: str, exit_code: int = 0) -> dict:
    assert cli.main(["sweep", *flags, "--json"]) == exit_code
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("api", ["obs", "dwr"])
def test_sweep_restores_each_failure_in_the_window_once(service, sweep_env, capsys, api):
    expected = seed_many(service)
    sweep_env(api, RESTORE_SWEEP_MAX_RESTORES="1000")
    document = sweep_json(capsys)
    assert set(service.restores) == expected and len(service.restores) == len(expected)
    assert document["sweep"]["graphsScanned"] == 3
    assert document["sweep"]["outcomes"] == {"restored": len(expected)}
    assert document["summary"] == {"restored": len(expected)}
    assert document["sweep"]["errors"] == [] and document["sweep"]["stopped"] is None

    again = sweep_json(capsys)  # a new process: only the state store and the service remain
    assert again["sweep"]["failuresFound"] == 0 and again["results"] == []
    assert len(service.restores) == len(expected)


def test_sweep_flags_narrow_the_graphs_and_the_lookback(service, sweep_env, capsys):
    for graph in ("graph-1", "graph-2", "graph-3"):
        service.add(graph, "recent", "FAILED", NOW - timedelta(hours=2))
        service.add(graph, "older", "FAILED", NOW - timedelta(hours=5))
    sweep_env("dwr")
    document = sweep_json(capsys, "--graph", "graph-1", "--graph", "graph-3", "--lookback", "3h")
    assert sorted(service.restores) == [("graph-1", "recent"), ("graph-3", "recent")]
    assert document["sweep"]["graphsScanned"] == 2

    sweep_json(capsys, "--graph", "graph-2")  # the settings' lookback (24h) again
    assert sorted(name for graph, name in service.restores if graph == "graph-2") == [
        "older",
        "recent",
    ]


def test_sweep_dry_run_lists_and_decides_but_restores_nothing(service, sweep_env, capsys):
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    sweep_env()
    assert cli.main(["sweep", "--dry-run"]) == 0
    table = capsys.readouterr().out
    assert service.restore_calls == 0
    assert table.splitlines()[0].split()[:3] == ["outcome", "graphName", "executionName"]
    assert "dry_run" in table.splitlines()[1] and "run-1" in table.splitlines()[1]
    figures = dict(re.findall(r"^(\w[\w ]*?)  +(\S+)$", table, re.M))
    assert figures["failures found"] == "1" and figures["dry_run"] == "1"
    assert figures["graphs scanned"] == "1" and figures["listing errors"] == "0"

    assert sweep_json(capsys)["sweep"]["outcomes"] == {"restored": 1}  # a dry run records none


def test_sweep_exits_1_when_a_graph_cannot_be_listed_and_sweeps_the_others(
    service, sweep_env, capsys
):
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    service.add("graph-2", "run-1", "FAILED", NOW - timedelta(minutes=5))
    service.fail_list["graph-1"] = 403
    sweep_env(OBS_MAX_ATTEMPTS="1")
    assert cli.main(["sweep"]) == 1
    out = capsys.readouterr().out
    assert service.restores == [("graph-2", "run-1")]
    assert "error: graph-1: 403" in out and re.search(r"^listing errors +1$", out, re.M)


class RefusingWorkflowService(WorkflowService):
    """Lists and queries like its parent; every restore answers 503 (a transient error)."""

    def _answer(self, request):
        if request.method in ("PUT", "POST") and request.path != "/sink":
            self.restore_calls += 1
            return Response('{"code": "WF.503", "message": "busy"}', status=503)
        return super()._answer(request)


def test_sweep_exits_1_when_an_item_is_left_to_retry(httpserver, sweep_env, capsys):
    service = RefusingWorkflowService()
    httpserver.expect_request(re.compile(".*")).respond_with_handler(service)
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    sweep_env(OBS_MAX_ATTEMPTS="1")
    document = sweep_json(capsys, exit_code=1)
    assert document["sweep"]["outcomes"] == {"retryable_error": 1}
    assert service.restore_calls == 1 and document["sweep"]["errors"] == []


def test_sweep_exits_1_while_another_sweep_holds_the_lease(service, sweep_env, capsys):
    from handler.store import open_store

    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    environment = sweep_env()
    with open_store(environment["RESTORE_STATE_URL"]) as store:
        held = store.claim("sweep:lease", 60)
        document = sweep_json(capsys, exit_code=1)
        assert document["sweep"]["stopped"] == "sweep in progress"
        assert cli.main(["sweep"]) == 1
        assert re.search(r"^stopped +sweep in progress$", capsys.readouterr().out, re.M)
        store.release("sweep:lease", held.token)
    assert service.restores == []
    assert sweep_json(capsys)["sweep"]["outcomes"] == {"restored": 1}


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--graph", "a/b"], "error: invalid --graph: 'a/b' must start"),
        (["--graph", ""], "error: invalid --graph: must not be empty"),
        (["--lookback", "soon"], "error: --lookback: must be a duration"),
        (["--lookback", "10s"], "error: --lookback: must be at least 60 seconds"),
        (["--graph"], "obs-workflow-restore sweep: error: argument --graph: expected one"),
        (["--since", "6h"], "obs-workflow-restore: error: unrecognized arguments: --since 6h"),
        (["--dry-run=yes"], "error: argument --dry-run: ignored explicit argument 'yes'"),
    ],
)
def test_sweep_with_a_bad_flag_is_a_one_line_error_before_any_call(
    service, sweep_env, httpserver, capsys, flags, expected
):
    sweep_env()
    try:
        code = cli.main(["sweep", *flags])
    except SystemExit as exit_:  # argparse's own checks exit; the sweep's return
        code = exit_.code
    assert code == 2
    assert expected in one_line_error(capsys)
    assert httpserver.log == []


def test_sweep_needs_credentials_and_a_reachable_state_store(service, sweep_env, capsys):
    environment = sweep_env()
    del environment["OBS_ACCESS_KEY_ID"]
    environment.apply()
    assert cli.main(["sweep"]) == 2
    assert one_line_error(capsys).startswith("configuration error: OBS_ACCESS_KEY_ID:")

    environment["OBS_ACCESS_KEY_ID"] = AK
    environment["RESTORE_STATE_URL"] = f"redis://:pw-hunter2@127.0.0.1:{free_port()}/0"
    environment.apply()
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    assert cli.main(["sweep", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "hunter2" not in captured.err
    assert captured.err.splitlines()[-1] == "error: state store unavailable: nothing was swept"
    assert service.restores == []
