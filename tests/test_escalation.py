"""Escalation through SMN, end to end on the DWR emulator: a give-up is published once - across
redeliveries, other events of the execution and instances sharing one store - and a publish SMN
did not take is sent by the next invocation, still once."""

from __future__ import annotations

import json
import logging
import time

import pytest

from handler.devtools.emulator import DwrEmulator
from handler.intake import Item
from handler.invocation import Invocation
from handler.report import Reporter
from handler.runtime import Runtime
from handler.settings import NotifySettings, Settings
from handler.store import open_store
from handler.sweep import SweepRequest
from tests.conftest import AK, SK

PROJECT = "0123456789abcdef0123456789abcdef"
GRAPH, EXECUTION = "nightly-etl", "run-1"
WHY = "node transcode: input object not found"


@pytest.fixture
def emulator():
    """One failed execution that fails again right after every restore."""
    emu = DwrEmulator(
        {AK: SK}, project_id=PROJECT, topics=["restore-alerts"], after_restore=("fail", 0.0)
    )
    emu.seed(GRAPH, EXECUTION, "fail", error_message=WHY)
    with emu:
        yield emu


def settings_for(emu: DwrEmulator, **overrides) -> Settings:
    notify = NotifySettings(topic_urn=emu.topic_urn("restore-alerts"), endpoint=emu.url)
    fields = dict(
        endpoint=emu.url,
        workflow_api="dwr",
        project_id=PROJECT,
        access_key_id=AK,
        secret_access_key=SK,
        max_attempts=1,
        max_restores=1,
        notify=notify,
    )
    fields.update(overrides)
    return Settings(**fields)


def runtime_on(settings: Settings, state_url: str, name: str) -> Runtime:
    return Runtime(settings, open_store(state_url), Reporter(logging.getLogger(name)))


def event(n: int) -> Item:
    return Item("restore", f"HC.DWR/evt-{n}", "cloudevent", GRAPH, EXECUTION)


def one_invocation(runtime: Runtime, item: Item) -> str:
    """One delivery as an entry point runs it: the items, then the end-of-invocation flush."""
    answer = runtime.run([item], Invocation())
    runtime.flush_events(5.0)
    (result,) = answer.document()["results"]
    return result["outcome"]


def test_a_give_up_is_published_once_across_redeliveries_and_two_instances(emulator, tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    settings = settings_for(emulator)
    first, second = runtime_on(settings, url, "a"), runtime_on(settings, url, "b")
    try:
        assert one_invocation(first, event(1)) == "restored"  # the budget's one restore
        # The execution failed again: a new event of it finds the budget spent - a give-up -
        # and it is delivered 3 more times, to either instance.
        outcomes = [
            one_invocation(first, event(2)),
            one_invocation(second, event(2)),
            one_invocation(first, event(2)),
            one_invocation(second, event(2)),
        ]
        # Another event of the same give-up (the sweep's) on the other instance.
        answer, _ = second.sweep(SweepRequest.from_settings(settings), Invocation())
        second.flush_events(5.0)
        assert outcomes == ["budget_exhausted", "duplicate", "duplicate", "duplicate"]
        assert [r.outcome.value for r in answer.results] == ["budget_exhausted"]

        (message,) = emulator.publishes()
        email = message.text("email")
        assert f"{GRAPH}/{EXECUTION}" in message.subject
        assert "restore budget exhausted" in email
        # The budget is spent before the API is asked, so no error text: the line says so.
        assert "Execution error: (not known: the API gives none, or was not asked)" in email
        assert "restore sent at" in email  # the restore already tried, from the store
        assert f"--graph {GRAPH} --execution {EXECUTION} --force" in email
        assert f"obs-workflow-restore resume {GRAPH}" in email
        assert "[" not in message.text("sms")
    finally:
        first.close()
        second.close()
    assert len(emulator.publishes()) == 1  # closing sends nothing more


def test_smn_down_at_the_give_up_is_published_by_the_next_invocation_once(emulator, tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    settings = settings_for(emulator)
    first, second = runtime_on(settings, url, "a"), runtime_on(settings, url, "b")
    try:
        assert one_invocation(first, event(1)) == "restored"
        emulator.faults_for(operation="publish").fail_next(10, status=503)
        assert one_invocation(first, event(2)) == "budget_exhausted"  # the outcome stands
        assert emulator.publishes() == []

        emulator.clear_faults()  # SMN is back
        # The next invocation - on the other instance, about something else entirely - sends
        # what the outbox kept; later ones send nothing more.
        second.sweep(SweepRequest.from_settings(settings), Invocation())
        second.flush_events(5.0)
        one_invocation(first, event(2))
        second.flush_events(5.0)
        (message,) = emulator.publishes()
        assert f"{GRAPH}/{EXECUTION}" in message.subject
    finally:
        first.close()
        second.close()
    assert len(emulator.publishes()) == 1


def test_more_give_ups_than_the_digest_threshold_become_one_digest(tmp_path):
    emu = DwrEmulator({AK: SK}, project_id=PROJECT, topics=["restore-alerts"])
    executions = [f"run-{n}" for n in range(5)]
    for name in executions:
        emu.seed(GRAPH, name, "fail", error_message=WHY)
    with emu:
        notify = NotifySettings(topic_urn=emu.topic_urn("restore-alerts"), endpoint=emu.url,
                                digest=2)  # fmt: skip
        settings = settings_for(emu, notify=notify)
        runtime = runtime_on(settings, f"sqlite:///{tmp_path / 'state.db'}", "digest")
        try:
            # The restore is refused for every execution: five give-ups in one invocation.
            emu.faults_for(operation="restore").fail_next(5, status=400)
            items = [Item("restore", f"evt-{n}", "cloudevent", GRAPH, name)
                     for n, name in enumerate(executions)]  # fmt: skip
            answer = runtime.run(items, Invocation())
            assert [r.outcome.value for r in answer.results] == ["failed"] * 5
            runtime.flush_events(5.0)
        finally:
            runtime.close()
    subjects = [p.subject for p in emu.publishes()]
    # Two single messages fill the 10 minutes' allowance; the other three are one digest.
    assert len(subjects) == 3
    assert subjects[2] == "[obs-workflow-restore] gave up on 3 executions"
    digest = emu.publishes()[2].text("email")
    assert WHY in digest  # the restore was refused after the API told the execution's error
    assert all(f"{GRAPH}/{name}" in " ".join(subjects) + digest for name in executions)


def test_history_tells_each_failure_restore_give_up_and_message_of_an_execution_in_order(
    emulator, tmp_path, monkeypatch, capsys
):
    from handler.cli.commands import main as cli
    from handler.rules import build_policy

    url = f"sqlite:///{tmp_path / 'state.db'}"
    # A rule with error patterns: the function queries the execution first, so the ledger
    # gets the execution's error text and stop time from the API.
    policy = build_policy(
        {"rules": [{"name": "missing-input", "restore_on": ["not found"], "max_restores": 1}]},
        source="test", max_restores=1, window=86400,
    )  # fmt: skip
    settings = settings_for(emulator, restore_policy=policy)
    runtime = runtime_on(settings, url, "history")
    try:
        assert one_invocation(runtime, event(1)) == "restored"
        # It failed again at once (the emulator's after_restore): the sweep finds it, and
        # the budget's one restore is spent - a give-up, told by SMN.
        answer, _ = runtime.sweep(SweepRequest.from_settings(settings), Invocation())
        runtime.flush_events(5.0)
        assert [r.outcome.value for r in answer.results] == ["budget_exhausted"]
        one_invocation(runtime, event(1))  # a redelivery: answered, nothing new to tell
    finally:
        runtime.close()
    (message,) = emulator.publishes()
    monkeypatch.setenv("RESTORE_STATE_URL", url)
    capsys.readouterr()
    assert cli(["history", f"{GRAPH}/{EXECUTION}", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    entries = document["entries"]
    assert [(e["kind"], e.get("outcome") or e.get("state")) for e in entries] == [
        ("failure", None),
        ("restore", "restored"),
        ("failure", None),
        ("decision", "budget_exhausted"),
        ("notification", "queued"),
        ("notification", "sent"),
    ]
    seen, restore, again, gave_up, queued, sent = entries
    assert (seen["door"], seen["eventId"], seen["executionError"]) == ("event", "HC.DWR/evt-1", WHY)
    assert seen["stoppedAt"].endswith("Z")  # the query's stop time, UTC ISO
    assert restore["rule"] == "missing-input" and restore["requestId"]
    assert restore["status"] == 200
    assert again["door"] == "sweep" and again["eventId"].startswith("sweep:")
    assert again["stoppedAt"].endswith("Z")  # the listing's stop time
    assert gave_up["rule"] == "missing-input" and "1 restores" in gave_up["reason"]
    assert queued["why"] == "restore budget exhausted"
    assert sent["messageId"] == message.message_id and sent["digest"] is None
    assert all(e["at"].endswith("Z") for e in entries)
    assert len(document["restoresSentAt"]) == 1

    assert cli(["history", f"{GRAPH}/{EXECUTION}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{GRAPH}/{EXECUTION}"
    assert len(lines) == 1 + len(entries) + 1  # one line per entry, then the budget's restores
    assert "failure seen    via event" in lines[1] and WHY in lines[1]
    assert "restore sent    restored" in lines[2] and restore["requestId"] in lines[2]
    assert "not restored    budget_exhausted" in lines[4]
    assert "message         sent" in lines[6]
    assert cli(["history", "not a name"]) == 2


def test_a_ledger_the_store_cannot_write_is_logged_and_costs_the_outcome_nothing(
    emulator, tmp_path, caplog
):
    from handler.store import StoreUnavailable
    from handler.store.sqlite import SQLiteStore

    class LedgerDown(SQLiteStore):
        """A real store whose ledger writes fail, as a full or locked one's would."""

        def ledger_append(self, *args, **kwargs):
            raise StoreUnavailable("state store sqlite:///x unavailable: disk I/O error")

        def settle_item(self, *args, ledger=None, **kwargs):
            if ledger is not None:  # the item's entries go with its settlement
                self.ledger_append()
            super().settle_item(*args, **kwargs)

    store = LedgerDown(str(tmp_path / "state.db"))
    runtime = Runtime(settings_for(emulator), store, Reporter(logging.getLogger("down")))
    try:
        with caplog.at_level(logging.WARNING, logger="down"):
            assert one_invocation(runtime, event(1)) == "restored"
            assert one_invocation(runtime, event(2)) == "budget_exhausted"
        assert one_invocation(runtime, event(2)) == "duplicate"  # the outcome was recorded
    finally:
        runtime.close()
    assert emulator.restores(GRAPH, EXECUTION) == 1
    assert len(emulator.publishes()) == 1  # the give-up was still told
    unwritten = [r for r in caplog.records if r.getMessage() == "ledger not written"]
    assert len(unwritten) >= 3  # two outcomes and the message's steps
    assert store.ledger(GRAPH, EXECUTION) == []


def test_a_message_smn_refuses_for_good_is_logged_and_not_sent_again(emulator, tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    runtime = runtime_on(settings_for(emulator), url, "refused")
    try:
        one_invocation(runtime, event(1))
        emulator.faults_for(operation="publish").fail_next(1, status=400)
        with caplog.at_level(logging.ERROR, logger="refused"):
            assert one_invocation(runtime, event(2)) == "budget_exhausted"
        assert "give-up notification refused" in caplog.text
        emulator.clear_faults()
        runtime.flush_events(5.0)
        one_invocation(runtime, event(3))  # another event of the same give-up
    finally:
        runtime.close()
    assert emulator.publishes() == []  # refused once is refused: no loop, no second try


def test_give_up_messages_waiting_in_the_store_take_no_deferred_failure_s_place():
    from handler.pipeline.deferred import DeferredFailures
    from handler.store.memory import MemoryStore

    store = MemoryStore()
    deferred = DeferredFailures(store, 3600)
    before = time.time() - 100
    for n in range(3):  # SMN is down: three messages wait, due before any failure
        message = {"subject": "s", "text": "t"}
        store.remember_deferred(f"notify:g/m-{n}", message, before - 10, 3600)
    items = [Item("restore", f"evt-{n}", "cloudevent", "g", f"e-{n}") for n in range(3)]
    for n, item in enumerate(items):
        deferred.remember(item, before + n)
    assert [item.event_id for item in deferred.due(3)] == ["evt-0", "evt-1", "evt-2"]


def test_a_breaker_opening_and_closing_is_told_once_each(emulator, tmp_path):
    """A graph's breaker opening holds every restore of it: the operators hear of it once (a
    retried call queues nothing twice), with the evidence and the override, and again when
    the canary closes it."""
    from handler.outage import BreakerEvent

    url = f"sqlite:///{tmp_path / 'state.db'}"
    runtime = runtime_on(settings_for(emulator), url, "breaker")
    opened = BreakerEvent(
        "opened",
        GRAPH,
        logging.WARNING,
        f"breaker opened for graph {GRAPH}: 3 executions failed again within 15m",
        {
            "openedAt": "2026-12-02T01:00:00Z",
            "nextCanaryAt": "2026-12-02T01:10:00Z",
            "refailures": [{"executionName": "run-7", "failedAt": "2026-12-02T00:59:00Z"}],
        },
    )
    closed = BreakerEvent(
        "closed", GRAPH, logging.INFO, f"breaker closed for graph {GRAPH}",
        {"openedAt": "2026-12-02T01:00:00Z", "canaryExecution": "run-7"},
    )  # fmt: skip
    try:
        runtime.breaker_changed(opened)
        runtime.breaker_changed(opened)  # the same transition again: nothing more queued
        runtime.flush_events(5.0)
        runtime.breaker_changed(closed)
        runtime.flush_events(5.0)
    finally:
        runtime.close()
    subjects = [published.subject for published in emulator.publishes()]
    assert subjects == [
        f"[obs-workflow-restore] breaker opened for graph {GRAPH}",
        f"[obs-workflow-restore] breaker closed for graph {GRAPH}",
    ]
    text = emulator.publishes()[0].text("email")
    assert "run-7 failed again at 2026-12-02T00:59:00Z" in text
    assert f"restore --graph {GRAPH} --execution EXECUTION --force" in text
