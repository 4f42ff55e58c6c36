"""The state store's contract, run against every backend: memory, SQLite and a real Redis.

Time-dependent behaviour (marker expiry, retention, the budget's sliding window) uses an
injected clock; concurrency uses real threads and, for SQLite, real processes; failures use
real causes - a killed or stopped Redis, a SQLite file locked by another connection or
unwritable by the (unprivileged) user.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from handler.store import (
    DEFAULT_REDIS_PREFIX,
    Claim,
    RedisStore,
    StateStore,
    StoreUnavailable,
    open_store,
    redact_url,
)

pytest_plugins = ["tests.redis_server"]  # redis_url, redis_server_factory

BACKENDS = ["memory", "sqlite", "redis"]
START = 1_700_000_000.0
HOUR = 3600.0


class FakeClock:
    """A wall clock that only moves when told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS)
def make_store(request, tmp_path):
    """Open stores of one backend; SQLite and Redis stores made here share their data."""
    stores: list[StateStore] = []
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state' / 'store.db'}"
    else:
        url = request.getfixturevalue("redis_url")

    def factory(clock: Callable[[], float] = time.time) -> StateStore:
        store = open_store(url, clock=clock)
        stores.append(store)
        return store

    factory.kind = request.param
    yield factory
    for store in stores:
        store.close()


@pytest.fixture
def store(make_store, clock) -> StateStore:
    return make_store(clock)


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
        store.reserve_budget("subject", 3, window=-1)
    # Nothing was written by the failed calls.
    assert store.claim("event", ttl=10).acquired


def test_sixteen_threads_claiming_one_key_yield_exactly_one_holder(make_store):
    store = make_store()
    claims = run_threads(16, lambda: store.claim("contended", ttl=60))
    assert sorted(claim.state for claim in claims) == ["acquired"] + ["in_progress"] * 15


# --- budget -----------------------------------------------------------------------------------


def test_budget_stops_at_the_limit_slides_with_the_window_and_refunds(store, clock):
    window = 10 * HOUR
    first = store.reserve_budget("exec-1", limit=3, window=window)
    clock.advance(HOUR)
    second = store.reserve_budget("exec-1", limit=3, window=window)
    third = store.reserve_budget("exec-1", limit=3, window=window)
    assert None not in (first, second, third) and len({first, second, third}) == 3
    assert store.reserve_budget("exec-1", limit=3, window=window) is None
    assert store.budget_used("exec-1", window) == 3
    assert store.reserve_budget("exec-2", limit=3, window=window) is not None  # per subject

    store.refund_budget("exec-1", second)
    assert store.budget_used("exec-1", window) == 2
    fourth = store.reserve_budget("exec-1", limit=3, window=window)
    assert fourth is not None
    assert store.reserve_budget("exec-1", limit=3, window=window) is None

    # The window slides: the first reservation (made an hour before the others) ages out first.
    clock.advance(window - HOUR - 1)
    assert store.budget_used("exec-1", window) == 3
    clock.advance(1.5)
    assert store.budget_used("exec-1", window) == 2
    assert store.reserve_budget("exec-1", limit=3, window=window) is not None
    assert store.reserve_budget("exec-1", limit=3, window=window) is None
    # Refunding an unknown token is harmless.
    store.refund_budget("exec-1", "unknown")
    store.refund_budget("never-seen", "unknown")


def test_a_limit_below_one_never_reserves(store):
    assert store.reserve_budget("exec", limit=0, window=60) is None
    assert store.budget_used("exec", 60) == 0


def test_twenty_threads_reserving_with_limit_three_get_exactly_three(make_store):
    store = make_store()
    tokens = run_threads(20, lambda: store.reserve_budget("exec", limit=3, window=HOUR))
    granted = [token for token in tokens if token is not None]
    assert len(granted) == 3 and len(set(granted)) == 3
    assert store.budget_used("exec", HOUR) == 3


# --- operator view ----------------------------------------------------------------------------


def test_recent_lists_live_entries_newest_first(store, clock):
    done = store.claim("old", ttl=60)
    store.finish("old", done.token, {"status": "restored"}, retention=HOUR)
    clock.advance(1)
    store.claim("new", ttl=60)
    clock.advance(1)
    store.claim("gone", ttl=1)
    store.reserve_budget("exec-a", limit=5, window=HOUR)
    clock.advance(1)
    store.reserve_budget("exec-b", limit=5, window=HOUR)
    store.reserve_budget("exec-b", limit=5, window=HOUR)
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
        assert store.reserve_budget("graph/exec-1", limit=3, window=HOUR) is not None
    store.reserve_budget("graph/exec-2", limit=3, window=HOUR)
    assert store.reserve_budget("graph/exec-1", limit=3, window=HOUR) is None

    assert store.reset_budget("graph/exec-1") == 3
    assert store.budget_used("graph/exec-1", HOUR) == 0
    assert store.budget_used("graph/exec-2", HOUR) == 1  # another execution is untouched
    assert store.reserve_budget("graph/exec-1", limit=3, window=HOUR) is not None
    assert store.reset_budget("graph/never-seen") == 0
    with pytest.raises(ValueError, match="subject"):
        store.reset_budget("")


def test_check_writable_writes_nothing(store):
    for _ in range(3):
        store.check_writable()
    assert store.recent() == {"dedupe": [], "budget": []}
    assert store.claim("event", ttl=60).acquired


def test_check_writable_fails_on_a_read_only_sqlite_store(tmp_path):
    path = tmp_path / "state.db"
    open_store(f"sqlite:///{path}").close()
    reader = open_store(f"sqlite:///{path}?mode=ro")
    reader.ping()  # it answers ...
    with pytest.raises(StoreUnavailable, match="readonly"):
        reader.check_writable()  # ... but cannot be written
    reader.close()


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


# --- URLs -------------------------------------------------------------------------------------


def test_unknown_schemes_are_rejected_by_name_without_echoing_the_url():
    with pytest.raises(ValueError, match="'postgres'") as info:
        open_store("postgres://user:hunter2-secret@db/state")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ValueError, match="no scheme"):
        open_store("/tmp/state.db")
    with pytest.raises(ValueError, match="memory"):
        open_store("memory://somewhere")


def test_sqlite_urls_follow_the_sqlalchemy_convention(tmp_path, monkeypatch):
    absolute = tmp_path / "abs" / "state.db"
    store = open_store(f"sqlite:///{absolute}")  # -> sqlite:////tmp/...: four slashes
    assert absolute.exists()
    assert store.describe == f"sqlite:///{absolute}"
    store.close()

    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///rel/state.db")
    assert (tmp_path / "rel" / "state.db").exists()
    assert store.describe == f"sqlite:///{tmp_path / 'rel' / 'state.db'}"
    store.close()

    for bad in ("sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite://host/x.db"):
        with pytest.raises(ValueError):
            open_store(bad)
    with pytest.raises(ValueError, match="'journal'"):
        open_store(f"sqlite:///{absolute}?journal=off")
    with pytest.raises(ValueError, match="busy_timeout"):
        open_store(f"sqlite:///{absolute}?busy_timeout=soon")


def test_open_store_validates_the_whole_url_without_importing_redis():
    import subprocess

    probe = (
        "import sys\n"
        "from handler.store import validate_state_url\n"
        "for url in ('redis://127.0.0.1:notaport/0', 'redis://h/0?bogus=1'):\n"
        "    try:\n"
        "        validate_state_url(url)\n"
        "    except ValueError as exc:\n"
        "        print(exc)\n"
        "validate_state_url('rediss://:pw@h:6380/1?socket_timeout=0.5')\n"
        "print('redis' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True
    )
    lines = done.stdout.splitlines()
    assert "port" in lines[0] and "'bogus'" in lines[1] and lines[2] == "False"
    with pytest.raises(ValueError, match="port"):
        open_store("redis://127.0.0.1:99999/0")
    with pytest.raises(ValueError, match="'busy'"):
        open_store("sqlite:////tmp/never-created.db?busy=1")
    assert not Path("/tmp/never-created.db").exists()


def test_redact_url_masks_passwords_and_drops_the_query():
    assert redact_url("redis://:p%40ss@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact_url("rediss://app:secret@[::1]:6380/2") == "rediss://app:***@[::1]:6380/2"
    assert redact_url("redis://cache/0?password=secret") == "redis://cache/0"
    assert redact_url("redis://user@cache") == "redis://user@cache"


# --- SQLite: processes and failures -----------------------------------------------------------


def _claim_in_process(url: str, barrier, results) -> None:
    try:
        with open_store(url) as store:
            barrier.wait(timeout=20)
            results.put(store.claim("contended", ttl=60).state)
    except BaseException as exc:  # reported, so the parent never waits for a dead child
        results.put(f"error: {exc!r}")


def _reserve_in_process(url: str, barrier, results) -> None:
    try:
        with open_store(url) as store:
            barrier.wait(timeout=20)
            results.put(store.reserve_budget("exec", limit=3, window=HOUR))
    except BaseException as exc:
        results.put(f"error: {exc!r}")


def run_processes(count: int, target, url: str) -> list[object]:
    """Run ``target`` in ``count`` forked processes released together; collect answers."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(count)
    results = context.Queue()
    processes = [context.Process(target=target, args=(url, barrier, results)) for _ in range(count)]
    for process in processes:
        process.start()
    answers = [results.get(timeout=30) for _ in processes]
    for process in processes:
        process.join(timeout=10)
        assert process.exitcode == 0
    return answers


@pytest.mark.skipif(sys.platform != "linux", reason="uses fork")
def test_sqlite_processes_claiming_one_key_yield_exactly_one_holder(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    open_store(url).close()  # the parent's own store must not leak into the children
    states = run_processes(8, _claim_in_process, url)
    assert sorted(states) == ["acquired"] + ["in_progress"] * 7


@pytest.mark.skipif(sys.platform != "linux", reason="uses fork")
def test_sqlite_processes_reserving_with_limit_three_get_exactly_three(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh' / 'shared.db'}"  # created by racing children
    tokens = run_processes(8, _reserve_in_process, url)
    assert not [token for token in tokens if str(token).startswith("error")], tokens
    assert len([token for token in tokens if token is not None]) == 3
    with open_store(url) as store:
        assert store.budget_used("exec", HOUR) == 3


def test_sqlite_store_survives_fork_with_its_own_connections(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'fork.db'}")
    store.claim("before-fork", ttl=60)  # the parent's thread now holds a connection
    context = multiprocessing.get_context("fork")
    results = context.Queue()

    def child() -> None:
        results.put(store.claim("in-child", ttl=60).state)

    process = context.Process(target=child)
    process.start()
    assert results.get(timeout=20) == "acquired"
    process.join(timeout=10)
    assert process.exitcode == 0
    assert store.claim("in-child", ttl=60).state == "in_progress"
    store.close()


def test_sqlite_open_read_only_rejects_every_write(tmp_path):
    path = tmp_path / "state.db"
    writer = open_store(f"sqlite:///{path}")
    claim = writer.claim("event", ttl=60)
    writer.finish("event", claim.token, {"status": "restored"}, retention=HOUR)
    writer.close()

    reader = open_store(f"sqlite:///{path}?mode=ro")
    assert reader.describe.endswith("?mode=ro")
    assert reader.recent()["dedupe"][0]["record"] == {"status": "restored"}
    reader.ping()
    for write in (
        lambda: reader.claim("other", ttl=60),
        lambda: reader.finish("other", "t", {}, retention=60),
        lambda: reader.reserve_budget("exec", 3, HOUR),
    ):
        with pytest.raises(StoreUnavailable, match="readonly"):
            write()
    reader.close()
    with pytest.raises(StoreUnavailable):
        open_store(f"sqlite:///{tmp_path / 'missing.db'}?mode=ro")


def _claim_unprivileged(url: str, results) -> None:
    """Drop root (which chmod does not stop) to ``nobody``, then try to write."""
    try:
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        open_store(url).claim("event", ttl=60)
    except StoreUnavailable as exc:
        results.put(f"unavailable: {exc}")
    except BaseException as exc:
        results.put(f"unexpected {type(exc).__name__}: {exc}")
    else:
        results.put("written")


@pytest.mark.skipif(sys.platform != "linux", reason="uses fork")
def test_sqlite_file_without_write_permission_is_unavailable():
    workdir = Path(tempfile.mkdtemp(prefix="store-ro-"))  # not under pytest's 0700 tmp
    try:
        workdir.chmod(0o755)
        path = workdir / "state.db"
        open_store(f"sqlite:///{path}").close()
        path.chmod(0o444)
        workdir.chmod(0o555)
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        process = context.Process(target=_claim_unprivileged, args=(f"sqlite:///{path}", results))
        process.start()
        answer = results.get(timeout=20)
        process.join(timeout=10)
        assert answer.startswith("unavailable:"), answer
    finally:
        workdir.chmod(0o755)
        shutil.rmtree(workdir)


def _write_while_read_only_then_writable(url: str, made_writable, results) -> None:
    """As an unprivileged user: write to a read-only store, then again once it is writable."""
    try:
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        store = open_store(url)  # SQLite falls back to a read-only connection here
        for name, write in (
            ("claim", lambda: store.claim("event", ttl=60)),
            ("reserve", lambda: store.reserve_budget("exec", 3, HOUR)),
            ("finish", lambda: store.finish("event", "t", {"ok": True}, retention=60)),
        ):
            try:
                write()
                results.put(f"{name} written while read-only")
            except StoreUnavailable:
                results.put(f"{name} unavailable")
        results.put("waiting")
        made_writable.wait(timeout=20)
        # The same store object, the same thread: no restart, no new store.
        for name, write in (
            ("claim", lambda: store.claim("event", ttl=60).state),
            ("reserve", lambda: store.reserve_budget("exec", 3, HOUR) is not None),
        ):
            try:
                results.put(f"{name} -> {write()}")
            except StoreUnavailable as exc:
                results.put(f"{name} still unavailable: {exc}")
        store.close()
    except BaseException as exc:
        results.put(f"unexpected {type(exc).__name__}: {exc}")
    results.put("end")


@pytest.mark.skipif(sys.platform != "linux", reason="uses fork")
def test_sqlite_recovers_by_itself_once_a_read_only_file_is_writable_again():
    workdir = Path(tempfile.mkdtemp(prefix="store-recover-"))
    try:
        workdir.chmod(0o777)
        path = workdir / "state.db"
        open_store(f"sqlite:///{path}").close()
        path.chmod(0o444)
        context = multiprocessing.get_context("fork")
        made_writable, results = context.Event(), context.Queue()
        process = context.Process(
            target=_write_while_read_only_then_writable,
            args=(f"sqlite:///{path}", made_writable, results),
        )
        process.start()
        answers = []
        while not answers or answers[-1] != "end":
            answers.append(results.get(timeout=20))
            if answers[-1] == "waiting":
                for file in workdir.iterdir():  # state.db and the -wal/-shm made read-only too
                    file.chmod(0o666)
                made_writable.set()
        process.join(timeout=10)
        assert answers == [
            "claim unavailable",
            "reserve unavailable",
            "finish unavailable",
            "waiting",
            "claim -> acquired",
            "reserve -> True",
            "end",
        ]
    finally:
        workdir.chmod(0o755)
        shutil.rmtree(workdir)


def test_sqlite_path_that_cannot_be_created_is_unavailable(tmp_path):
    blocker = tmp_path / "a-regular-file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailable, match="a-regular-file"):
        open_store(f"sqlite:///{blocker / 'state.db'}")


def test_sqlite_locked_beyond_the_busy_timeout_is_unavailable(tmp_path):
    path = tmp_path / "state.db"
    store = open_store(f"sqlite:///{path}?busy_timeout=0.2")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        for write in (
            lambda: store.claim("event", ttl=60),
            lambda: store.reserve_budget("exec", 3, HOUR),
            lambda: store.finish("event", "t", {}, retention=60),
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="locked"):
                write()
            assert 0.15 < time.monotonic() - started < 3
        with pytest.raises(StoreUnavailable, match="locked"):
            open_store(f"sqlite:///{path}?busy_timeout=0.1")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.claim("event", ttl=60).acquired  # usable again once the lock is gone
    store.close()


def test_sqlite_waits_out_a_lock_shorter_than_the_busy_timeout(tmp_path):
    path = tmp_path / "state.db"
    store = open_store(f"sqlite:///{path}?busy_timeout=5")
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    timer = threading.Timer(0.3, lambda: blocker.execute("ROLLBACK"))
    timer.start()
    try:
        assert store.claim("event", ttl=60).acquired
    finally:
        timer.join()
        blocker.close()
        store.close()


# --- Redis: failures, passwords, prefixes -----------------------------------------------------


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
        store.reserve_budget("exec", 3, HOUR)
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
    default.reserve_budget("exec", 3, HOUR)

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
    assert store.reserve_budget("exec", 3, HOUR) == "same-token"
    assert store.reserve_budget("exec", 3, HOUR) == "same-token"
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
    assert store.reserve_budget("warm-up", 1, HOUR) is not None
    assert server.process is not None
    ran_before = _evalsha_calls(server.url)
    server.process.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(StoreUnavailable):
            store.reserve_budget("exec", 1, HOUR)
    finally:
        server.process.send_signal(signal.SIGCONT)
    give_up = time.monotonic() + 5
    while _evalsha_calls(server.url) == ran_before:
        assert time.monotonic() < give_up, "the stalled reservation never ran"
        time.sleep(0.02)
    assert store.budget_used("exec", HOUR) == 0
    assert store.reserve_budget("exec", 1, HOUR) is not None
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
    assert store.reserve_budget("exec", 3, HOUR) is not None
    store.close()
