"""``status`` and ``history`` tell operators the truth on a bad day: each graph's part of the
last sweep (failures its listing found, errors, outcomes), counts that say when they were cut,
a plain answer on a read-only state file an earlier version made, and ``GET /status`` only to
the token holder, refusing a query it would not apply - on every HTTP door."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from pathlib import Path

import pytest

import handler.runtime
from handler.cli.commands import main as cli
from handler.devtools.emulator import DwrEmulator
from handler.intake import Item
from handler.invocation import Invocation
from handler.report import Reporter
from handler.runtime import Runtime
from handler.settings import Settings
from handler.status import RECENT_LIMIT, WAITING_READ, status_document
from handler.store import MemoryStore, RecordsNotKept, StoreUnavailable, open_store
from handler.sweep import SweepRequest, SweepSummary
from tests.conftest import AK, AUTH_TOKEN, SK
from tests.test_entry_events import FunctionGraphContext

PROJECT = "0123456789abcdef0123456789abcdef"
GRAPH, EXECUTION = "nightly-etl", "run-1"
BEARER = {"Authorization": f"Bearer {AUTH_TOKEN}"}
# The tables an earlier version's file lacks (added by later versions, at open).
LATER_TABLES = (
    "ledger", "last_sweep", "quiet_listings", "pauses", "breakers", "breaker_refailures",
    "deferred",
)  # fmt: skip


@pytest.fixture
def emulator():
    emu = DwrEmulator({AK: SK}, project_id=PROJECT)
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


def sweep_once(emu: DwrEmulator, url: str) -> SweepSummary:
    settings = settings_for(emu)
    runtime = Runtime(settings, open_store(url), Reporter(logging.getLogger("status")))
    try:
        return runtime.sweep(SweepRequest.from_settings(settings), Invocation())[1]
    finally:
        runtime.close()


def status_json(capsys) -> dict:
    capsys.readouterr()
    assert cli(["status", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def status_table(capsys) -> list[str]:
    capsys.readouterr()
    assert cli(["status"]) == 0
    return capsys.readouterr().out.splitlines()


# --- each graph's part of the last sweep ----------------------------------------------------


def test_the_last_sweep_keeps_each_graphs_failures_found_and_errors_beside_its_outcomes(
    emulator, tmp_path, monkeypatch, capsys
):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("RESTORE_STATE_URL", url)
    emulator.seed(GRAPH, "run-1", "fail")
    emulator.seed(GRAPH, "run-2", "fail")
    emulator.seed("thumbnails", "run-3", "fail")
    emulator.faults_for(graph="thumbnails", operation="list").fail_next(3, status=403)
    sweep_once(emulator, url)

    graphs = status_json(capsys)["graphs"]
    assert graphs[GRAPH]["lastSweep"] == {
        "failuresFound": 2, "errors": 0, "outcomes": {"restored": 2},
    }  # fmt: skip
    # A graph that could not be listed: nothing found, one error - not a quiet graph.
    assert graphs["thumbnails"]["lastSweep"] == {"failuresFound": 0, "errors": 1, "outcomes": {}}
    rows = status_table(capsys)
    assert any(row.startswith(GRAPH) and row.endswith("2 found, 2 restored") for row in rows)
    assert any(row.startswith("thumbnails") and row.endswith("0 found, 1 error(s)") for row in rows)


def test_the_sweep_finished_line_stays_one_short_line_without_the_per_graph_counts(
    emulator, tmp_path
):
    emulator.seed(GRAPH, "run-1", "fail")
    summary = sweep_once(emulator, f"sqlite:///{tmp_path / 'state.db'}")
    assert summary.graph_failures == {GRAPH: 1}
    # The document the `sweep finished` line and the sweep's answer carry: the overall counts.
    assert sorted(summary.document()) == [
        "durationMs", "errors", "executionsListed", "failuresFound", "graphsQuiet",
        "graphsScanned", "outcomes", "pages", "stopped", "waitingForNextSweep",
    ]  # fmt: skip


def test_the_last_sweep_keeps_at_most_the_bounded_number_of_graphs_and_counts_the_rest(
    emulator, tmp_path, monkeypatch, capsys
):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("RESTORE_STATE_URL", url)
    monkeypatch.setattr(handler.runtime, "SWEEP_GRAPHS_KEPT", 2)
    for graph in ("graph-a", "graph-b", "graph-c"):
        emulator.seed(graph, "run-1", "fail")
    sweep_once(emulator, url)
    document = status_json(capsys)
    kept = [name for name, graph in document["graphs"].items() if graph["lastSweep"]]
    assert len(kept) == 2
    assert document["lastSweep"]["perGraphLeftOff"] == 1
    assert document["lastSweep"]["failuresFound"] == 3  # the overall counts cover every graph


def test_a_last_sweep_recorded_with_outcomes_only_is_shown_without_inventing_the_rest(
    tmp_path, monkeypatch, capsys
):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("RESTORE_STATE_URL", url)
    with open_store(url) as store:  # the record an earlier version kept
        store.record_sweep(
            {"finishedAt": "2026-12-02T03:01:24Z", "perGraph": {GRAPH: {"restored": 1}}}
        )
    graph = status_json(capsys)["graphs"][GRAPH]
    assert graph["lastSweep"] == {
        "failuresFound": None,
        "errors": None,
        "outcomes": {"restored": 1},
    }
    assert any(row.startswith(GRAPH) and row.endswith("  1 restored") for row in
               status_table(capsys))  # fmt: skip


# --- counts that were cut say so ------------------------------------------------------------


def test_counts_left_off_when_more_failures_wait_than_status_reads():
    store = MemoryStore()
    for n in range(WAITING_READ):
        failure = {"graph": GRAPH, "execution": f"run-{n}"}
        store.remember_deferred(f"evt-{n}", failure, due_at=10**10, retention=3600)
    document = status_document(store)
    assert document["graphs"][GRAPH]["deferredWaiting"] == WAITING_READ
    assert document["countsLeftOff"] is True


def test_counts_left_off_when_more_executions_hold_restores_than_status_reads():
    store = MemoryStore()
    for n in range(RECENT_LIMIT):
        store.reserve_budget(f"{GRAPH}/run-{n}", 3, 86400, in_flight=60)
    document = status_document(store)
    assert document["graphs"][GRAPH]["restoredLastHour"] == RECENT_LIMIT
    assert document["countsLeftOff"] is True


def test_counts_are_not_left_off_below_the_limits():
    store = MemoryStore()
    store.reserve_budget(f"{GRAPH}/run-1", 3, 86400, in_flight=60)
    store.remember_deferred("evt-1", {"graph": GRAPH}, due_at=10**10, retention=3600)
    document = status_document(store)
    assert (document["countsLeftOff"], document["notKept"]) == (False, [])


# --- a read-only state file an earlier version made ------------------------------------------


@pytest.fixture
def earlier_file(emulator, tmp_path):
    """A state file with one restore of GRAPH/EXECUTION, as a version before the ledger, the
    last sweep, pauses, breakers and deferred failures left it; its read-only URL."""
    path = tmp_path / "state.db"
    emulator.seed(GRAPH, EXECUTION, "fail")
    runtime = Runtime(
        settings_for(emulator), open_store(f"sqlite:///{path}"), Reporter(logging.getLogger("s"))
    )
    try:
        (result,) = runtime.run([Item("restore", "evt-1", "cloudevent", GRAPH, EXECUTION)],
                                Invocation()).results  # fmt: skip
        assert result.outcome.value == "restored"
    finally:
        runtime.close()
    db = sqlite3.connect(path)
    for table in LATER_TABLES:
        db.execute(f"DROP TABLE {table}")
    db.commit()
    db.close()
    return f"sqlite:///{path}?mode=ro"


def test_status_on_an_earlier_read_only_file_says_what_it_keeps_not_and_counts_the_rest(
    earlier_file, monkeypatch, capsys
):
    monkeypatch.setenv("RESTORE_STATE_URL", earlier_file)
    document = status_json(capsys)
    assert sorted(document["notKept"]) == ["breakers", "deferred", "last_sweep", "pauses"]
    assert document["lastSweep"] is None
    assert document["graphs"][GRAPH]["restoredLastHour"] == 1  # what the file does keep
    rows = status_table(capsys)
    assert rows[0].startswith("not kept in this state file: pauses, breakers, deferred")
    assert "last sweep: none kept in this state file" in rows
    assert any(row.startswith(GRAPH) for row in rows)


def test_history_on_an_earlier_read_only_file_says_no_ledger_is_kept_there(
    earlier_file, monkeypatch, capsys
):
    monkeypatch.setenv("RESTORE_STATE_URL", earlier_file)
    capsys.readouterr()
    assert cli(["history", f"{GRAPH}/{EXECUTION}", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["entries"], document["notKept"]) == ([], ["ledger"])
    assert len(document["restoresSentAt"]) == 1
    assert cli(["history", f"{GRAPH}/{EXECUTION}"]) == 0
    shown = capsys.readouterr()
    assert "no ledger kept in this state file" in shown.out
    assert "nothing in its ledger" not in shown.out and shown.err == ""


def test_a_missing_table_is_a_typed_not_kept_answer_that_others_read_as_unavailable(
    earlier_file,
):
    with open_store(earlier_file) as store:
        with pytest.raises(RecordsNotKept) as raised:
            store.ledger(GRAPH, EXECUTION)
        assert raised.value.kind == "ledger"
        assert isinstance(raised.value, StoreUnavailable)  # admission treats it as transient


def test_an_earlier_file_opened_writable_gets_every_kind_of_record(
    earlier_file, monkeypatch, capsys
):
    open_store(earlier_file.removesuffix("?mode=ro")).close()  # the function's next start
    monkeypatch.setenv("RESTORE_STATE_URL", earlier_file)
    assert status_json(capsys)["notKept"] == []


# --- GET /status on every HTTP door ---------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "query"),
    [({}, ""), ({"Authorization": "Bearer wrong"}, ""), ({}, "?token=wrong"),
     ({"Authorization": f"Basic {AUTH_TOKEN}"}, "")],
)  # fmt: skip
def test_http_status_without_the_right_token_is_401(http_function, headers, query):
    answer = http_function().get(f"/status{query}", headers=headers)
    assert answer.status_code == 401
    assert answer.get_json()["error"]["code"] == "Unauthorized"
    assert "graphs" not in answer.get_json()


def test_http_status_takes_the_token_in_the_query_but_refuses_a_query_it_would_not_apply(
    http_function,
):
    client = http_function()
    assert client.get(f"/status?token={AUTH_TOKEN}").status_code == 200
    answer = client.get("/status?graph=nightly-etl", headers=BEARER)
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "InvalidRequest"
    assert "'graph'" in answer.get_json()["error"]["message"]
    # Unauthenticated, the query is not even looked at.
    assert client.get("/status?graph=nightly-etl").status_code == 401


def apig_status(query: dict, headers: dict) -> dict:
    return {
        "body": "",  # API Gateway's envelope carries one, empty for a GET
        "isBase64Encoded": False,
        "httpMethod": "GET",
        "path": "/status",
        "headers": headers,
        "queryStringParameters": query,
        "requestContext": {"sourceIp": "203.0.113.7"},
    }


def test_api_gateway_get_status_needs_the_token_and_answers_the_status_document(load_function):
    function = load_function()
    refused = function.handler(apig_status({}, {}), FunctionGraphContext())
    assert refused["statusCode"] == 401
    assert "graphs" not in json.loads(refused["body"])
    bad = function.handler(
        apig_status({"graph": "x"}, {"authorization": f"Bearer {AUTH_TOKEN}"}),
        FunctionGraphContext(),
    )
    assert bad["statusCode"] == 400
    assert json.loads(bad["body"])["error"]["code"] == "InvalidRequest"
    answered = function.handler(
        apig_status({}, {"authorization": f"Bearer {AUTH_TOKEN}"}), FunctionGraphContext()
    )
    assert answered["statusCode"] == 200
    assert {"graphs", "lastSweep", "notKept"} <= set(json.loads(answered["body"]))


def test_cloudevent_target_get_status_needs_the_token(http_function):
    client = http_function("restore_cloudevent", "cloudevent")
    assert client.get("/status").status_code == 401
    answered = client.get("/status", headers=BEARER)
    assert answered.status_code == 200
    assert "graphs" in answered.get_json()


# --- what holds a graph, as the table shows it ----------------------------------------------


def test_the_table_shows_every_hold_on_a_graph_its_pause_the_pause_of_all_and_its_breaker(
    tmp_path, monkeypatch, capsys
):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("RESTORE_STATE_URL", url)
    with open_store(url) as store:
        now = time.time()
        for n in range(2):
            store.record_refailure(
                "thumbnails", f"run-{n}", now, window=900, threshold=2, cooldown=600
            )
        store.reserve_budget(f"{GRAPH}/run-1", 3, 86400, in_flight=60)
    assert cli(["pause", "thumbnails", "--reason", "quota"]) == 0
    state = {row.split()[0]: row for row in status_table(capsys)[2:]}
    assert "paused until" in state["thumbnails"] and "breaker open" in state["thumbnails"]
    assert " ok " in state[GRAPH]
    assert cli(["pause", "--all", "--reason", "maintenance"]) == 0
    rows = status_table(capsys)
    assert rows[0].startswith("every graph paused by")
    state = {row.split()[0]: row for row in rows[3:]}
    assert "paused (every graph)" in state[GRAPH]  # not "ok" while everything is paused


# --- the README's examples are what the commands print ---------------------------------------

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
# What differs from one run to the next: times, durations, the services' ids.
VARYING = (
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d(:|%3A)\d\d(:|%3A)\d\d(\.\d+)?Z"), "<time>"),
    (re.compile(r"took \d+(\.\d)? m?s"), "took <duration>"),
    (re.compile(r"\b[0-9A-Fa-f]{32}\b"), "<id>"),
)


def readme_example(command: str) -> list[str]:
    """The lines the README shows under ``$ obs-workflow-restore COMMAND``."""
    lines = README[README.index(f"    $ obs-workflow-restore {command}\n") :].splitlines()[1:]
    shown = []
    for line in lines:
        if not line.startswith("    ") or line.startswith("    $ "):
            break
        shown.append(line[4:])
    return shown


def normalised(lines: list[str]) -> list[str]:
    for pattern, replacement in VARYING:
        lines = [pattern.sub(replacement, line) for line in lines]
    return [line.rstrip() for line in lines]


def test_the_readme_status_example_is_what_status_prints_after_such_a_sweep(
    emulator, tmp_path, monkeypatch, capsys
):
    from dataclasses import replace

    from handler.rules import build_policy

    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("RESTORE_STATE_URL", url)
    emulator.seed(GRAPH, EXECUTION, "fail")
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
    emulator.faults_for(graph="thumbnails", operation="restore").fail_next(1, status=400)
    runtime = Runtime(settings, open_store(url), Reporter(logging.getLogger("status")))
    try:
        runtime.sweep(SweepRequest.from_settings(settings), Invocation())
    finally:
        runtime.close()
    assert normalised(status_table(capsys)) == normalised(readme_example("status"))


def test_the_readme_history_example_is_what_history_prints_after_such_a_give_up(
    tmp_path, monkeypatch, capsys
):
    from dataclasses import replace

    from handler.rules import build_policy
    from handler.settings import NotifySettings

    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("RESTORE_STATE_URL", url)
    why = "node transcode: input object not found"
    emu = DwrEmulator(
        {AK: SK}, project_id=PROJECT, topics=["restore-alerts"], after_restore=("fail", 0.0)
    )
    emu.seed(GRAPH, EXECUTION, "fail", error_message=why)
    policy = build_policy(
        {"rules": [{"name": "missing-input", "graphs": ["*"], "restore_on": ["input object"]}]},
        source="test", max_restores=1, window=86400,
    )  # fmt: skip
    with emu:
        notify = NotifySettings(topic_urn=emu.topic_urn("restore-alerts"), endpoint=emu.url)
        settings = replace(settings_for(emu), max_restores=1, notify=notify, restore_policy=policy)
        runtime = Runtime(settings, open_store(url), Reporter(logging.getLogger("history")))
        try:
            event = Item(
                "restore", "HC.DWR/evt-1", "cloudevent", GRAPH, EXECUTION, failed_at=time.time()
            )
            assert runtime.run([event], Invocation()).results[0].outcome.value == "restored"
            # It failed again at once: the sweep finds the new failure, its budget spent.
            answer, _ = runtime.sweep(SweepRequest.from_settings(settings), Invocation())
            assert answer.results[0].outcome.value == "budget_exhausted"
            runtime.flush_events(5.0)  # the give-up message
        finally:
            runtime.close()
    capsys.readouterr()
    assert cli(["history", f"{GRAPH}/{EXECUTION}"]) == 0
    printed = capsys.readouterr().out.splitlines()
    shown = normalised(readme_example(f"history {GRAPH}/{EXECUTION}"))
    assert normalised(printed) == shown, "\n".join(normalised(printed))
