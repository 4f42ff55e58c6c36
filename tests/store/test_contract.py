"""The state store's contract, run against every backend: memory, SQLite and a real Redis.

Concurrency uses real threads; the behaviour one backend alone has lives beside it in
test_sqlite.py and test_redis.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from handler.store import Claim, StateStore
from handler.store.base import REFAILURES_KEPT, BreakerState, LedgerBatch, Refailure, Reservation
from tests.store.conftest import HOUR, START

pytest_plugins = ["tests.redis_server"]  # redis_url, redis_server_factory


def run_threads(count: int, work: Callable[[], object]) -> list[object]:
    """Run ``work`` in ``count`` threads released together; return results, re-raise errors."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = work()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a worker thread hung"
    if errors:
        raise errors[0]
    return results


def spend(
    store: StateStore, subject: str, *, limit: int, window: float, keep: float | None = None
) -> str | None:
    """Reserve a unit and settle it at once (a restore that happened); its token, or None."""
    reservation = store.reserve_budget(subject, limit, window, in_flight=60, keep=keep)
    if not reservation.reserved:
        return None
    store.settle_budget(subject, reservation.token)
    return reservation.token


# --- dedupe -----------------------------------------------------------------------------------


def test_claim_then_in_progress_then_done_with_the_record(store):
    first = store.claim("event-1", ttl=60)
    assert first.acquired and first.state == "acquired" and first.record is None
    assert len(first.token) >= 16

    assert store.claim("event-1", ttl=60) == Claim(False, "", "in_progress", None)

    outcome = {"status": "restored", "attempts": 2, "nested": {"urn": "x"}, "list": [1, None]}
    store.finish("event-1", first.token, outcome, retention=HOUR)
    assert store.claim("event-1", ttl=60) == Claim(False, "", "done", outcome)
    # Another key is unaffected.
    assert store.claim("event-2", ttl=60).acquired


def test_release_lets_a_redelivery_acquire(store):
    first = store.claim("event", ttl=60)
    store.release("event", first.token)
    second = store.claim("event", ttl=60)
    assert second.acquired and second.token != first.token


def test_release_with_a_wrong_token_does_nothing(store):
    first = store.claim("event", ttl=60)
    store.release("event", "not-the-token")
    store.release("event", "")
    assert store.claim("event", ttl=60).state == "in_progress"
    # Nor does release touch a recorded outcome.
    store.finish("event", first.token, {"ok": True}, retention=HOUR)
    store.release("event", first.token)
    assert store.claim("event", ttl=60).state == "done"


def test_an_expired_marker_is_taken_over(store, clock):
    first = store.claim("event", ttl=30)
    clock.advance(29.9)
    assert store.claim("event", ttl=30).state == "in_progress"
    clock.advance(0.2)
    second = store.claim("event", ttl=30)
    assert second.acquired and second.token != first.token
    # The crashed holder coming back cannot drop the new holder's marker.
    store.release("event", first.token)
    assert store.claim("event", ttl=30).state == "in_progress"


def test_renew_keeps_a_holders_marker_live_past_its_first_ttl(store, clock):
    held = store.claim("lease", ttl=30)
    for _ in range(4):  # two minutes in all, renewed every 20 s
        clock.advance(20)
        assert store.renew("lease", held.token, 30)
        assert store.claim("lease", ttl=30).state == "in_progress"
    clock.advance(30.1)  # not renewed any more: it expires, and another may take it
    assert store.claim("lease", ttl=30).acquired


def test_renew_fails_for_a_marker_that_is_not_the_holders_any_more(store, clock):
    assert not store.renew("lease", "never-held", 30)  # no marker at all
    first = store.claim("lease", ttl=30)
    assert not store.renew("lease", "not-the-token", 30)
    clock.advance(31)
    assert not store.renew("lease", first.token, 30)  # expired: renewing cannot revive it
    second = store.claim("lease", ttl=30)
    assert second.acquired
    assert not store.renew("lease", first.token, 30)  # taken over
    assert store.renew("lease", second.token, 30)
    store.finish("lease", second.token, {"done": True}, retention=HOUR)
    assert not store.renew("lease", second.token, 30)  # an outcome is not a marker
    assert store.claim("lease", ttl=30).state == "done"
    with pytest.raises(ValueError):
        store.renew("lease", second.token, 0)


def test_finish_records_the_outcome_even_after_the_marker_expired(store, clock):
    first = store.claim("event", ttl=10)
    clock.advance(60)
    store.finish("event", first.token, {"status": "restored"}, retention=HOUR)
    assert store.claim("event", ttl=10).record == {"status": "restored"}


def test_an_outcome_is_kept_for_its_retention_then_forgotten(store, clock):
    first = store.claim("event", ttl=10)
    store.finish("event", first.token, {"status": "skipped"}, retention=100)
    clock.advance(99)
    assert store.claim("event", ttl=10).state == "done"
    clock.advance(2)
    assert store.claim("event", ttl=10).acquired


def test_keys_are_arbitrary_strings(store):
    keys = ["a" * 300, "ünïcødé/ключ:💥", "glob*?[x]\\", "with space and 'quotes'", ":"]
    claims = {key: store.claim(key, ttl=60) for key in keys}
    assert all(claim.acquired for claim in claims.values())
    for key, claim in claims.items():
        store.finish(key, claim.token, {"key": key}, retention=HOUR)
    for key in keys:
        assert store.claim(key, ttl=60).record == {"key": key}


def test_invalid_arguments_fail_before_any_io(store):
    with pytest.raises(ValueError, match="ttl"):
        store.claim("event", ttl=0)
    with pytest.raises(ValueError, match="key"):
        store.claim("", ttl=10)
    with pytest.raises(TypeError):
        store.finish("event", "t", {"not json": object()}, retention=10)
    with pytest.raises(TypeError, match="dict"):
        store.finish("event", "t", ["a", "list"], retention=10)
    with pytest.raises(ValueError, match="window"):
        store.reserve_budget("subject", 3, window=-1, in_flight=60)
    # Nothing was written by the failed calls.
    assert store.claim("event", ttl=10).acquired


def test_sixteen_threads_claiming_one_key_yield_exactly_one_holder(make_store):
    store = make_store()
    claims = run_threads(16, lambda: store.claim("contended", ttl=60))
    assert sorted(claim.state for claim in claims) == ["acquired"] + ["in_progress"] * 15


# --- budget -----------------------------------------------------------------------------------


def test_budget_stops_at_the_limit_slides_with_the_window_and_refunds(store, clock):
    window = 10 * HOUR
    first = spend(store, "exec-1", limit=3, window=window)
    clock.advance(HOUR)
    second = spend(store, "exec-1", limit=3, window=window)
    third = spend(store, "exec-1", limit=3, window=window)
    assert None not in (first, second, third) and len({first, second, third}) == 3
    assert spend(store, "exec-1", limit=3, window=window) is None
    assert store.budget_used("exec-1", window) == 3
    assert spend(store, "exec-2", limit=3, window=window) is not None  # per subject

    store.refund_budget("exec-1", second)
    assert store.budget_used("exec-1", window) == 2
    fourth = spend(store, "exec-1", limit=3, window=window)
    assert fourth is not None
    assert spend(store, "exec-1", limit=3, window=window) is None

    # The window slides: the first reservation (made an hour before the others) ages out first.
    clock.advance(window - HOUR - 1)
    assert store.budget_used("exec-1", window) == 3
    clock.advance(1.5)
    assert store.budget_used("exec-1", window) == 2
    assert spend(store, "exec-1", limit=3, window=window) is not None
    assert spend(store, "exec-1", limit=3, window=window) is None
    # Refunding an unknown token is harmless.
    store.refund_budget("exec-1", "unknown")
    store.refund_budget("never-seen", "unknown")


def test_budget_times_are_the_reservations_in_the_window_oldest_first(store, clock):
    assert store.budget_times("exec", HOUR) == []
    spend(store, "exec", limit=5, window=10 * HOUR)
    clock.advance(60)
    refunded = spend(store, "exec", limit=5, window=10 * HOUR)
    clock.advance(60)
    spend(store, "exec", limit=5, window=10 * HOUR)
    spend(store, "other", limit=5, window=10 * HOUR)
    store.refund_budget("exec", refunded)
    assert store.budget_times("exec", HOUR) == pytest.approx([START, START + 120])
    assert store.budget_times("exec", 100) == pytest.approx([START + 120])  # the window slides
    assert len(store.budget_times("exec", HOUR)) == store.budget_used("exec", HOUR)


def test_a_short_window_reservation_never_drops_a_longer_window_s_reservations(store, clock):
    """Rules with different windows share one execution's budget: a reservation counted with
    a 60 s window must not make the store forget those a 1 h window still counts."""
    assert spend(store, "exec", limit=2, window=HOUR) is not None
    assert spend(store, "exec", limit=2, window=HOUR) is not None
    clock.advance(600)
    assert spend(store, "exec", limit=5, window=60) is not None  # another rule's
    clock.advance(100)
    assert spend(store, "exec", limit=2, window=HOUR) is None
    assert store.budget_used("exec", HOUR) == 2  # the 60 s reservation has expired
    assert store.budget_times("exec", HOUR) == pytest.approx([START, START])


def test_keep_holds_a_reservation_for_the_longest_window_that_counts_it(store, clock):
    """A restore is a restore: a short-window rule's reservation still counts for a 1 h rule
    when the caller keeps it for the longest window any of its rules uses."""
    assert spend(store, "exec", limit=5, window=60, keep=HOUR) is not None
    clock.advance(600)
    assert store.budget_used("exec", 60) == 0  # outside the short window
    assert store.budget_used("exec", HOUR) == 1  # kept for the long one
    assert spend(store, "exec", limit=2, window=HOUR, keep=HOUR) is not None
    assert spend(store, "exec", limit=2, window=HOUR, keep=HOUR) is None
    clock.advance(HOUR - 600)  # the first one is an hour old now
    assert store.budget_times("exec", HOUR) == pytest.approx([START + 600])
    with pytest.raises(ValueError, match="keep"):
        spend(store, "exec", limit=2, window=HOUR, keep=0)


def test_a_limit_below_one_never_reserves(store):
    assert spend(store, "exec", limit=0, window=60) is None
    assert store.budget_used("exec", 60) == 0


def test_twenty_threads_reserving_with_limit_three_get_exactly_three(make_store):
    store = make_store()
    tokens = run_threads(20, lambda: spend(store, "exec", limit=3, window=HOUR))
    granted = [token for token in tokens if token is not None]
    assert len(granted) == 3 and len(set(granted)) == 3
    assert store.budget_used("exec", HOUR) == 3


def test_a_budget_only_reservations_in_flight_fill_is_busy_not_spent(store):
    """A reservation is taken before the restore is sent: until it is settled, nothing has
    been restored, so a full budget says ``busy`` (ask again) rather than ``spent`` (final)."""
    first = store.reserve_budget("exec", 2, HOUR, in_flight=60)
    second = store.reserve_budget("exec", 2, HOUR, in_flight=60)
    assert first.reserved and first.state == "reserved" and len(first.token) >= 16
    assert second.reserved and second.token != first.token
    assert store.reserve_budget("exec", 2, HOUR, in_flight=60) == Reservation(False, "", "busy")
    assert store.budget_used("exec", HOUR) == 2
    assert store.budget_used("exec", HOUR, spent_only=True) == 0

    store.settle_budget("exec", first.token)  # accepted: a restore that happened
    assert store.reserve_budget("exec", 2, HOUR, in_flight=60).state == "busy"  # one in flight
    store.settle_budget("exec", second.token)  # sent without an answer: it may have happened
    store.settle_budget("exec", second.token)  # settling twice is harmless
    assert store.reserve_budget("exec", 2, HOUR, in_flight=60) == Reservation(False, "", "spent")
    assert store.budget_used("exec", HOUR, spent_only=True) == 2
    assert store.budget_times("exec", HOUR) == pytest.approx([START, START])

    store.refund_budget("exec", second.token)  # a settled unit can still be given back
    assert store.reserve_budget("exec", 2, HOUR, in_flight=60).reserved
    store.settle_budget("exec", "unknown")  # an unknown token is ignored
    store.settle_budget("never-seen", "unknown")


def test_a_reservation_still_in_flight_after_its_time_counts_as_spent(store, clock):
    """Its holder died mid-call and may have sent the restore: from then on it is spent."""
    held = store.reserve_budget("exec", 1, HOUR, in_flight=30)
    assert held.reserved
    clock.advance(29)
    assert store.reserve_budget("exec", 1, HOUR, in_flight=30).state == "busy"
    assert store.budget_used("exec", HOUR, spent_only=True) == 0
    clock.advance(2)
    assert store.reserve_budget("exec", 1, HOUR, in_flight=30).state == "spent"
    assert store.budget_used("exec", HOUR, spent_only=True) == 1
    store.settle_budget("exec", held.token)  # the late settlement changes nothing
    assert store.budget_used("exec", HOUR, spent_only=True) == 1
    with pytest.raises(ValueError, match="in_flight"):
        store.reserve_budget("exec", 1, HOUR, in_flight=0)


def test_twenty_threads_reserving_in_flight_get_three_units_and_seventeen_busy(make_store):
    store = make_store()
    answers = run_threads(20, lambda: store.reserve_budget("exec", 3, HOUR, in_flight=60))
    assert sorted(answer.state for answer in answers) == ["busy"] * 17 + ["reserved"] * 3
    assert len({answer.token for answer in answers if answer.reserved}) == 3


# --- failures seen -----------------------------------------------------------------------------


def test_first_seen_remembers_a_failure_s_first_sighting_for_its_retention(store, clock):
    assert store.first_seen("g/e", retention=HOUR) == START
    clock.advance(3)
    assert store.first_seen("g/e", retention=HOUR) == START  # the next event: same reference
    assert store.first_seen("g/other", retention=HOUR) == START + 3  # per failure
    clock.advance(HOUR - 3)
    assert store.first_seen("g/e", retention=HOUR) == START + HOUR  # forgotten, seen anew
    with pytest.raises(ValueError, match="retention"):
        store.first_seen("g/e", retention=0)
    with pytest.raises(ValueError, match="key"):
        store.first_seen("", retention=HOUR)


def test_a_sighting_before_the_last_restore_belongs_to_an_earlier_failure(store, clock):
    assert store.first_seen("g/e", retention=HOUR) == START
    clock.advance(60)
    restored_at = clock()
    clock.advance(60)
    assert store.first_seen("g/e", retention=HOUR, after=restored_at) == START + 120
    clock.advance(5)
    assert store.first_seen("g/e", retention=HOUR, after=restored_at) == START + 120


def test_concurrent_first_sightings_agree_on_one_time(make_store):
    store = make_store()
    times = run_threads(16, lambda: store.first_seen("g/e", retention=HOUR))
    assert len(set(times)) == 1


# --- deferred failures -------------------------------------------------------------------------


def test_a_deferred_failure_is_due_at_its_time_longest_due_first(store, clock):
    failure = {"graph": "g", "execution": "e", "failedAt": None, "nested": ["ü", 1]}
    store.remember_deferred("evt-late", {"n": 2}, START + 70, retention=HOUR)
    store.remember_deferred("evt-early", failure, START + 10, retention=HOUR)
    assert store.due_deferred(10) == []
    clock.advance(10)
    assert store.due_deferred(10) == [("evt-early", failure)]
    clock.advance(60)
    assert store.due_deferred(10) == [("evt-early", failure), ("evt-late", {"n": 2})]
    assert store.due_deferred(1) == [("evt-early", failure)]
    assert store.due_deferred(0) == []
    # Deferred again: what is remembered for a key is replaced, due time included.
    store.remember_deferred("evt-early", {"n": 1}, START + 100, retention=HOUR)
    assert store.due_deferred(10) == [("evt-late", {"n": 2})]


def test_a_final_outcome_forgets_the_deferred_failure(store, clock):
    store.remember_deferred("evt-1", {"n": 1}, START, retention=HOUR)
    store.remember_deferred("evt-2", {"n": 2}, START, retention=HOUR)
    claim = store.claim("evt-1", ttl=60)
    store.release("evt-1", claim.token)  # not final: still due
    assert [key for key, _ in store.due_deferred(10)] == ["evt-1", "evt-2"]
    claim = store.claim("evt-1", ttl=60)
    store.finish("evt-1", claim.token, {"outcome": "restored"}, retention=HOUR)
    assert store.due_deferred(10) == [("evt-2", {"n": 2})]


def test_a_deferred_failure_nobody_worked_through_is_forgotten_after_its_retention(store, clock):
    store.remember_deferred("evt", {"n": 1}, START + 60, retention=HOUR)
    clock.advance(60 + HOUR - 1)
    assert store.due_deferred(10) == [("evt", {"n": 1})]
    clock.advance(1)
    assert store.due_deferred(10) == []
    store.remember_deferred("other", {"n": 2}, clock(), retention=HOUR)  # collects the old one
    assert store.due_deferred(10) == [("other", {"n": 2})]
    with pytest.raises(ValueError, match="due_at"):
        store.remember_deferred("evt", {}, float("nan"), retention=HOUR)
    with pytest.raises(TypeError, match="dict"):
        store.remember_deferred("evt", ["not", "a", "dict"], START, retention=HOUR)
    with pytest.raises(ValueError, match="key"):
        store.remember_deferred("", {}, START, retention=HOUR)


# --- operator view ----------------------------------------------------------------------------


def test_recent_lists_live_entries_newest_first(store, clock):
    done = store.claim("old", ttl=60)
    store.finish("old", done.token, {"status": "restored"}, retention=HOUR)
    clock.advance(1)
    store.claim("new", ttl=60)
    clock.advance(1)
    store.claim("gone", ttl=1)
    spend(store, "exec-a", limit=5, window=HOUR)
    clock.advance(1)
    spend(store, "exec-b", limit=5, window=HOUR)
    spend(store, "exec-b", limit=5, window=HOUR)
    clock.advance(1)  # "gone" has expired by now

    view = store.recent()
    assert view["dedupe"] == [
        {"key": "new", "state": "in_progress", "expires_at": START + 61, "record": None},
        {
            "key": "old",
            "state": "done",
            "expires_at": START + HOUR,
            "record": {"status": "restored"},
        },
    ]
    assert view["budget"] == [
        {"subject": "exec-b", "used": 2, "last_at": START + 3},
        {"subject": "exec-a", "used": 1, "last_at": START + 2},
    ]
    assert store.recent(limit=1)["dedupe"][0]["key"] == "new"
    assert store.recent(window=1.5)["budget"] == [
        {"subject": "exec-b", "used": 2, "last_at": START + 3}
    ]


def test_ping_and_describe(store, make_store):
    store.ping()
    assert isinstance(store.describe, str) and "\n" not in store.describe
    assert store.describe.split("://", 1)[0] == make_store.kind
    assert store.describe in repr(store)


# --- operators and readiness -----------------------------------------------------------------


def test_forget_drops_an_outcome_or_a_marker_so_the_event_runs_again(store, clock):
    done = store.claim("finished", ttl=60)
    store.finish("finished", done.token, {"outcome": "failed"}, retention=HOUR)
    store.claim("in-flight", ttl=60)
    old = store.claim("expired", ttl=10)
    clock.advance(11)

    assert store.forget("finished") is True
    assert store.forget("in-flight") is True
    assert store.forget("expired") is False  # nothing live to forget
    assert store.forget("never-seen") is False
    assert store.recent()["dedupe"] == []
    assert store.claim("finished", ttl=60).acquired
    assert store.claim("in-flight", ttl=60).acquired
    store.release("expired", old.token)  # harmless after a forget
    with pytest.raises(ValueError, match="key"):
        store.forget("")


def test_reset_budget_drops_one_executions_reservations(store):
    for _ in range(3):
        assert spend(store, "graph/exec-1", limit=3, window=HOUR) is not None
    spend(store, "graph/exec-2", limit=3, window=HOUR)
    assert spend(store, "graph/exec-1", limit=3, window=HOUR) is None

    assert store.reset_budget("graph/exec-1") == 3
    assert store.budget_used("graph/exec-1", HOUR) == 0
    assert store.budget_used("graph/exec-2", HOUR) == 1  # another execution is untouched
    assert spend(store, "graph/exec-1", limit=3, window=HOUR) is not None
    assert store.reset_budget("graph/never-seen") == 0
    with pytest.raises(ValueError, match="subject"):
        store.reset_budget("")


def test_check_writable_writes_nothing(store):
    for _ in range(3):
        store.check_writable()
    assert store.recent() == {"dedupe": [], "budget": []}
    assert store.claim("event", ttl=60).acquired


# --- outage mode: the restore rate -------------------------------------------------------------


def test_rate_slots_stop_at_the_limit_and_each_frees_one_interval_after_it_was_taken(store, clock):
    granted = []
    for _ in range(3):
        slot = store.take_rate_slot("restore", 3, 60)
        assert slot.granted and slot.free_at == START + 10 * len(granted)
        granted.append(slot.token)
        clock.advance(10)
    assert len(set(granted)) == 3 and all(len(token) >= 16 for token in granted)
    full = store.take_rate_slot("restore", 3, 60)
    assert (full.granted, full.token, full.free_at) == (False, "", START + 60)
    assert store.rate_used("restore", 60) == 3
    assert store.take_rate_slot("other", 3, 60).granted  # per subject

    clock.now = START + 59.9
    assert store.take_rate_slot("restore", 3, 60).free_at == START + 60
    clock.now = START + 60  # the first slot leaves the interval: one is free
    assert store.take_rate_slot("restore", 3, 60).granted
    assert store.take_rate_slot("restore", 3, 60).free_at == START + 70
    assert store.rate_used("restore", 60) == 3
    assert store.rate_used("restore", 45) == 2  # those taken at START + 20 and START + 60


def test_a_returned_rate_slot_is_free_again_at_once(store):
    first = store.take_rate_slot("restore", 2, 60)
    assert store.take_rate_slot("restore", 2, 60).granted
    assert not store.take_rate_slot("restore", 2, 60).granted
    store.return_rate_slot("restore", first.token)  # its restore was never sent
    assert store.take_rate_slot("restore", 2, 60).granted
    store.return_rate_slot("restore", "unknown")  # harmless
    store.return_rate_slot("never-seen", "unknown")
    assert store.rate_used("restore", 60) == 2


def test_a_lowered_rate_limit_frees_a_slot_only_once_enough_have_left(store, clock):
    for _ in range(5):
        assert store.take_rate_slot("restore", 5, 60).granted
        clock.advance(1)
    # Five held, two allowed now: the fourth slot's leaving (taken at START + 3) brings them
    # below two.
    assert store.take_rate_slot("restore", 2, 60).free_at == START + 63


def test_a_rate_limit_below_one_never_grants_and_bad_arguments_fail_before_any_io(store):
    never = store.take_rate_slot("restore", 0, 60)
    assert not never.granted and never.free_at == float("inf")
    with pytest.raises(ValueError, match="interval"):
        store.take_rate_slot("restore", 3, 0)
    with pytest.raises(ValueError, match="subject"):
        store.take_rate_slot("", 3, 60)
    with pytest.raises(TypeError):
        store.take_rate_slot("restore", True, 60)
    assert store.rate_used("restore", 60) == 0


def test_twenty_threads_taking_rate_slots_with_limit_five_get_exactly_five(make_store):
    store = make_store()
    answers = run_threads(20, lambda: store.take_rate_slot("restore", 5, HOUR))
    granted = [answer for answer in answers if answer.granted]
    assert len(granted) == 5 and len({answer.token for answer in granted}) == 5
    first = min(answer.free_at for answer in granted)
    assert all(answer.free_at >= first + HOUR for answer in answers if not answer.granted)
    assert store.rate_used("restore", HOUR) == 5


# --- outage mode: the breaker of a graph -------------------------------------------------------

WINDOW, COOLDOWN = 900.0, 600.0


def refail(store, execution, at, *, graph="etl", threshold=3, cooldown=COOLDOWN):
    return store.record_refailure(
        graph, execution, at, window=WINDOW, threshold=threshold, cooldown=cooldown
    )


def open_breaker(store, clock, graph="etl", *, cooldown=COOLDOWN):
    for n in range(3):
        state = refail(store, f"run-{n}", clock(), graph=graph, cooldown=cooldown)
    assert state.state == "open" and state.changed
    return state


def test_distinct_executions_re_failing_within_the_window_open_the_breaker_with_evidence(
    store, clock
):
    first = refail(store, "run-1", START - 30)
    assert (first.state, first.changed, first.opened_at) == ("closed", False, None)
    clock.advance(10)
    again = refail(store, "run-1", clock())  # the same execution counts once, at its latest
    assert again.state == "closed" and [r.execution for r in again.refailures] == ["run-1"]
    assert refail(store, "run-2", clock()).state == "closed"
    clock.advance(5)
    opened = refail(store, "run-3", clock() - 1)
    assert (opened.state, opened.changed) == ("open", True)
    assert (opened.opened_at, opened.cooldown) == (START + 15, COOLDOWN)
    assert opened.next_canary_at == START + 15 + COOLDOWN
    assert opened.refailures == (
        Refailure("run-1", START + 10),
        Refailure("run-2", START + 10),
        Refailure("run-3", START + 14),
    )
    more = refail(store, "run-4", clock())  # already open: recorded, nothing changes
    assert (more.state, more.changed, more.opened_at) == ("open", False, START + 15)
    read = store.breaker("etl", window=WINDOW)
    assert (read.state, read.changed, len(read.refailures)) == ("open", False, 4)
    assert store.breaker("other", window=WINDOW) == BreakerState("other")  # per graph


def test_re_failures_older_than_the_window_do_not_count(store, clock):
    assert refail(store, "run-1", START - WINDOW).refailures == ()  # stopped too long ago
    refail(store, "run-1", clock())
    clock.advance(WINDOW)  # run-1's re-failure has left the window
    refail(store, "run-2", clock())
    state = refail(store, "run-3", clock())
    assert state.state == "closed" and [r.execution for r in state.refailures] == [
        "run-2",
        "run-3",
    ]
    future = refail(store, "run-4", clock() + 3600)  # a stop time ahead of our clock: now
    assert future.state == "open" and future.refailures[-1] == Refailure("run-4", clock())
    with pytest.raises(ValueError, match="failed_at"):
        refail(store, "run-5", float("nan"))
    with pytest.raises(ValueError, match="graph"):
        refail(store, "run-5", START, graph="")
    with pytest.raises(ValueError, match="cooldown"):
        refail(store, "run-5", START, cooldown=0)


def test_a_threshold_below_one_never_opens(store, clock):
    for n in range(5):
        state = refail(store, f"run-{n}", clock(), threshold=0)
    assert state.state == "closed" and len(state.refailures) == 5


def test_exactly_one_caller_takes_the_canary_once_the_cooldown_is_over(store, clock):
    open_breaker(store, clock)
    clock.advance(COOLDOWN - 1)
    early = store.take_canary("etl", "run-0", window=WINDOW)
    assert (early.state, early.changed, early.canary_token) == ("open", False, "")
    clock.advance(1)
    taken = store.take_canary("etl", "run-0", window=WINDOW)
    assert (taken.state, taken.changed, taken.canary_execution) == ("half_open", True, "run-0")
    assert len(taken.canary_token) >= 16 and taken.canary_at == START + COOLDOWN
    assert taken.canary_judged_at == START + 2 * COOLDOWN
    late = store.take_canary("etl", "run-1", window=WINDOW)
    assert (late.state, late.changed, late.canary_execution) == ("half_open", False, "run-0")
    assert late.canary_token == taken.canary_token  # every instance can judge the canary
    assert store.take_canary("closed-graph", "run-0", window=WINDOW).state == "closed"


def test_sixteen_threads_taking_one_canary_yield_exactly_one(make_store, clock):
    store = make_store(clock)
    open_breaker(store, clock)
    clock.advance(COOLDOWN)
    answers = run_threads(16, lambda: store.take_canary("etl", "run-0", window=WINDOW))
    assert [answer.changed for answer in answers].count(True) == 1
    assert {answer.canary_token for answer in answers} != {""}
    assert len({answer.canary_token for answer in answers}) == 1


def test_a_canary_that_did_not_fail_again_closes_the_breaker_for_exactly_one_caller(store, clock):
    open_breaker(store, clock)
    clock.advance(COOLDOWN)
    canary = store.take_canary("etl", "run-0", window=WINDOW)
    clock.advance(COOLDOWN)
    wrong = store.close_breaker("etl", "not-the-canary", window=WINDOW)
    assert (wrong.state, wrong.changed) == ("half_open", False)
    closed = store.close_breaker("etl", canary.canary_token, window=WINDOW)
    assert (closed.state, closed.changed) == ("closed", True)
    # Another instance judged the same canary at the same time: it does not close it again.
    again = store.close_breaker("etl", canary.canary_token, window=WINDOW)
    assert (again.state, again.changed) == ("closed", False)
    assert store.breaker("etl", window=WINDOW).refailures == ()  # the evidence is dropped
    assert store.breakers_open() == []


def test_a_closed_breaker_does_not_count_re_failures_that_stopped_before_it_closed(store, clock):
    open_breaker(store, clock)
    clock.advance(COOLDOWN)
    canary = store.take_canary("etl", "run-0", window=WINDOW)
    clock.advance(COOLDOWN)
    closed_at = clock()
    store.close_breaker("etl", canary.canary_token, window=WINDOW)
    clock.advance(1)
    for n in range(3):  # found late: they stopped before the canary proved the outage over
        state = refail(store, f"late-{n}", closed_at - 10)
    assert (state.state, state.refailures) == ("closed", ())
    for n in range(3):
        state = refail(store, f"new-{n}", clock())
    assert (state.state, state.changed) == ("open", True)


def test_a_failed_canary_reopens_the_breaker_with_the_cooldown_doubled_up_to_the_cap(store, clock):
    open_breaker(store, clock)
    cooldowns = []
    for _ in range(4):
        clock.advance(store.breaker("etl", window=WINDOW).cooldown)
        canary = store.take_canary("etl", "run-0", window=WINDOW)
        assert canary.changed
        clock.advance(canary.cooldown)
        reopened = store.reopen_breaker(
            "etl", canary.canary_token, max_cooldown=2000, window=WINDOW
        )
        assert (reopened.state, reopened.changed, reopened.opened_at) == ("open", True, clock())
        cooldowns.append(reopened.cooldown)
        again = store.reopen_breaker("etl", canary.canary_token, max_cooldown=2000, window=WINDOW)
        assert not again.changed and again.cooldown == reopened.cooldown  # judged once
    assert cooldowns == [1200, 2000, 2000, 2000]
    # A cap below the configured cooldown never shortens it.
    clock.advance(2000)
    canary = store.take_canary("etl", "run-0", window=WINDOW)
    kept = store.reopen_breaker("etl", canary.canary_token, max_cooldown=60, window=WINDOW)
    assert kept.cooldown == 2000
    with pytest.raises(ValueError, match="max_cooldown"):
        store.reopen_breaker("etl", canary.canary_token, max_cooldown=0, window=WINDOW)


def test_a_released_canary_lets_the_next_caller_take_one_at_once(store, clock):
    open_breaker(store, clock)
    clock.advance(COOLDOWN + 5)
    canary = store.take_canary("etl", "run-0", window=WINDOW)
    assert store.release_canary("etl", "not-the-canary", window=WINDOW).state == "half_open"
    released = store.release_canary("etl", canary.canary_token, window=WINDOW)
    assert (released.state, released.changed, released.opened_at) == ("open", True, START)
    assert released.canary_execution is None
    second = store.take_canary("etl", "run-1", window=WINDOW)
    assert second.changed and second.canary_token != canary.canary_token
    # The first canary's token is worth nothing now.
    assert not store.close_breaker("etl", canary.canary_token, window=WINDOW).changed
    assert store.breaker("etl", window=WINDOW).canary_execution == "run-1"


def test_breakers_open_lists_the_graphs_not_closed_the_longest_open_first(store, clock):
    open_breaker(store, clock, "billing")
    clock.advance(10)
    open_breaker(store, clock, "etl")
    refail(store, "run-0", clock(), graph="quiet")  # re-failed, not open
    clock.advance(COOLDOWN)
    store.take_canary("etl", "run-0", window=WINDOW)  # half-open still counts
    listed = store.breakers_open()
    assert [(b.graph, b.state) for b in listed] == [("billing", "open"), ("etl", "half_open")]
    assert all(b.refailures == () and not b.changed for b in listed)
    assert store.reset_breaker("billing") is True  # an operator closes it by hand
    assert store.reset_breaker("quiet") is False  # it was not open
    assert store.reset_breaker("never-seen") is False
    assert [b.graph for b in store.breakers_open()] == ["etl"]
    assert store.breaker("billing", window=WINDOW) == BreakerState("billing")
    with pytest.raises(ValueError, match="graph"):
        store.reset_breaker("")


def test_an_open_breaker_nobody_came_back_to_is_forgotten_a_window_after_its_next_step(
    store, clock
):
    open_breaker(store, clock, "etl")
    open_breaker(store, clock, "billing")
    clock.advance(COOLDOWN)
    canary = store.take_canary("billing", "run-0", window=WINDOW)
    clock.advance(WINDOW - 0.5)  # etl's canary has been due for almost a window
    assert [b.graph for b in store.breakers_open()] == ["billing", "etl"]  # same age: by name
    clock.advance(0.5)
    assert [b.graph for b in store.breakers_open()] == ["billing"]
    assert store.breaker("etl", window=WINDOW).state == "closed"
    clock.now = canary.canary_judged_at + WINDOW  # nobody judged billing's canary either
    assert store.breakers_open() == []
    assert store.take_canary("billing", "run-1", window=WINDOW).state == "closed"


def test_the_re_failures_a_graph_keeps_are_bounded(store, clock):
    for n in range(REFAILURES_KEPT + 5):
        state = refail(store, f"run-{n}", clock(), threshold=REFAILURES_KEPT)
        clock.advance(0.01)
    assert len(state.refailures) == REFAILURES_KEPT
    assert state.refailures[0].execution == "run-5"  # the oldest went first


# --- pauses -------------------------------------------------------------------------------------


def test_a_pause_is_seen_by_every_instance_until_it_expires_or_is_resumed(make_store, clock):
    first = make_store(clock)
    second = first if make_store.kind == "memory" else make_store(clock)  # memory: one process
    first.pause("nightly-etl", {"by": "alice", "reason": "OBS down"}, clock() + 60)
    first.pause("*", {"by": "bob", "reason": "maintenance"}, clock() + 10)
    seen = second.pauses()
    assert seen["nightly-etl"] == {"by": "alice", "reason": "OBS down", "until": clock() + 60}
    assert seen["*"]["by"] == "bob"
    clock.advance(11)
    assert set(second.pauses()) == {"nightly-etl"}  # the global pause expired by itself
    assert second.resume("*") is False
    assert second.resume("nightly-etl") is True
    assert first.pauses() == {}
    assert first.resume("nightly-etl") is False


def test_a_pause_with_a_bad_argument_fails_before_any_io(store):
    with pytest.raises(ValueError):
        store.pause("", {}, 1.0)
    with pytest.raises(TypeError):
        store.pause("g", "not a dict", 1.0)


# --- the ledger and the last sweep ------------------------------------------------------------


def test_a_ledger_keeps_its_entries_in_the_order_appended_per_execution(store):
    store.ledger_append("g", "e1", [{"n": 1}, {"n": 2}], keep=HOUR, max_entries=50)
    store.ledger_append("g", "e2", [{"n": 9}], keep=HOUR, max_entries=50)
    store.ledger_append("g", "e1", [{"n": 3}], keep=HOUR, max_entries=50)
    assert store.ledger("g", "e1") == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert store.ledger("g", "e2") == [{"n": 9}]
    assert store.ledger("g", "never") == []
    assert store.ledger("other", "e1") == []


def test_a_ledger_holds_at_most_max_entries_the_newest(store):
    for n in range(7):
        store.ledger_append("g", "e", [{"n": n}], keep=HOUR, max_entries=5)
    assert [entry["n"] for entry in store.ledger("g", "e")] == [2, 3, 4, 5, 6]
    store.ledger_append("g", "e", [{"n": 7}, {"n": 8}, {"n": 9}], keep=HOUR, max_entries=5)
    assert [entry["n"] for entry in store.ledger("g", "e")] == [5, 6, 7, 8, 9]


def test_ledger_entries_expire_after_keep_each_by_itself(store, clock):
    store.ledger_append("g", "e", [{"n": 1}], keep=HOUR, max_entries=50)
    clock.advance(HOUR / 2)
    store.ledger_append("g", "e", [{"n": 2}], keep=HOUR, max_entries=50)
    clock.advance(HOUR / 2 + 1)
    assert store.ledger("g", "e") == [{"n": 2}]
    store.ledger_append("g", "e", [{"n": 3}], keep=HOUR, max_entries=50)
    assert store.ledger("g", "e") == [{"n": 2}, {"n": 3}]
    clock.advance(HOUR)
    assert store.ledger("g", "e") == []


def test_ledger_names_with_separators_never_meet(store):
    store.ledger_append("a/b", "c", [{"n": 1}], keep=HOUR, max_entries=50)
    store.ledger_append("a", "b/c", [{"n": 2}], keep=HOUR, max_entries=50)
    assert store.ledger("a/b", "c") == [{"n": 1}]
    assert store.ledger("a", "b/c") == [{"n": 2}]


def test_ledger_arguments_are_checked_before_any_io(store):
    with pytest.raises(ValueError):
        store.ledger_append("", "e", [{}], keep=HOUR, max_entries=50)
    with pytest.raises(ValueError):
        store.ledger_append("g", "e", [{}], keep=0, max_entries=50)
    with pytest.raises(ValueError):
        store.ledger_append("g", "e", [{}], keep=HOUR, max_entries=0)
    with pytest.raises(TypeError):
        store.ledger_append("g", "e", ["not an object"], keep=HOUR, max_entries=50)
    with pytest.raises(ValueError):
        store.ledger("g", "")
    assert store.ledger("g", "e") == []


def test_twenty_threads_appending_to_one_ledger_keep_exactly_the_bound(make_store):
    store = make_store()
    done = iter(range(20))
    lock = threading.Lock()

    def append() -> None:
        with lock:
            n = next(done)
        store.ledger_append("g", "e", [{"n": n}, {"n": n}], keep=HOUR, max_entries=25)

    run_threads(20, append)
    kept = store.ledger("g", "e")
    assert len(kept) == 25
    # An append and its trim are one step: an entry's pair is never split but at the cut.
    counts = {}
    for entry in kept:
        counts[entry["n"]] = counts.get(entry["n"], 0) + 1
    assert sorted(counts.values())[1:] == [2] * (len(counts) - 1)


def test_the_last_sweep_is_the_newest_recorded_and_survives_a_reopen(make_store, clock):
    store = make_store(clock)
    assert store.last_sweep() is None
    store.record_sweep({"at": 1.0, "failuresFound": 3})
    store.record_sweep({"at": 2.0, "failuresFound": 0})
    assert store.last_sweep() == {"at": 2.0, "failuresFound": 0}
    clock.advance(30 * 24 * HOUR)  # a sweep long ago is still the last one
    assert store.last_sweep() == {"at": 2.0, "failuresFound": 0}
    if make_store.kind != "memory":  # the shared backends: another instance reads it
        assert make_store(clock).last_sweep() == {"at": 2.0, "failuresFound": 0}
    with pytest.raises(TypeError):
        store.record_sweep(["not", "an", "object"])


def test_waiting_deferred_lists_every_remembered_failure_due_or_not_soonest_first(store, clock):
    store.remember_deferred("evt-later", {"n": 2}, START + 600, retention=HOUR)
    store.remember_deferred("evt-due", {"n": 1}, START - 1, retention=HOUR)
    store.remember_deferred("evt-latest", {"n": 3}, START + 1200, retention=HOUR)
    assert store.due_deferred(10) == [("evt-due", {"n": 1})]  # only the due one is handed out
    assert store.waiting_deferred(10) == [
        ("evt-due", {"n": 1}),
        ("evt-later", {"n": 2}),
        ("evt-latest", {"n": 3}),
    ]
    assert store.waiting_deferred(2) == [("evt-due", {"n": 1}), ("evt-later", {"n": 2})]
    assert store.waiting_deferred(0) == []
    store.finish("evt-later", "", {"outcome": "restored"}, retention=HOUR)  # not waiting now
    clock.advance(HOUR + 1)  # evt-due's retention after its due time is over
    assert store.waiting_deferred(10) == [("evt-latest", {"n": 3})]


def test_deferred_among_tells_which_keys_are_remembered_with_their_due_time(store, clock):
    failure = {"graph": "g", "execution": "e", "deferral": {"hold": "breaker", "reason": "ü"}}
    store.remember_deferred("evt-later", failure, START + 600, retention=HOUR)
    store.remember_deferred("evt-due", {"n": 1}, START - 1, retention=HOUR)
    store.remember_deferred("evt-done", {"n": 2}, START + 600, retention=HOUR)
    store.finish("evt-done", "", {"outcome": "restored"}, retention=HOUR)  # forgotten
    asked = ["evt-later", "evt-due", "evt-done", "never-deferred", "evt-later"]
    assert store.deferred_among(asked) == {
        "evt-later": (START + 600, failure),
        "evt-due": (START - 1, {"n": 1}),
    }
    assert store.deferred_among([]) == {}
    clock.advance(HOUR)  # evt-due's retention after its due time is over
    assert store.deferred_among(asked) == {"evt-later": (START + 600, failure)}
    with pytest.raises(ValueError, match="key"):
        store.deferred_among(["evt-later", ""])
    with pytest.raises(TypeError):
        store.deferred_among("evt-later")


def test_deferred_among_answers_a_whole_listing_at_once(store, clock):
    keys = [f"evt-{n:05d}" for n in range(1_200)]  # more than one statement's parameters
    for n, key in enumerate(keys[::2]):
        store.remember_deferred(key, {"n": n}, START + n, retention=HOUR)
    found = store.deferred_among(keys)
    assert sorted(found) == keys[::2]
    assert found["evt-00010"] == (START + 5, {"n": 5})


# --- quiet listings -----------------------------------------------------------------------------


def test_a_quiet_mark_is_seen_by_every_instance_until_it_passes(make_store, clock):
    first = make_store(clock)
    second = first if make_store.kind == "memory" else make_store(clock)  # memory: one process
    first.set_quiet_until({"nightly-etl": clock() + 600, "hourly": clock() + 60})
    assert second.quiet_until() == {"nightly-etl": clock() + 600, "hourly": clock() + 60}
    clock.advance(60)  # a mark that has come is over: the graph is listed again
    assert second.quiet_until() == {"nightly-etl": clock() + 540}


def test_a_quiet_mark_replaces_the_graphs_earlier_one_and_a_past_one_forgets_it(store, clock):
    store.set_quiet_until({"a": clock() + 600, "b": clock() + 600})
    store.set_quiet_until({"a": clock() + 30, "b": clock() - 1, "c": clock() + 90})
    assert store.quiet_until() == {"a": clock() + 30, "c": clock() + 90}
    store.set_quiet_until({})  # nothing to mark: nothing changes
    assert store.quiet_until() == {"a": clock() + 30, "c": clock() + 90}


def test_passed_quiet_marks_are_dropped_when_marks_are_written(store, clock):
    store.set_quiet_until({f"graph-{n}": clock() + 10 for n in range(50)})
    clock.advance(20)
    store.set_quiet_until({"fresh": clock() + 10})
    clock.advance(-20)  # had the passed marks been kept, they would show again now
    assert store.quiet_until() == {"fresh": clock() + 30}


def test_a_quiet_mark_with_a_bad_argument_fails_before_any_io(store, clock):
    with pytest.raises(ValueError):
        store.set_quiet_until({"": clock() + 10})
    with pytest.raises(ValueError):
        store.set_quiet_until({"g": float("nan")})
    with pytest.raises(TypeError):
        store.set_quiet_until([("g", clock() + 10)])
    assert store.quiet_until() == {}


# --- an item's end in one step ----------------------------------------------------------------


def _held(store: StateStore, key: str = "event-1") -> tuple[str, str]:
    """A claimed marker and a unit in flight, as an item going to restore holds them."""
    claim = store.claim(key, ttl=60)
    reservation = store.reserve_budget("g/e", 3, HOUR, in_flight=60)
    assert claim.acquired and reservation.reserved
    return claim.token, reservation.token


def _ledger(*entries: dict) -> LedgerBatch:
    return LedgerBatch("g", "e", list(entries), HOUR, 50)


def test_settling_a_restored_item_spends_its_unit_records_its_outcome_and_appends_its_ledger(
    store, clock
):
    claim_token, unit = _held(store)
    store.remember_deferred("event-1", {"n": 1}, clock(), HOUR)
    store.settle_item(
        "event-1",
        claim_token,
        record={"outcome": "restored"},
        retention=HOUR,
        budget=("g/e", unit),
        spent=True,
        ledger=_ledger({"kind": "failure"}, {"kind": "restore"}),
    )
    again = store.claim("event-1", ttl=60)
    assert (again.state, again.record) == ("done", {"outcome": "restored"})
    assert store.budget_used("g/e", HOUR, spent_only=True) == 1
    assert store.ledger("g", "e") == [{"kind": "failure"}, {"kind": "restore"}]
    assert store.due_deferred(10) == []  # a final outcome: no longer due
    clock.advance(HOUR + 1)
    assert store.claim("event-1", ttl=60).acquired  # the outcome is kept for its retention


def test_settling_a_released_item_refunds_its_unit_and_frees_its_marker(store):
    claim_token, unit = _held(store)
    store.settle_item(
        "event-1", claim_token, record=None, retention=HOUR, budget=("g/e", unit), spent=False
    )
    assert store.claim("event-1", ttl=60).acquired
    assert store.budget_used("g/e", HOUR) == 0
    assert store.ledger("g", "e") == []


def test_settling_an_unanswered_restore_spends_its_unit_and_frees_its_marker(store):
    claim_token, unit = _held(store)
    store.settle_item(
        "event-1",
        claim_token,
        record=None,
        retention=HOUR,
        budget=("g/e", unit),
        spent=True,
        ledger=_ledger({"kind": "restore"}),
    )
    assert store.claim("event-1", ttl=60).acquired
    assert store.budget_used("g/e", HOUR, spent_only=True) == 1
    assert store.ledger("g", "e") == [{"kind": "restore"}]


def test_settling_with_another_token_leaves_the_live_marker_and_other_units_alone(store):
    _, unit = _held(store)
    store.settle_item(
        "event-1", "not-ours", record=None, retention=HOUR, budget=("g/e", "not-a-unit")
    )
    assert store.claim("event-1", ttl=60).state == "in_progress"
    assert store.budget_used("g/e", HOUR) == 1
    assert store.budget_used("g/e", HOUR, spent_only=True) == 0  # still in flight
    store.settle_item("event-1", "not-ours", record={"outcome": "skipped"}, retention=HOUR)
    assert store.claim("event-1", ttl=60).record == {"outcome": "skipped"}
    assert store.budget_used("g/e", HOUR) == 1  # no budget named: the unit is untouched
    assert unit


def test_a_settled_items_ledger_keeps_the_bound_and_order_of_ledger_append(store):
    store.ledger_append("g", "e", [{"n": n} for n in range(49)], keep=HOUR, max_entries=50)
    claim_token, unit = _held(store)
    store.settle_item(
        "event-1",
        claim_token,
        record={"outcome": "restored"},
        retention=HOUR,
        budget=("g/e", unit),
        spent=True,
        ledger=_ledger({"n": 49}, {"n": 50}),
    )
    assert [entry["n"] for entry in store.ledger("g", "e")] == list(range(1, 51))


def test_settling_an_item_with_a_bad_argument_fails_before_any_io(store):
    claim_token, unit = _held(store)
    with pytest.raises(TypeError):
        store.settle_item(
            "event-1", claim_token, record=["not", "a", "dict"], retention=HOUR,
            budget=("g/e", unit), spent=True,
        )  # fmt: skip
    with pytest.raises(ValueError):
        store.settle_item("event-1", claim_token, record={}, retention=0, budget=("g/e", unit))
    with pytest.raises(ValueError):
        store.settle_item(
            "event-1", claim_token, record=None, retention=HOUR, budget=("g/e", unit),
            ledger=_ledger({"n": 1})._replace(max_entries=0),
        )  # fmt: skip
    with pytest.raises(ValueError):
        store.settle_item("", claim_token, record=None, retention=HOUR)
    # Nothing of any part was done: the marker is held, the unit still in flight.
    assert store.claim("event-1", ttl=60).state == "in_progress"
    assert store.budget_used("g/e", HOUR) == 1
    assert store.budget_used("g/e", HOUR, spent_only=True) == 0
    assert store.ledger("g", "e") == []
