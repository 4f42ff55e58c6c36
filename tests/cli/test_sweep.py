"""``sweep``, against the stand-in of tests/test_sweep.py, which serves both APIs' list,
query and restore."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from werkzeug import Response

from handler import cli
from tests.cli.conftest import one_line_error
from tests.conftest import AK
from tests.function_server import free_port
from tests.test_sweep import NOW, PROJECT, WorkflowService, seed_many


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


def test_the_dry_run_reason_names_the_switch_that_made_it(service, sweep_env, capsys):
    """--dry-run is not RESTORE_DRY_RUN: the reason must not send the operator to a setting
    that is off."""
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    sweep_env()
    (flagged,) = sweep_json(capsys, "--dry-run")["results"]
    assert flagged["outcome"] == "dry_run"
    assert flagged["reason"].startswith("a dry run was asked for: restore not called")
    sweep_env(RESTORE_DRY_RUN="true")
    (configured,) = sweep_json(capsys)["results"]
    assert configured["reason"].startswith("RESTORE_DRY_RUN is on: restore not called")


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


def test_a_sweep_that_fails_unexpectedly_is_one_line_and_exit_2_never_a_traceback(
    service, sweep_env, capsys
):
    """Whatever goes wrong inside a command, the command line ends with one line and exit 2
    (here a lookback so long that the window's start is before the first date)."""
    sweep_env()
    service.add("graph-1", "run-1", "FAILED", NOW - timedelta(minutes=5))
    assert cli.main(["sweep", "--lookback", "800000d"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    *log, last = captured.err.splitlines()
    assert last.startswith("error: ")
    assert "OverflowError" in last or "--lookback" in last  # its type, or why the flag is bad
    assert all(line.startswith("{") for line in log)  # only the JSON log lines before it
    assert service.restores == []
