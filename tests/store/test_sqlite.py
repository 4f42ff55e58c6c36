"""The SQLite backend: real processes sharing one file, and real failures.

A SQLite file locked by another connection, read-only, or unwritable by the (unprivileged)
user; processes are forked, so these run on Linux.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from handler.store import StoreUnavailable, open_store
from handler.store.sqlite import PURGE_BATCH, PURGE_INTERVAL, SQLiteStore
from tests.store.conftest import HOUR, FakeClock


def test_check_writable_fails_on_a_read_only_sqlite_store(tmp_path):
    path = tmp_path / "state.db"
    open_store(f"sqlite:///{path}").close()
    reader = open_store(f"sqlite:///{path}?mode=ro")
    reader.ping()  # it answers ...
    with pytest.raises(StoreUnavailable, match="readonly"):
        reader.check_writable()  # ... but cannot be written
    reader.close()


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
            results.put(store.reserve_budget("exec", 3, HOUR, in_flight=60).state)
    except BaseException as exc:
        results.put(f"error: {exc!r}")


def _take_slot_in_process(url: str, barrier, results) -> None:
    try:
        with open_store(url) as store:
            barrier.wait(timeout=20)
            results.put("granted" if store.take_rate_slot("restore", 3, HOUR).granted else "full")
    except BaseException as exc:
        results.put(f"error: {exc!r}")


def _take_canary_in_process(url: str, barrier, results) -> None:
    try:
        with open_store(url) as store:
            barrier.wait(timeout=20)
            results.put("canary" if store.take_canary("etl", "run-0", window=HOUR).changed else "")
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
    assert sorted(tokens) == ["busy"] * 5 + ["reserved"] * 3
    with open_store(url) as store:
        assert store.budget_used("exec", HOUR) == 3


@pytest.mark.skipif(sys.platform != "linux", reason="uses fork")
def test_sqlite_processes_taking_rate_slots_with_limit_three_get_exactly_three(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    answers = run_processes(8, _take_slot_in_process, url)
    assert sorted(answers) == ["full"] * 5 + ["granted"] * 3
    with open_store(url) as store:
        assert store.rate_used("restore", HOUR) == 3


@pytest.mark.skipif(sys.platform != "linux", reason="uses fork")
def test_sqlite_processes_taking_one_canary_yield_exactly_one(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with open_store(url) as store:
        for n in range(2):
            store.record_refailure(
                "etl", f"run-{n}", time.time() - 10, window=HOUR, threshold=2, cooldown=0.001
            )
    time.sleep(0.01)  # the cooldown is over before any child asks
    answers = run_processes(8, _take_canary_in_process, url)
    assert sorted(answers) == [""] * 7 + ["canary"]


def test_a_file_from_before_outage_mode_gets_its_tables_at_open(tmp_path):
    path = tmp_path / "old.db"
    with open_store(f"sqlite:///{path}") as store:
        assert store.claim("event", ttl=60).acquired
    with sqlite3.connect(path) as db:  # as an earlier version left it
        for table in ("rate_slots", "breakers", "breaker_refailures"):
            db.execute(f"DROP TABLE {table}")
    with open_store(f"sqlite:///{path}") as store:
        assert store.claim("event", ttl=60).state == "in_progress"  # nothing else was lost
        assert store.take_rate_slot("restore", 1, 60).granted
        assert store.breaker("etl", window=60).state == "closed"


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
        lambda: reader.reserve_budget("exec", 3, HOUR, in_flight=60),
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
            ("reserve", lambda: store.reserve_budget("exec", 3, HOUR, in_flight=60)),
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
            ("reserve", lambda: store.reserve_budget("exec", 3, HOUR, in_flight=60).reserved),
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
            lambda: store.reserve_budget("exec", 3, HOUR, in_flight=60),
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


def _rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_expired_rows_are_purged_by_the_first_write_after_the_purge_interval(tmp_path):
    clock = FakeClock()
    path = tmp_path / "state.db"
    store = SQLiteStore(str(path), clock=clock)
    for index in range(5):  # the first write purges (nothing): the next is due an interval on
        store.claim(f"event-{index}", ttl=PURGE_INTERVAL / 4)
    clock.advance(PURGE_INTERVAL / 2)  # all five expired, within the interval
    store.claim("fresh-1", ttl=60)
    assert _rows(path, "dedupe") == 6  # expired rows wait ...
    assert store.claim("event-0", ttl=60).acquired  # ... and never count meanwhile
    clock.advance(PURGE_INTERVAL)
    store.claim("fresh-2", ttl=60)
    assert _rows(path, "dedupe") == 3  # event-0 again, fresh-1, fresh-2
    store.close()


def test_a_backlog_of_expired_rows_is_purged_on_every_write_until_it_is_gone(tmp_path):
    clock = FakeClock()
    path = tmp_path / "state.db"
    store = SQLiteStore(str(path), clock=clock)
    backlog = 3 * PURGE_BATCH + 5
    for index in range(backlog):
        store.first_seen(f"event-{index}", retention=60)
    clock.advance(120 + PURGE_INTERVAL)
    for write in range(4):  # no clock movement: a full batch makes the next write purge too
        store.first_seen(f"fresh-{write}", retention=60)
    assert _rows(path, "first_seen") == 4
    store.close()


def test_commits_skip_the_fsync_in_wal_mode_by_default_and_full_is_an_option(tmp_path):
    default = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    durable = open_store(f"sqlite:///{tmp_path / 'b.db'}?synchronous=full")
    try:
        assert default.synchronous == "normal"
        assert durable.synchronous == "full"
        assert "synchronous=full" in durable.describe and "synchronous" not in default.describe
        # Every thread's connection gets the same setting, not just the first one.
        seen = []
        worker = threading.Thread(target=lambda: seen.append(default.synchronous))
        worker.start()
        worker.join(timeout=10)
        assert seen == ["normal"]
        assert default.claim("k", ttl=60).acquired
    finally:
        default.close()
        durable.close()


def test_a_file_left_in_rollback_journal_mode_commits_with_full_sync(tmp_path):
    # NORMAL outside WAL can corrupt the file on a power cut: such a file keeps FULL.
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    rollback = sqlite3.connect(tmp_path / "rollback.db")
    try:
        assert rollback.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        store._set_synchronous(rollback)
        assert rollback.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        wal = sqlite3.connect(tmp_path / "state.db")
        store._set_synchronous(wal)
        assert wal.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        wal.close()
    finally:
        rollback.close()
        store.close()


def test_a_file_from_before_in_flight_reservations_is_upgraded_and_its_units_stay_spent(
    tmp_path,
):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the budget table as the previous release made it
        db.execute(
            "CREATE TABLE budget (subject TEXT NOT NULL, token TEXT NOT NULL, at REAL NOT NULL,"
            " expires_at REAL NOT NULL, PRIMARY KEY (subject, token))"
        )
        now = time.time()
        db.execute("INSERT INTO budget VALUES ('exec', 'old', ?, ?)", (now, now + HOUR))
    db.close()
    with open_store(f"sqlite:///{path}") as store:
        assert store.budget_used("exec", HOUR, spent_only=True) == 1
        assert store.reserve_budget("exec", 1, HOUR, in_flight=60).state == "spent"
        assert store.reserve_budget("exec", 2, HOUR, in_flight=60).reserved


def test_expired_ledger_rows_of_any_execution_are_purged_by_later_writes(tmp_path):
    from tests.store.conftest import FakeClock

    clock = FakeClock()
    path = tmp_path / "state.db"
    store = open_store(f"sqlite:///{path}", clock=clock)
    try:
        for n in range(40):
            store.ledger_append("g", f"gone-{n}", [{"n": n}], keep=HOUR, max_entries=50)
        clock.advance(HOUR + 1)
        store.ledger_append("g", "live", [{"n": 1}], keep=HOUR, max_entries=50)
        store.ledger_append("g", "live", [{"n": 2}], keep=HOUR, max_entries=50)
        with sqlite3.connect(path) as db:
            (rows,) = db.execute("SELECT COUNT(*) FROM ledger").fetchone()
        assert rows == 2  # two writes purged the 40 expired rows (a batch of 32 each: a backlog)
        assert store.ledger("g", "live") == [{"n": 1}, {"n": 2}]
    finally:
        store.close()
