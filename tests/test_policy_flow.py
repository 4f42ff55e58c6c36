"""Restore rules end to end: deferred events restored by a later sweep, DWR error texts from the
emulator, and the ``policy`` commands.

The sweep scenario reuses tests/test_sweep.py's stand-in WorkflowService and timer fixtures;
the DWR scenario runs the pipeline against the loopback DWR emulator with the policy the
README shows.
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest

from handler import cli
from handler.devtools.emulator import DwrEmulator, Emulator
from handler.intake import Item
from handler.invocation import Invocation
from handler.report import Reporter
from handler.rules import build_policy
from handler.runtime import Runtime
from handler.settings import Settings
from handler.store.memory import MemoryStore
from handler.sweep import SweepRequest
from tests.conftest import AK, REQUEST, SK, log_lines
from tests.store.conftest import FakeClock
from tests.test_entry_http import post
from tests.test_rules import readme_policy
from tests.test_sweep import PROJECT, service, sweeper  # noqa: F401 - fixtures

SPACED = json.dumps({"rules": [{"name": "spaced", "spacing": {"interval": "1h"}}]})


def shift_restores_back(function_env, seconds: float) -> None:
    """Let time pass for the state store: its budget reservations were made earlier."""
    path = function_env["RESTORE_STATE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE budget SET at = at - ?, expires_at = expires_at - ?", (seconds, 0))


def test_an_event_before_the_due_time_is_deferred_answered_200_and_a_later_sweep_restores(
    service,  # noqa: F811
    sweeper,  # noqa: F811
    http_function,
    function_env,
):
    now = datetime.now(timezone.utc)
    service.add("graph-1", "exec-1", "FAILED", now - timedelta(minutes=1))
    sweep = sweeper("obs", RESTORE_POLICY=SPACED)
    first = sweep()
    assert first["sweep"]["outcomes"] == {"restored": 1}
    assert first["results"][0]["rule"] == "spaced"

    # The restored run fails again; its failure event arrives before the hour is up.
    service.add("graph-1", "exec-1", "FAILED", now + timedelta(seconds=2))
    response = post(http_function(), REQUEST)
    assert response.status_code == 200  # deferred is final: no redelivery
    document = response.get_json()
    assert document["summary"] == {"deferred": 1}
    (result,) = document["results"]
    assert result["rule"] == "spaced"
    assert "next restore due at" in result["reason"] and "restore 2 of 3" in result["reason"]

    # The next sweep finds the same failure, still not due: deferred again, nothing recorded.
    assert sweep()["sweep"]["outcomes"] == {"deferred": 1}
    assert len(service.restores) == 1

    shift_restores_back(function_env, 3601)  # an hour later
    later = sweep()
    assert later["sweep"]["outcomes"] == {"restored": 1}
    assert later["results"][0]["rule"] == "spaced"
    assert len(service.restores) == 2
    assert sweep()["sweep"]["failuresFound"] == 0  # running now


def test_a_sweep_does_not_wait_out_the_grace_for_a_failure_after_the_last_restore(
    service,  # noqa: F811
    sweeper,  # noqa: F811
):
    now = datetime.now(timezone.utc)
    service.add("graph-1", "exec-1", "FAILED", now - timedelta(minutes=1))
    sweep = sweeper("obs", RESTORE_SWEEP_GRACE="10m")
    (restored,) = sweep.main.handler(REQUEST, None)["results"]
    assert restored["outcome"] == "restored"  # by its event
    # A stale listing (the old failure, still shown as failed): the grace holds it back.
    service.stale.add(("graph-1", "exec-1"))
    assert sweep()["sweep"]["outcomes"] == {"skipped": 1}
    # A failure that stopped after the restore cannot be stale: restored within the budget.
    service.stale.clear()
    service.add("graph-1", "exec-1", "FAILED", now + timedelta(seconds=2))
    assert sweep()["sweep"]["outcomes"] == {"restored": 1}
    assert len(service.restores) == 2


def test_a_deferred_failure_is_restored_once_due_even_when_no_listing_shows_it_any_more():
    """``first: 70s`` and a 60 s lookback: the event is deferred until 70 s after the failure
    was first seen, when no listing shows that failure any more. The sweep works through the
    deferred failures the store remembers, restores it once due (same identity, so a
    redelivery of the event is a duplicate), and forgets it."""
    clock = FakeClock(time.time())
    rules = {"rules": [{"name": "patient", "spacing": {"first": "70s"}}]}
    with Emulator(credentials={AK: SK}) as emulator:
        # It stopped two minutes ago: no sweep with a 60 s lookback lists it.
        emulator.seed("graph-1", "exec-1", "FAILED", stopped_at=time.time() - 120)
        settings = Settings(
            endpoint=emulator.url,
            access_key_id=AK,
            secret_access_key=SK,
            max_attempts=1,
            restore_policy=build_policy(rules, source="test", max_restores=3, window=86400),
        )
        runtime = Runtime(settings, MemoryStore(clock=clock), Reporter(logging.getLogger()), clock)
        event = Item("restore", "HC.OBS/evt-1", "cloudevent", "graph-1", "exec-1")
        request = SweepRequest(graphs=("graph-1",), lookback=60)
        try:
            (deferred,) = runtime.run([event], Invocation()).document()["results"]
            assert deferred["outcome"] == "deferred" and "(in 70s)" in deferred["reason"]
            clock.advance(30)
            answer, summary = runtime.sweep(request, Invocation())
            assert (summary.failures_found, summary.outcomes) == (0, {})  # not due yet
            clock.advance(41)
            answer, summary = runtime.sweep(request, Invocation())
            (restored,) = answer.document()["results"]
            assert (restored["eventId"], restored["outcome"]) == ("HC.OBS/evt-1", "restored")
            assert summary.failures_found == 0  # the listing never showed it
            assert emulator.restores("graph-1", "exec-1") == 1
            assert runtime.sweep(request, Invocation())[1].outcomes == {}  # forgotten
            (again,) = runtime.run([event], Invocation()).document()["results"]
            assert again["outcome"] == "duplicate"
        finally:
            runtime.close()


# --- DWR: error texts from the emulator -------------------------------------------------------

THROTTLED = "node extract: Throttling: too many requests (DLF.0429)"


@pytest.fixture
def dwr():
    emulator = DwrEmulator({AK: SK}, project_id=PROJECT, after_restore=("fail", 0.0))
    emulator.seed("etl", "throttled", "fail", error_message=THROTTLED)
    emulator.seed("etl", "denied", "fail", error_message="node load: 403 Forbidden: no OBS access")
    emulator.seed("etl", "broken", "fail", error_message="node transform: division by zero")
    with emulator:
        yield emulator


def wait_for_state(emulator: DwrEmulator, execution: str, state: str) -> None:
    for _ in range(200):
        if emulator.state("etl", execution) == state:
            return
        time.sleep(0.01)
    raise AssertionError(f"{execution} never became {state}")


def test_the_readme_policy_on_dwr_restores_throttling_with_backoff_and_leaves_the_rest(dwr):
    clock = FakeClock(time.time())
    policy = build_policy(readme_policy(), source="README", max_restores=3, window=86400)
    settings = Settings(
        endpoint=dwr.url,
        workflow_api="dwr",
        project_id=PROJECT,
        access_key_id=AK,
        secret_access_key=SK,
        max_attempts=1,
        restore_policy=policy,
    )
    lines = io.StringIO()
    logger = logging.getLogger("policy-flow-test")
    logger.handlers[:] = [logging.StreamHandler(lines)]
    logger.setLevel(logging.INFO)
    runtime = Runtime(settings, MemoryStore(clock=clock), Reporter(logger), clock=clock)
    events = iter(range(1000))

    def deliver(execution: str) -> dict:
        item = Item("restore", f"evt-{next(events)}", "json", "etl", execution)
        (result,) = runtime.run([item], Invocation()).document()["results"]
        return result

    try:
        # Throttled: restored at once, fails again; an event 1 minute later is deferred.
        assert deliver("throttled")["outcome"] == "restored"
        wait_for_state(dwr, "throttled", "fail")
        clock.advance(60)
        deferred = deliver("throttled")
        assert (deferred["outcome"], deferred["rule"]) == ("deferred", "throttling-and-timeouts")
        clock.advance(60)  # 2 minutes after the first restore (jitter only shortens)
        assert deliver("throttled")["outcome"] == "restored"
        wait_for_state(dwr, "throttled", "fail")
        clock.advance(200)  # backoff: 4 minutes now
        assert deliver("throttled")["outcome"] == "deferred"
        dwr.after_restore = ("success", 0.0)  # throttled twice, then it succeeds
        clock.advance(40)
        assert deliver("throttled")["outcome"] == "restored"
        wait_for_state(dwr, "throttled", "success")
        assert dwr.restores("etl", "throttled") == 3

        denied = deliver("denied")
        assert (denied["outcome"], denied["rule"]) == ("skipped", "throttling-and-timeouts")
        assert "leave_on pattern 'forbidden'" in denied["reason"]
        assert "403 Forbidden: no OBS access" in denied["reason"]  # the excerpt
        broken = deliver("broken")
        assert broken["outcome"] == "skipped" and broken["rule"] is None
        assert "no rule of the policy matches" in broken["reason"]
        assert dwr.restores("etl", "denied") == dwr.restores("etl", "broken") == 0
    finally:
        runtime.close()
    logged = [line for line in lines.getvalue().splitlines() if line]
    assert len(logged) == 7  # one line per delivered item


def test_on_dwr_a_first_delay_counts_from_the_failure_s_stop_time_the_query_gives(dwr):
    """DWR's query says when the execution stopped (``end_time``): ``first`` counts from then,
    not from the event's arrival - so an event 10 s after the failure, with ``first: 5s``, is
    restored at once, and one 1 s after it is deferred to 5 s after the failure."""
    clock = FakeClock(round(time.time()))
    dwr.seed("etl", "early", "fail", stopped_at=clock() - 1, error_message=THROTTLED)
    dwr.seed("etl", "late", "fail", stopped_at=clock() - 10, error_message=THROTTLED)
    rules = {"rules": [{"name": "patient", "spacing": {"first": "5s"}}]}
    settings = Settings(
        endpoint=dwr.url,
        workflow_api="dwr",
        project_id=PROJECT,
        access_key_id=AK,
        secret_access_key=SK,
        max_attempts=1,
        restore_policy=build_policy(rules, source="test", max_restores=3, window=86400),
    )
    runtime = Runtime(settings, MemoryStore(clock=clock), Reporter(logging.getLogger()), clock)
    try:
        (late,) = runtime.run(
            [Item("restore", "evt-1", "json", "etl", "late")], Invocation()
        ).document()["results"]
        (early,) = runtime.run(
            [Item("restore", "evt-2", "json", "etl", "early")], Invocation()
        ).document()["results"]
    finally:
        runtime.close()
    assert late["outcome"] == "restored"
    assert early["outcome"] == "deferred" and "(in 4s)" in early["reason"]
    assert dwr.restores("etl", "late") == 1 and dwr.restores("etl", "early") == 0


def test_on_obs_the_log_line_says_that_only_graph_rules_apply(
    httpserver, function_env, load_function
):
    from tests.conftest import RESTORED

    httpserver.expect_request("/v2/workflowexecutions/exec-1", method="PUT").respond_with_json(
        RESTORED
    )
    function_env["RESTORE_POLICY"] = json.dumps(
        {"rules": [{"name": "t", "restore_on": ["throttl"]}, {"name": "rest", "leave_on": ["x"]}]}
    )
    main = load_function()
    document = main.handler(REQUEST, None)
    (result,) = document["results"]
    assert (result["outcome"], result["rule"]) == ("restored", "rest")


# --- the policy commands ----------------------------------------------------------------------


@pytest.fixture
def policy_file(tmp_path, monkeypatch):
    import yaml

    for name in ("RESTORE_POLICY", "RESTORE_POLICY_FILE", "RESTORE_MAX_RESTORES"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(readme_policy()))
    return path


def test_policy_check_prints_the_effective_rules(policy_file, capsys):
    assert cli.main(["policy", "check", str(policy_file)]) == 0
    out = capsys.readouterr().out
    assert "valid, digest" in out and "1. throttling-and-timeouts" in out
    assert '"interval": "2m"' in out and '"max_interval": "30m"' in out
    assert 'window: "24h"' in out  # as the file writes it, not 86400.0
    assert cli.main(["policy", "check", str(policy_file), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["rules"][0]["max_restores"] == 5 and len(document["digest"]) == 12
    assert document["rules"][0]["window"] == 86400  # programs get the seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(86400, "24h"), (172800, "2d"), (120, "2m"), (90, "90s"), (0, "0s"), (1.5, "1.5s")],
)
def test_durations_read_back_in_the_grammar_they_are_written_in(seconds, text):
    from handler.durations import duration_seconds, duration_text

    assert duration_text(seconds) == text and duration_seconds(text) == seconds


def test_policy_check_refuses_a_bad_policy_naming_rule_and_field(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RESTORE_POLICY", raising=False)
    path = tmp_path / "bad.yaml"
    path.write_text("rules:\n  - name: slow\n    spacing: {backoff: 0}\n")
    assert cli.main(["policy", "check", str(path)]) == 2
    assert "rule 1 (slow).spacing.backoff: must be a number" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "rule", "decision"),
    [
        (["--error", "Throttling"], "throttling-and-timeouts", "restore 1 of 5: at once"),
        (["--error", "timed out", "--restores", "2"], "throttling-and-timeouts", "due 240s after"),
        (["--error", "Throttling", "--restores", "5"], "throttling-and-timeouts", "budget_exh"),
        (["--error", "403 Forbidden, timed out"], "throttling-and-timeouts", "skipped: left alone"),
        (["--error", "division by zero"], None, "skipped: no rule"),
        ([], None, "skipped: no rule"),
    ],
)
def test_policy_explain_says_which_rule_decides_and_what_happens(
    policy_file, capsys, arguments, rule, decision
):
    argv = ["policy", "explain", "--file", str(policy_file), "--graph", "etl", "--json"]
    assert cli.main(argv + arguments) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["rule"] == rule and decision in answer["decision"]
    if not arguments:
        assert "OBS API gives none" in answer["note"]


def test_policy_explain_without_a_file_explains_the_default_rule(policy_file, capsys):
    assert cli.main(["policy", "explain", "--graph", "etl"]) == 0
    out = capsys.readouterr().out
    assert "rule: default" in out and "restore 1 of 3: at once" in out


def test_every_result_line_names_its_rule(httpserver, function_env, load_function, capsys):
    from tests.conftest import RESTORED

    httpserver.expect_request("/v2/workflowexecutions/exec-1").respond_with_json(RESTORED)
    main = load_function()
    main.handler(REQUEST, None)
    (line,) = [x for x in log_lines(capsys.readouterr().out) if x["message"].startswith("restore")]
    assert line["rule"] == "default"
