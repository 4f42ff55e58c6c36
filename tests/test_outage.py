"""Outage mode's decisions (handler/outage.py) over a real store and a fake clock: the rate,
a graph's breaker from its first re-failure to its close, the systemic hold, and the events
each transition gives the reporter."""

from __future__ import annotations

import logging
import socket

import pytest

from handler.outage import (
    CANARY,
    DEFERRED,
    HOLD_BREAKER,
    HOLD_RATE,
    HOLD_SYSTEMIC,
    RESTORE,
    Admission,
    Outage,
    OutageSettings,
    RateLimit,
)
from handler.store import StoreUnavailable, open_store
from tests.store.conftest import BACKENDS, START, FakeClock
from tests.store.test_contract import run_threads

pytest_plugins = ["tests.redis_server"]

MINUTE = 60.0
NO_RATE = OutageSettings(rate_limit=None)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS)
def shared_store(request, tmp_path, clock):
    """A store of each backend, on the fake clock."""
    urls = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path / 'state.db'}"}
    url = urls.get(request.param) or request.getfixturevalue("redis_url")
    store = open_store(url, clock=clock)
    yield store
    store.close()


@pytest.fixture
def memory(clock):
    store = open_store("memory://", clock=clock)
    yield store
    store.close()


def outage(store, clock, settings=NO_RATE) -> Outage:
    return Outage(settings, store, clock)


def open_graph(guard: Outage, clock, graph="etl", count=5):
    """``count`` executions restored a minute ago that failed again now: the breaker opens."""
    events = [
        guard.failure_seen(graph, f"run-{n}", stopped_at=clock(), last_restore_at=clock() - 60)
        for n in range(count)
    ]
    assert events[:-1] == [None] * (count - 1)
    assert events[-1] is not None and events[-1].kind == "opened"
    return events[-1]


# --- the rate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "interval"),
    [("5/s", 5, 1.0), ("60/m", 60, 60.0), (" 100 / H ", 100, 3600.0), ("10000/h", 10000, 3600)],
)
def test_a_rate_limit_reads_n_per_second_minute_or_hour(text, limit, interval):
    rate = RateLimit.parse(text)
    assert rate == RateLimit(limit, interval)
    assert RateLimit.parse(str(rate)) == rate


@pytest.mark.parametrize("text", ["", "  ", "off", "OFF", "none"])
def test_an_empty_or_off_rate_limit_is_no_limit(text):
    assert RateLimit.parse(text) is None


@pytest.mark.parametrize("text", ["0/s", "10001/m", "5/d", "5", "5/10m", "fast", "-1/s", "5/s/s"])
def test_a_bad_rate_limit_is_refused_saying_the_forms(text):
    with pytest.raises(ValueError, match="N/s, N/m or N/h"):
        RateLimit.parse(text)


def test_restores_over_the_rate_are_deferred_until_a_slot_frees_and_returned_slots_count_again(
    memory, clock
):
    guard = outage(memory, clock, OutageSettings(rate_limit=RateLimit(2, MINUTE)))
    first = guard.admit("etl", "run-1")
    clock.advance(10)
    second = guard.admit("billing", "run-2")  # one rate for every graph
    assert (first.decision, second.decision) == (RESTORE, RESTORE)
    assert first.rate_token and second.rate_token
    third = guard.admit("etl", "run-3")
    assert (third.decision, third.hold, third.due_at) == (DEFERRED, HOLD_RATE, START + MINUTE)
    assert third.reason == (
        "restore rate 2/m reached across instances (RESTORE_RATE_LIMIT): "
        "next slot at 2023-11-14T22:14:20Z"
    )
    guard.give_back(second)  # its restore was refused: the slot is free again
    assert guard.admit("etl", "run-3").allowed
    clock.now = START + MINUTE
    assert guard.admit("etl", "run-4").allowed  # the first slot left the minute


# --- a graph's breaker ------------------------------------------------------------------------


def test_only_a_failure_after_the_last_restore_is_a_re_failure(memory, clock):
    guard = outage(memory, clock)
    for n in range(10):
        never_restored = guard.failure_seen(
            "etl", f"a-{n}", stopped_at=clock(), last_restore_at=None
        )
        before_restore = guard.failure_seen(
            "etl", f"b-{n}", stopped_at=clock() - 120, last_restore_at=clock() - 60
        )
        assert never_restored is None and before_restore is None
    assert memory.breaker("etl", window=900).refailures == ()
    assert guard.admit("etl", "a-0").decision == RESTORE


def test_distinct_re_failures_reaching_the_threshold_open_the_breaker_with_the_evidence(
    memory, clock
):
    guard = outage(memory, clock)
    for n in range(4):
        assert (
            guard.failure_seen("etl", f"run-{n}", stopped_at=clock(), last_restore_at=START - 60)
            is None
        )
        clock.advance(30)
    # The same execution failing again counts once.
    assert guard.failure_seen("etl", "run-3", stopped_at=clock(), last_restore_at=START) is None
    event = guard.failure_seen("etl", "run-4", stopped_at=clock(), last_restore_at=START)
    assert event is not None
    assert (event.kind, event.graph, event.level) == ("opened", "etl", logging.WARNING)
    assert event.message == (
        "breaker opened for graph etl: 5 executions re-failed after their restores within 15m "
        "(threshold 5): run-0 at 2023-11-14T22:13:20Z, run-1 at 2023-11-14T22:13:50Z, "
        "run-2 at 2023-11-14T22:14:20Z, run-3 at 2023-11-14T22:15:20Z, "
        "run-4 at 2023-11-14T22:15:20Z; its restores are held, next canary at "
        "2023-11-14T22:25:20Z"
    )
    fields = event.log_fields()
    assert fields["event"] == "breaker opened" and fields["graphName"] == "etl"
    assert [r["executionName"] for r in fields["refailures"]] == [f"run-{n}" for n in range(5)]
    assert (fields["threshold"], fields["windowSeconds"], fields["cooldownSeconds"]) == (
        5,
        900.0,
        600.0,
    )
    assert (fields["graphsOpen"], fields["systemicHold"]) == (1, False)
    # Only the call that opened it gets the event.
    assert guard.failure_seen("etl", "run-5", stopped_at=clock(), last_restore_at=START) is None


def test_an_open_breaker_defers_its_graph_until_the_canary_and_holds_no_other(memory, clock):
    guard = outage(memory, clock)
    open_graph(guard, clock)
    held = guard.admit("etl", "run-9")
    assert (held.decision, held.hold, held.due_at) == (DEFERRED, HOLD_BREAKER, START + 600)
    assert held.reason == (
        "breaker open since 2023-11-14T22:13:20Z, next canary at 2023-11-14T22:23:20Z"
    )
    assert guard.admit("billing", "run-1").decision == RESTORE  # another graph


def test_after_the_cooldown_exactly_one_item_is_the_canary_and_the_rest_wait_for_its_verdict(
    memory, clock
):
    guard = outage(memory, clock)
    open_graph(guard, clock)
    clock.advance(600)
    canary = guard.admit("etl", "run-0")
    assert canary.decision == CANARY and canary.canary_token
    clock.advance(5)
    waiting = guard.admit("etl", "run-1")
    assert (waiting.decision, waiting.hold, waiting.due_at) == (
        DEFERRED,
        HOLD_BREAKER,
        START + 1200,
    )
    assert "canary run-0 restored at 2023-11-14T22:23:20Z, judged at 2023-11-14T22:33:20Z" in (
        waiting.reason
    )
    assert guard.canary_due("etl") is None  # not judged before a cooldown has passed
    clock.now = START + 1200
    due = guard.canary_due("etl")
    assert due is not None and (due.execution, due.restored_at) == ("run-0", START + 600)


def test_sixteen_threads_admitting_one_open_graph_yield_exactly_one_canary(shared_store, clock):
    guard = outage(shared_store, clock)
    open_graph(guard, clock)
    clock.advance(600)
    answers = run_threads(16, lambda: guard.admit("etl", "run-0"))
    assert sorted(answer.decision for answer in answers) == [CANARY] + [DEFERRED] * 15


def test_a_canary_not_failed_when_looked_at_again_closes_the_breaker_once(memory, clock):
    guard = outage(memory, clock)
    open_graph(guard, clock)
    clock.advance(600)
    guard.admit("etl", "run-0")
    clock.advance(600)
    canary = guard.canary_due("etl")
    assert canary is not None
    closed = guard.canary_looked_at(canary, failed=False)
    assert closed is not None and (closed.kind, closed.level) == ("closed", logging.INFO)
    assert closed.message == (
        "breaker closed for graph etl: canary run-0 restored at 2023-11-14T22:23:20Z has not "
        "failed again; open for 20m, its held failures are released under the restore rate"
    )
    assert closed.fields["systemicHoldLifted"] is False
    assert guard.canary_looked_at(canary, failed=False) is None  # judged once, logged once
    assert guard.admit("etl", "run-1").decision == RESTORE


def test_a_canary_is_never_called_healthy_before_a_cooldown_has_passed(memory, clock):
    guard = outage(memory, clock)
    open_graph(guard, clock)
    clock.advance(600)
    guard.admit("etl", "run-0")
    clock.advance(600)
    canary = guard.canary_due("etl")
    clock.now = START + 1199  # a caller holding it early
    assert guard.canary_looked_at(canary, failed=False) is None
    assert memory.breaker("etl", window=900).state == "half_open"


def test_a_failed_canary_reopens_the_breaker_with_the_cooldown_doubled_up_to_an_hour(memory, clock):
    guard = outage(memory, clock)
    open_graph(guard, clock)
    cooldowns = []
    for _ in range(5):
        clock.now = memory.breaker("etl", window=900).next_canary_at
        assert guard.admit("etl", "run-0").decision == CANARY
        clock.advance(memory.breaker("etl", window=900).cooldown)
        canary = guard.canary_due("etl")
        event = guard.canary_looked_at(canary, failed=True, stopped_at=clock() - 1)
        assert event is not None and (event.kind, event.level) == ("reopened", logging.WARNING)
        cooldowns.append(event.fields["cooldownSeconds"])
    assert cooldowns == [1200, 2400, 3600, 3600, 3600]
    assert "canary run-0 failed again at" in event.message and "cooldown now 1h" in event.message


def test_the_canary_failing_again_reopens_the_breaker_as_soon_as_its_failure_is_seen(memory, clock):
    guard = outage(memory, clock)
    open_graph(guard, clock)
    clock.advance(600)
    guard.admit("etl", "run-0")
    restored_at = clock()
    clock.advance(30)  # an event, long before the canary is due to be judged
    event = guard.failure_seen("etl", "run-0", stopped_at=clock(), last_restore_at=restored_at)
    assert event is not None and event.kind == "reopened"
    assert memory.breaker("etl", window=900).cooldown == 1200


def test_a_canary_whose_restore_never_reached_it_is_given_back(memory, clock):
    """Still failed, but with the stop time of the failure before the canary's restore: the
    restore did not happen, so it proves nothing - the next item takes a new canary."""
    guard = outage(memory, clock)
    open_graph(guard, clock)
    clock.advance(600)
    guard.admit("etl", "run-0")
    clock.advance(600)
    canary = guard.canary_due("etl")
    assert guard.canary_looked_at(canary, failed=True, stopped_at=START) is None
    assert guard.admit("etl", "run-1").decision == CANARY


def test_a_canary_whose_restore_was_not_sent_is_given_back(memory, clock):
    guard = outage(memory, clock)
    open_graph(guard, clock)
    clock.advance(600)
    canary = guard.admit("etl", "run-0")
    guard.give_back(canary)  # refused, or a transient error
    assert guard.admit("etl", "run-1").decision == CANARY


def test_a_canary_refused_by_the_rate_is_released_for_the_next_item(memory, clock):
    guard = outage(memory, clock, OutageSettings(rate_limit=RateLimit(1, MINUTE)))
    open_graph(guard, clock)
    clock.advance(600)
    assert guard.admit("billing", "run-1").allowed  # takes the minute's slot
    over = guard.admit("etl", "run-0")
    assert (over.decision, over.hold) == (DEFERRED, HOLD_RATE)
    assert memory.breaker("etl", window=900).state == "open"  # the canary was not kept
    clock.advance(MINUTE)
    assert guard.admit("etl", "run-5").decision == CANARY


def test_three_graphs_open_hold_every_graph_until_one_closes(memory, clock):
    guard = outage(memory, clock)
    for graph in ("a", "b"):
        opened = open_graph(guard, clock, graph)
        assert opened.fields["systemicHold"] is False
        clock.advance(60)
    third = open_graph(guard, clock, "c")
    assert third.fields["graphsOpen"] == 3 and third.fields["systemicHold"] is True
    assert "every graph is held (systemic outage)" in third.message
    held = guard.admit("quiet", "run-1")
    assert (held.decision, held.hold, held.due_at) == (DEFERRED, HOLD_SYSTEMIC, START + 600)
    assert held.reason.startswith("systemic outage: the breakers of 3 graphs are open (a, b, c;")
    clock.now = START + 600
    assert guard.admit("a", "run-0").decision == CANARY  # the open graphs send canaries
    assert guard.admit("quiet", "run-1").hold == HOLD_SYSTEMIC
    clock.now = START + 1200
    closed = guard.canary_looked_at(guard.canary_due("a"), failed=False)
    assert closed.fields["systemicHoldLifted"] is True and "hold is lifted" in closed.message
    assert guard.admit("quiet", "run-1").decision == RESTORE


def test_a_rule_sets_its_own_threshold_or_turns_the_breaker_off(memory, clock):
    guard = outage(memory, clock)
    for n in range(10):  # off: nothing counted
        guard.failure_seen("etl", f"x-{n}", stopped_at=clock(), last_restore_at=0, threshold=0)
    assert memory.breaker("etl", window=900).refailures == ()
    guard.failure_seen("etl", "run-0", stopped_at=clock(), last_restore_at=0, threshold=2)
    event = guard.failure_seen("etl", "run-1", stopped_at=clock(), last_restore_at=0, threshold=2)
    assert event is not None and event.fields["threshold"] == 2
    assert guard.admit("etl", "run-2").hold == HOLD_BREAKER
    assert guard.admit("etl", "run-2", threshold=0).decision == RESTORE  # its rule is not held


def test_the_breaker_and_rate_state_for_operators(memory, clock):
    guard = outage(memory, clock, OutageSettings(rate_limit=RateLimit(5, MINUTE)))
    guard.admit("etl", "run-0")
    open_graph(guard, clock)
    state = guard.state("etl")
    assert state["breaker"]["state"] == "open"
    assert state["breaker"]["nextCanaryAt"] == "2023-11-14T22:23:20Z"
    assert state["breaker"]["refailures"] == 5
    assert (state["graphsOpen"], state["systemicHold"]) == (["etl"], False)
    assert state["rate"] == {"limit": "5/m", "used": 1}
    assert guard.state("billing")["breaker"]["state"] == "closed"


def test_a_store_that_is_down_fails_the_decision_closed_and_giving_back_never_raises(clock):
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = open_store(f"redis://127.0.0.1:{port}/0?socket_timeout=0.5", clock=clock)
    guard = outage(down, clock, OutageSettings(rate_limit=RateLimit(5, MINUTE)))
    with pytest.raises(StoreUnavailable):
        guard.admit("etl", "run-0")
    with pytest.raises(StoreUnavailable):
        guard.failure_seen("etl", "run-0", stopped_at=clock(), last_restore_at=0)
    # What an admitted item held, given back while the store is down: nothing raises (the
    # slot frees itself after its interval, the canary is judged as never restored).
    guard.give_back(Admission(CANARY, "etl", rate_token="slot", canary_token="canary"))
    down.close()


def test_the_default_settings_are_the_documented_ones():
    settings = OutageSettings()
    assert settings.rate_limit == RateLimit(60, MINUTE)
    assert (settings.breaker_window, settings.breaker_threshold) == (900.0, 5)
    assert (settings.breaker_cooldown, settings.max_cooldown, settings.breaker_global) == (
        600.0,
        3600.0,
        3,
    )
    assert OutageSettings(breaker_cooldown=7200).max_cooldown == 7200  # never shortened
