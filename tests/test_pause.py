"""Pause and resume: while an operator's pause holds a graph its failures end ``deferred``,
saying who paused, why and until when, and nothing is restored; after ``resume`` (or the
pause's expiry) the sweep restores what waited, once."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace

import pytest

from handler.cli.commands import main as cli
from handler.devtools.emulator import DwrEmulator
from handler.intake import Item
from handler.invocation import Invocation
from handler.pipeline.pauses import pause
from handler.report import Reporter
from handler.runtime import Runtime
from handler.settings import Settings
from handler.store import open_store
from handler.sweep import SweepRequest
from tests.conftest import AK, AUTH_TOKEN, SK

PROJECT = "0123456789abcdef0123456789abcdef"
GRAPH, EXECUTION = "nightly-etl", "run-1"
BEARER = {"Authorization": f"Bearer {AUTH_TOKEN}"}


@pytest.fixture
def emulator():
    emu = DwrEmulator({AK: SK}, project_id=PROJECT)
    emu.seed(GRAPH, EXECUTION, "fail", error_message="node transcode: input object not found")
    with emu:
        yield emu


def settings_for(emu: DwrEmulator) -> Settings:
    return Settings(
        endpoint=emu.url,
        workflow_api="dwr",
        project_id=PROJECT,
        access_key_id=AK,
        secret_access_key=SK,
        max_attempts=1,
    )


def test_paused_graph_is_deferred_then_restored_once_by_the_sweep_after_resume(
    emulator, tmp_path, monkeypatch, capsys
):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("RESTORE_STATE_URL", url)
    assert cli(["pause", GRAPH, "--for", "2h", "--reason", "OBS bucket being migrated"]) == 0
    settings = settings_for(emulator)
    runtime = Runtime(settings, open_store(url), Reporter(logging.getLogger("pause")))
    try:
        event = Item("restore", "HC.DWR/evt-1", "cloudevent", GRAPH, EXECUTION)
        (result,) = runtime.run([event], Invocation()).results
        assert result.outcome.value == "deferred"
        assert "paused by" in result.reason and "(command line)" in result.reason
        assert "OBS bucket being migrated" in result.reason and "until 20" in result.reason
        sweep = SweepRequest.from_settings(settings)
        answer, _ = runtime.sweep(sweep, Invocation())
        assert {r.outcome.value for r in answer.results} == {"deferred"}
        assert emulator.restores(GRAPH, EXECUTION) == 0  # nothing restored while paused

        capsys.readouterr()
        assert cli(["resume", GRAPH, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["resumed"] is True
        answer, _ = runtime.sweep(sweep, Invocation())
        assert "restored" in [r.outcome.value for r in answer.results]
        runtime.sweep(sweep, Invocation())  # and again: nothing more to do
        runtime.run([event], Invocation())  # the event redelivered: already handled
        assert emulator.restores(GRAPH, EXECUTION) == 1
    finally:
        runtime.close()


def test_a_pause_of_every_graph_expires_by_itself(emulator, tmp_path):
    now = [time.time()]

    def clock() -> float:
        return now[0]

    store = open_store(f"sqlite:///{tmp_path / 'state.db'}", clock=clock)
    pause(store, None, by="alice", seconds=60, reason="maintenance", clock=clock)
    settings = settings_for(emulator)
    runtime = Runtime(settings, store, Reporter(logging.getLogger("expiry")), clock)
    try:
        item = Item("restore", "HC.DWR/evt-2", "cloudevent", GRAPH, EXECUTION)
        (result,) = runtime.run([item], Invocation()).results
        assert result.outcome.value == "deferred" and "every graph paused by alice" in result.reason
        now[0] += 61  # nobody resumed it: the pause ends by itself
        (result,) = runtime.run([item], Invocation()).results
        assert result.outcome.value == "restored"
        assert emulator.restores(GRAPH, EXECUTION) == 1
    finally:
        runtime.close()


def test_http_pause_and_resume_need_the_token_and_check_their_body(
    http_function, function_env, tmp_path
):
    function_env["RESTORE_STATE_URL"] = f"sqlite:///{tmp_path / 'state.db'}"
    client = http_function()
    assert client.post("/pause", json={"graph": GRAPH}).status_code == 401
    bad = client.post("/pause", json={"graph": GRAPH, "all": True}, headers=BEARER)
    assert bad.status_code == 400
    assert client.post("/pause", json={"graph": "no spaces"}, headers=BEARER).status_code == 400
    assert (
        client.post("/pause", json={"all": True, "for": "soon"}, headers=BEARER).status_code == 400
    )
    paused = client.post(
        "/pause", json={"graph": GRAPH, "for": "30m", "reason": "quota"}, headers=BEARER
    )
    assert paused.status_code == 200
    record = paused.get_json()["pause"]
    assert (record["graph"], record["reason"]) == (GRAPH, "quota")
    assert record["by"].startswith("HTTP caller")
    assert record["until"] - record["at"] == 1800
    delivered = client.post("/", json={"graphName": GRAPH, "executionName": "run-9"},
                            headers=BEARER)  # fmt: skip
    (result,) = delivered.get_json()["results"]
    assert result["outcome"] == "deferred" and "quota" in result["reason"]
    resumed = client.post("/resume", json={"graph": GRAPH}, headers=BEARER)
    assert resumed.get_json() == {"graph": GRAPH, "resumed": True}


def test_status_shows_the_pause_the_restores_and_the_give_ups_per_graph(
    emulator, tmp_path, monkeypatch, capsys
):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("RESTORE_STATE_URL", url)
    emulator.seed("thumbnails", "run-2", "fail")
    runtime = Runtime(settings_for(emulator), open_store(url), Reporter(logging.getLogger("st")))
    try:
        runtime.run([Item("restore", "evt-1", "cloudevent", GRAPH, EXECUTION)], Invocation())
        emulator.faults_for(operation="restore").fail_next(1, status=400)
        runtime.run([Item("restore", "evt-2", "cloudevent", "thumbnails", "run-2")], Invocation())
    finally:
        runtime.close()
    assert cli(["pause", "thumbnails", "--reason", "quota"]) == 0
    capsys.readouterr()
    assert cli(["status", "--json"]) == 0
    graphs = json.loads(capsys.readouterr().out)["graphs"]
    assert (graphs[GRAPH]["restoredLastHour"], graphs[GRAPH]["gaveUp"]) == (1, 0)
    assert graphs["thumbnails"]["gaveUp"] == 1  # not 2: an execution, however many events
    assert graphs["thumbnails"]["paused"]["reason"] == "quota"
    assert cli(["status"]) == 0
    table = capsys.readouterr().out
    assert "paused until" in table and GRAPH in table


def test_http_status_needs_the_token(http_function, function_env, tmp_path):
    function_env["RESTORE_STATE_URL"] = f"sqlite:///{tmp_path / 'state.db'}"
    client = http_function()
    assert client.get("/status").status_code == 401
    client.post("/pause", json={"all": True, "reason": "maintenance"}, headers=BEARER)
    answer = client.get("/status", headers=BEARER)
    assert answer.status_code == 200
    assert answer.get_json()["allPaused"]["reason"] == "maintenance"


def test_status_counts_restores_give_ups_and_waiting_failures_and_shows_the_last_sweep(
    emulator, tmp_path, monkeypatch, capsys, http_function, function_env
):
    from handler.rules import build_policy

    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("RESTORE_STATE_URL", url)
    emulator.seed("thumbnails", "run-2", "fail")
    emulator.seed("reports", "run-3", "fail")
    policy = build_policy(
        {"rules": [
            {"name": "reports-later", "graphs": ["reports"], "spacing": {"first": "10m"}},
            {"name": "everything", "graphs": ["*"]},
        ]},
        source="test", max_restores=3, window=86400,
    )  # fmt: skip
    settings = replace(settings_for(emulator), restore_policy=policy)
    emulator.faults_for(graph="thumbnails", operation="restore").fail_next(2, status=400)
    runtime = Runtime(settings, open_store(url), Reporter(logging.getLogger("status")))
    try:
        answer, _ = runtime.sweep(SweepRequest.from_settings(settings), Invocation())
        outcomes = {r.graph_name: r.outcome.value for r in answer.results}
        assert outcomes == {GRAPH: "restored", "thumbnails": "failed", "reports": "deferred"}
        # Another event of the refused one, refused again: still one execution given up on.
        item = Item("restore", "evt-t", "cloudevent", "thumbnails", "run-2")
        assert runtime.run([item], Invocation()).results[0].outcome.value == "failed"
    finally:
        runtime.close()
    capsys.readouterr()
    assert cli(["status", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    graphs = document["graphs"]
    assert (graphs[GRAPH]["restoredLastHour"], graphs[GRAPH]["restoredLastDay"]) == (1, 1)
    assert graphs["thumbnails"]["gaveUp"] == 1  # not 2: an execution, however many events
    assert graphs["thumbnails"]["restoredLastDay"] == 0  # refused restores hold no budget
    assert graphs["reports"]["deferredWaiting"] == 1  # due in 10 minutes: waiting all the same
    sweep = document["lastSweep"]
    assert sweep["finishedAt"].endswith("Z") and sweep["stopped"] is None
    assert (sweep["graphsScanned"], sweep["failuresFound"]) == (3, 3)
    assert sweep["outcomes"] == {"restored": 1, "failed": 1, "deferred": 1}
    assert sweep["durationMs"] >= 0
    # Each graph's part: what its listing found, the errors named for it, what became of it.
    part = {"failuresFound": 1, "errors": 0, "outcomes": {"restored": 1}}
    assert graphs[GRAPH]["lastSweep"] == part
    assert graphs["thumbnails"]["lastSweep"]["outcomes"] == {"failed": 1}
    assert graphs["reports"]["lastSweep"]["outcomes"] == {"deferred": 1}
    assert cli(["status"]) == 0
    table = capsys.readouterr().out
    assert f"last sweep: finished {sweep['finishedAt']}" in table
    assert "3 failure(s) found, 1 deferred, 1 failed, 1 restored" in table
    assert any(line.startswith("reports") and line.endswith("1 found, 1 deferred") for line in
               table.splitlines())  # fmt: skip

    # GET /status answers the same document, and only with the token.
    function_env["RESTORE_STATE_URL"] = url
    client = http_function()
    assert client.get("/status").status_code == 401
    answered = client.get("/status", headers=BEARER)
    assert answered.status_code == 200
    over_http = answered.get_json()
    assert {**over_http, "at": None} == {**document, "at": None}
