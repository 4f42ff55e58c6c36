"""The Redis backend against a real redis-server: failures, passwords, prefixes, stalls.

Failures use real causes - a killed server, one stopped with SIGSTOP, one that refuses
writes - never a mocked client.
"""

from __future__ import annotations

import signal
import time

import pytest

from handler.store import DEFAULT_REDIS_PREFIX, RedisStore, StoreUnavailable, open_store
from tests.store.conftest import HOUR

pytest_plugins = ["tests.redis_server"]  # redis_url, redis_server_factory


def test_check_writable_fails_when_redis_refuses_writes(redis_server_factory):
    import redis

    server = redis_server_factory()
    store = open_store(server.url)
    store.check_writable()
    raw = redis.Redis.from_url(server.url, decode_responses=True)
    assert raw.keys("*") == []  # the probe left nothing
    raw.config_set("min-replicas-to-write", 1)  # no replica: Redis refuses every write
    try:
        store.ping()
        with pytest.raises(StoreUnavailable, match="NOREPLICAS"):
            store.check_writable()
    finally:
        raw.config_set("min-replicas-to-write", 0)
    store.check_writable()
    raw.close()
    store.close()


def test_redis_down_at_start_fails_fast_without_the_password():
    from tests.redis_server import free_port  # imported by pytest_plugins, assert-rewritten

    url = f"redis://:pw-hunter2@127.0.0.1:{free_port()}/0"
    store = open_store(url)  # lazy: opening succeeds, using does not
    for call in (store.ping, lambda: store.claim("event", ttl=60)):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as info:
            call()
        assert time.monotonic() - started < 3
        assert "hunter2" not in str(info.value) and "***" in str(info.value)
        assert info.value.__cause__ is None and info.value.__suppress_context__
    assert "hunter2" not in repr(store) and "hunter2" not in store.describe
    store.close()


def test_redis_killed_mid_run_is_unavailable_then_recovers(redis_server_factory):
    server = redis_server_factory()
    store = open_store(server.url)
    assert store.claim("before", ttl=60).acquired
    server.kill()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.claim("during", ttl=60)
    with pytest.raises(StoreUnavailable):
        store.reserve_budget("exec", 3, HOUR, in_flight=60)
    assert time.monotonic() - started < 5
    server.start()  # same port, empty data: the store reconnects by itself
    assert store.claim("after", ttl=60).acquired
    store.close()


def test_redis_that_stops_answering_is_unavailable_within_the_socket_timeout(
    redis_server_factory,
):
    server = redis_server_factory()
    store = open_store(server.url + "?socket_timeout=0.3")  # URL options override defaults
    store.ping()
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="Timeout"):
            store.claim("event", ttl=60)
        assert time.monotonic() - started < 3  # two attempts of 0.3 s, not the 2 s default
    finally:
        server.process.send_signal(signal.SIGCONT)
    store.close()


def test_redis_password_never_shows(redis_server_factory):
    server = redis_server_factory(password="s3cret-pw-123")
    good = open_store(server.url)
    good.ping()
    assert good.claim("event", ttl=60).acquired
    for text in (good.describe, repr(good)):
        assert "s3cret" not in text and ":***@" in text

    bad = open_store(server.url.replace("s3cret-pw-123", "wrong-pw-456"))
    with pytest.raises(StoreUnavailable) as info:
        bad.claim("event", ttl=60)
    assert "wrong-pw" not in str(info.value) and "s3cret" not in str(info.value)

    with pytest.raises(ValueError) as info:
        open_store("redis://:s3cret-pw-123@127.0.0.1:notaport/0")
    assert "s3cret" not in str(info.value)
    good.close()
    bad.close()


def test_redis_keys_live_under_the_prefix_and_prefixes_isolate(redis_url, clock):
    import redis

    default = open_store(redis_url, clock=clock)
    other = open_store(redis_url, clock=clock, key_prefix="other*[app]:")
    assert default.claim("event", ttl=60).acquired
    assert other.claim("event", ttl=60).acquired  # a separate namespace
    default.reserve_budget("exec", 3, HOUR, in_flight=60)

    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    assert sorted(raw.keys("*")) == [
        f"{DEFAULT_REDIS_PREFIX}budget:exec",
        f"{DEFAULT_REDIS_PREFIX}dedupe:event",
        "other*[app]:dedupe:event",
    ]
    # Redis' own expiry only collects garbage, a grace period after the logical expiry.
    assert 60_000 < raw.pttl(f"{DEFAULT_REDIS_PREFIX}dedupe:event") <= 120_000
    assert [item["key"] for item in other.recent()["dedupe"]] == ["event"]
    assert other.recent()["budget"] == []
    raw.close()
    default.close()
    other.close()


def test_redis_scripts_are_idempotent_for_a_retried_call(redis_url, monkeypatch):
    """The client retries once after a lost reply; the same token must not count twice."""
    store = open_store(redis_url)
    assert isinstance(store, RedisStore)
    monkeypatch.setattr("handler.store.redis.new_token", lambda: "same-token")
    assert store.claim("event", ttl=60).acquired
    assert store.claim("event", ttl=60).acquired  # our own marker, seen by the retry
    assert store.reserve_budget("exec", 3, HOUR, in_flight=60).token == "same-token"
    assert store.reserve_budget("exec", 3, HOUR, in_flight=60).token == "same-token"
    assert store.budget_used("exec", HOUR) == 1
    store.close()


def _evalsha_calls(url: str) -> int:
    import redis

    with redis.Redis.from_url(url, decode_responses=True) as raw:
        return int(raw.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def test_a_redis_stall_leaves_no_claim_behind_for_a_redelivery(redis_server_factory):
    """SIGSTOP, deliver, SIGCONT: the claim the stalled server runs late must take nothing."""
    server = redis_server_factory()
    url = server.url + "?socket_timeout=0.3"
    instance, other_instance = open_store(url), open_store(url)
    assert instance.claim("warm-up", ttl=60).acquired  # scripts loaded: a stall sends EVALSHA
    other_instance.ping()
    assert server.process is not None
    ran_before = _evalsha_calls(server.url)
    server.process.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(StoreUnavailable, match="Timeout"):
            instance.claim("event", ttl=300)
    finally:
        server.process.send_signal(signal.SIGCONT)
    # The server now runs what it was sent while stopped; wait (bounded) until it has.
    give_up = time.monotonic() + 5
    while _evalsha_calls(server.url) == ran_before:
        assert time.monotonic() < give_up, "the stalled claim never ran"
        time.sleep(0.02)

    started = time.monotonic()
    redelivery = other_instance.claim("event", ttl=300)  # another instance, at once
    assert redelivery.acquired, redelivery
    assert time.monotonic() - started < 2
    # The instance that gave up works again, and its forgotten token cannot drop the marker.
    assert instance.claim("event", ttl=300).state == "in_progress"
    assert instance.claim("after", ttl=300).acquired
    instance.close()
    other_instance.close()


def test_a_redis_stall_spends_no_budget_unit(redis_server_factory):
    server = redis_server_factory()
    store = open_store(server.url + "?socket_timeout=0.3")
    assert store.reserve_budget("warm-up", 1, HOUR, in_flight=60).reserved
    assert server.process is not None
    ran_before = _evalsha_calls(server.url)
    server.process.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(StoreUnavailable):
            store.reserve_budget("exec", 1, HOUR, in_flight=60)
    finally:
        server.process.send_signal(signal.SIGCONT)
    give_up = time.monotonic() + 5
    while _evalsha_calls(server.url) == ran_before:
        assert time.monotonic() < give_up, "the stalled reservation never ran"
        time.sleep(0.02)
    assert store.budget_used("exec", HOUR) == 0
    assert store.reserve_budget("exec", 1, HOUR, in_flight=60).reserved
    store.close()


def test_a_claim_whose_reply_was_lost_is_released_at_the_next_use(redis_url):
    """The script ran, the answer never came back: the marker is ours to drop."""
    import redis

    store, other_instance = open_store(redis_url), open_store(redis_url)
    assert isinstance(store, RedisStore)
    real_claim = store._claim

    def reply_lost(**kwargs):
        real_claim(**kwargs)
        raise redis.exceptions.ConnectionError("connection reset after the script ran")

    store._claim = reply_lost
    with pytest.raises(StoreUnavailable):
        store.claim("event", ttl=300)
    store._claim = real_claim
    assert other_instance.claim("event", ttl=300).state == "in_progress"  # it did run
    store.ping()  # any next use undoes it
    assert other_instance.claim("event", ttl=300).acquired
    store.close()
    other_instance.close()


def test_a_redis_clock_mapping_that_drifted_is_read_again(redis_url):
    store = open_store(redis_url)
    assert isinstance(store, RedisStore)
    assert store.claim("first", ttl=60).acquired  # maps Redis' clock
    store._redis_minus_monotonic -= 30  # as if Redis' clock jumped 30 s ahead since
    assert store.claim("second", ttl=60).acquired
    assert store.reserve_budget("exec", 3, HOUR, in_flight=60).reserved
    store.close()


def test_a_reservation_an_earlier_version_wrote_still_counts(redis_url, clock):
    """Before reservations carried their own expiry, a member was the bare token: after an
    upgrade it still counts within the window, and a refund still finds it."""
    import redis

    store = open_store(redis_url, clock=clock)
    with redis.Redis.from_url(redis_url, decode_responses=True) as raw:
        raw.zadd(f"{DEFAULT_REDIS_PREFIX}budget:exec", {"old-token": clock()})
    assert store.budget_used("exec", HOUR) == 1
    assert store.reserve_budget("exec", 1, HOUR, in_flight=60).state == "spent"
    store.refund_budget("exec", "old-token")
    assert store.reserve_budget("exec", 1, HOUR, in_flight=60).reserved
    store.close()


def test_redis_outage_scripts_are_idempotent_for_a_retried_call(redis_url, monkeypatch, clock):
    """A retry after a lost reply carries the same token or call id: it takes no second rate
    slot, and it is told it made the transition the lost attempt made (so the event that
    transition logs is not lost)."""
    store = open_store(redis_url, clock=clock)
    assert isinstance(store, RedisStore)
    monkeypatch.setattr("handler.store.redis.new_token", lambda: "same-token")
    assert store.take_rate_slot("restore", 3, 60).granted
    assert store.take_rate_slot("restore", 3, 60).granted
    assert store.rate_used("restore", 60) == 1
    for n in range(2):
        store.record_refailure("etl", f"run-{n}", clock(), window=900, threshold=2, cooldown=60)
    retried = store.record_refailure("etl", "run-1", clock(), window=900, threshold=2, cooldown=60)
    assert retried.state == "open" and retried.changed  # the same call id opened it
    clock.advance(60)
    assert store.take_canary("etl", "run-0", window=900).changed
    assert store.take_canary("etl", "run-0", window=900).changed
    assert store.close_breaker("etl", "same-token", window=900).changed
    assert store.close_breaker("etl", "same-token", window=900).changed
    store.close()


def test_a_redis_stall_takes_no_rate_slot(redis_server_factory):
    server = redis_server_factory()
    store = open_store(server.url + "?socket_timeout=0.3")
    assert store.take_rate_slot("warm-up", 1, HOUR).granted
    assert server.process is not None
    ran_before = _evalsha_calls(server.url)
    server.process.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(StoreUnavailable):
            store.take_rate_slot("restore", 1, HOUR)
    finally:
        server.process.send_signal(signal.SIGCONT)
    give_up = time.monotonic() + 5
    while _evalsha_calls(server.url) == ran_before:
        assert time.monotonic() < give_up, "the stalled slot never ran"
        time.sleep(0.02)
    assert store.rate_used("restore", HOUR) == 0
    assert store.take_rate_slot("restore", 1, HOUR).granted
    store.close()


def test_a_canary_whose_reply_was_lost_is_given_back_at_the_next_use(redis_url, clock):
    """The script ran, the answer never came back: the canary nobody will restore is released,
    so another instance may take one."""
    import redis

    store, other_instance = open_store(redis_url, clock=clock), open_store(redis_url, clock=clock)
    assert isinstance(store, RedisStore)
    for n in range(2):
        store.record_refailure("etl", f"run-{n}", clock(), window=900, threshold=2, cooldown=60)
    clock.advance(60)
    real_take = store._take_canary

    def reply_lost(**kwargs):
        real_take(**kwargs)
        raise redis.exceptions.ConnectionError("connection reset after the script ran")

    store._take_canary = reply_lost
    with pytest.raises(StoreUnavailable):
        store.take_canary("etl", "run-0", window=900)
    store._take_canary = real_take
    assert other_instance.breaker("etl", window=900).state == "half_open"  # it did run
    store.ping()  # any next use undoes it
    assert other_instance.take_canary("etl", "run-1", window=900).changed
    store.close()
    other_instance.close()


def test_redis_rate_and_breaker_keys_live_under_the_prefix_and_expire(redis_url, clock):
    import redis

    store = open_store(redis_url, clock=clock)
    store.take_rate_slot("restore", 5, 60)
    for n in range(2):
        store.record_refailure("etl", f"run-{n}", clock(), window=900, threshold=2, cooldown=600)
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    prefix = DEFAULT_REDIS_PREFIX
    assert sorted(raw.keys("*")) == [
        f"{prefix}breaker-refailures:etl",
        f"{prefix}breaker:etl",
        f"{prefix}breakers-open",
        f"{prefix}rate:restore",
    ]
    # Each key expires a grace period after the last thing in it stops mattering.
    assert 60_000 < raw.pttl(f"{prefix}rate:restore") <= 120_000
    assert 900_000 < raw.pttl(f"{prefix}breaker-refailures:etl") <= 960_000
    open_for = (600 + 900) * 1000  # until a window after the canary is due
    assert open_for < raw.pttl(f"{prefix}breaker:etl") <= open_for + 60_000
    assert open_for < raw.pttl(f"{prefix}breakers-open") <= open_for + 60_000
    raw.close()
    store.close()
