"""Outage mode's two promises as properties, on every backend: a restore rate never grants
more than its limit in any interval (and never refuses while a slot is free), and of the
instances racing for a graph's canary exactly one gets it per cooldown - and of those judging
it, exactly one closes or reopens the breaker.

Each example uses subjects and graphs of its own, so one store (per backend) serves them all;
the clock is the tests' fake clock, moved by the example.
"""

from __future__ import annotations

import bisect
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.store.conftest import START
from tests.store.test_contract import run_threads

pytest_plugins = ["tests.redis_server"]

EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_names = itertools.count()

steps = st.lists(
    st.tuples(st.integers(0, 160), st.integers(1, 4)),  # quarter seconds to wait, takes then
    min_size=1,
    max_size=25,
)


@EXAMPLES
@given(limit=st.integers(1, 5), interval=st.integers(1, 30), plan=steps)
def test_a_rate_never_grants_more_than_its_limit_in_any_interval(
    make_store, clock, limit, interval, plan
):
    store = make_store(clock)
    subject = f"rate-{next(_names)}"
    clock.now = START
    granted: list[float] = []
    for quarters, takes in plan:
        clock.advance(quarters / 4)
        for _ in range(takes):
            slot = store.take_rate_slot(subject, limit, interval)
            now = clock()
            held = sum(1 for at in granted if at > now - interval)
            if slot.granted:
                assert held < limit
                granted.append(now)
            else:
                # Refused only when the limit is really reached; told when a slot frees.
                assert held == limit
                assert now < slot.free_at <= now + interval
                assert sum(1 for at in granted if at > slot.free_at - interval) < limit
    for index, start in enumerate(granted):
        within = bisect.bisect_left(granted, start + interval) - index
        assert within <= limit, (start, granted)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    racers=st.integers(2, 6),
    judges=st.integers(1, 4),
    verdicts=st.lists(st.booleans(), min_size=1, max_size=3),  # did each canary fail again?
)
def test_exactly_one_canary_per_cooldown_and_one_judgement_across_threads(
    make_store, clock, racers, judges, verdicts
):
    store = make_store(clock)
    graph = f"graph-{next(_names)}"
    window = 3600.0
    for n in range(2):
        store.record_refailure(graph, f"run-{n}", clock(), window=window, threshold=2, cooldown=60)
    for failed_again in verdicts:
        state = store.breaker(graph, window=window)
        assert state.state == "open"
        clock.now = state.next_canary_at - 1  # not yet: nobody gets it
        early = run_threads(racers, lambda: store.take_canary(graph, "run-0", window=window))
        assert not any(answer.changed for answer in early)
        clock.now = state.next_canary_at
        taken = run_threads(racers, lambda: store.take_canary(graph, "run-0", window=window))
        assert [answer.changed for answer in taken].count(True) == 1
        (token,) = {answer.canary_token for answer in taken}
        clock.advance(state.cooldown)

        def judge(token=token, failed_again=failed_again):
            if failed_again:
                return store.reopen_breaker(graph, token, max_cooldown=600, window=window)
            return store.close_breaker(graph, token, window=window)

        judged = run_threads(judges, judge)
        assert [answer.changed for answer in judged].count(True) == 1
        if not failed_again:
            assert store.breaker(graph, window=window).state == "closed"
            return
        assert store.breaker(graph, window=window).cooldown == min(2 * state.cooldown, 600)
