"""The SQLite backend (``sqlite:///path``): one file for the processes of one machine.

The default store: it needs no server, and a ``BEGIN IMMEDIATE`` transaction (which takes the
file's write lock before it reads) makes each read-decide-write step atomic across processes.
The file uses the WAL journal, so readers work during a write. Several function instances on
different hosts need Redis instead.

Durability: in WAL mode commits run with ``PRAGMA synchronous = NORMAL`` by default - a commit
is written to the WAL but not fsynced; the WAL is synced at each checkpoint. A process crash
loses nothing committed (the WAL is in the OS's page cache); a power cut or an OS crash may
roll back the last commits since the previous checkpoint: a claim or budget reservation made
just before it can be forgotten, so one event could be restored once more. FunctionGraph's
``/tmp`` does not survive its instance anyway. ``?synchronous=full`` (a store URL option)
fsyncs every commit instead - three fsyncs per restore (claim, budget reservation, outcome),
the largest single cost of the HTTP function when profiled (benchmarks/RESULTS.md). A file
that could not be switched to WAL always uses FULL: NORMAL in rollback-journal mode can
corrupt the file on a power cut.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import quote

from handler.store import breaker_steps as steps
from handler.store.base import (
    ACQUIRED,
    BUSY,
    CLOSED,
    DONE,
    IN_PROGRESS,
    REFAILURES_KEPT,
    RESERVED,
    SPENT,
    BreakerState,
    Claim,
    LedgerBatch,
    RateSlot,
    RecordsNotKept,
    Refailure,
    Reservation,
    StoreUnavailable,
    budget_kept,
    check_keys,
    check_limit,
    check_quiet_marks,
    check_text,
    check_time,
    dump_record,
    free_slot_at,
    ledger_batch,
    new_token,
    positive_seconds,
    settled_item,
)
from handler.store.url import DEFAULT_BUSY_TIMEOUT, DEFAULT_SYNCHRONOUS, SYNCHRONOUS_MODES

PURGE_BATCH = 32  # expired rows removed per table by one purge: bounded cost per call
# How long a process's writes skip the purge after one that found no backlog (every table
# under a full batch): expired rows never count (every read checks ``expires_at``), so they may
# wait; while a purge still finds full batches, the next write purges again.
PURGE_INTERVAL = 1.0
# Keys per statement of a bulk read: SQLite bounds the parameters of one (999 before 3.32).
_KEYS_PER_READ = 500

# The reservations that count: ``subject``'s, made within the window, and still kept (expired
# rows are purged in batches, so one may linger a while: it must not count meanwhile).
# Parameters: (now,) subject, window start, now. A reservation is spent when settled
# (in_flight_until is NULL) or in flight past its time.
_COUNT_LIVE_AND_SPENT = (
    "SELECT COUNT(*), COALESCE(SUM(in_flight_until IS NULL OR in_flight_until <= ?), 0)"
    " FROM budget WHERE subject = ? AND at > ? AND expires_at > ?"
)
_TIMES_LIVE = "SELECT at FROM budget WHERE subject = ? AND at > ? AND expires_at > ? ORDER BY at"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS dedupe (
        key TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        token TEXT NOT NULL,
        expires_at REAL NOT NULL,
        record TEXT,
        updated_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS dedupe_expires_at ON dedupe (expires_at)",
    "CREATE INDEX IF NOT EXISTS dedupe_updated_at ON dedupe (updated_at)",
    """CREATE TABLE IF NOT EXISTS budget (
        subject TEXT NOT NULL,
        token TEXT NOT NULL,
        at REAL NOT NULL,
        expires_at REAL NOT NULL,
        in_flight_until REAL,
        PRIMARY KEY (subject, token)
    )""",
    "CREATE INDEX IF NOT EXISTS budget_expires_at ON budget (expires_at)",
    """CREATE TABLE IF NOT EXISTS first_seen (
        key TEXT PRIMARY KEY,
        at REAL NOT NULL,
        expires_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS first_seen_expires_at ON first_seen (expires_at)",
    """CREATE TABLE IF NOT EXISTS deferred (
        key TEXT PRIMARY KEY,
        failure TEXT NOT NULL,
        due_at REAL NOT NULL,
        expires_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS deferred_due_at ON deferred (due_at)",
    "CREATE INDEX IF NOT EXISTS deferred_expires_at ON deferred (expires_at)",
    """CREATE TABLE IF NOT EXISTS rate_slots (
        subject TEXT NOT NULL,
        token TEXT NOT NULL,
        at REAL NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (subject, token)
    )""",
    "CREATE INDEX IF NOT EXISTS rate_slots_subject_at ON rate_slots (subject, at)",
    "CREATE INDEX IF NOT EXISTS rate_slots_expires_at ON rate_slots (expires_at)",
    """CREATE TABLE IF NOT EXISTS pauses (
        subject TEXT PRIMARY KEY,
        record TEXT NOT NULL,
        expires_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS breakers (
        graph TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        expires_at REAL NOT NULL,
        opened_at REAL,
        cooldown REAL,
        canary_token TEXT NOT NULL DEFAULT '',
        canary_execution TEXT,
        canary_at REAL,
        closed_at REAL
    )""",
    "CREATE INDEX IF NOT EXISTS breakers_expires_at ON breakers (expires_at)",
    """CREATE TABLE IF NOT EXISTS breaker_refailures (
        graph TEXT NOT NULL,
        execution TEXT NOT NULL,
        at REAL NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (graph, execution)
    )""",
    "CREATE INDEX IF NOT EXISTS breaker_refailures_graph_at ON breaker_refailures (graph, at)",
    "CREATE INDEX IF NOT EXISTS breaker_refailures_expires_at ON breaker_refailures (expires_at)",
    # One row per ledger entry; seq orders an execution's entries as they were appended.
    """CREATE TABLE IF NOT EXISTS ledger (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        graph TEXT NOT NULL,
        execution TEXT NOT NULL,
        entry TEXT NOT NULL,
        expires_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS ledger_execution ON ledger (graph, execution, seq)",
    "CREATE INDEX IF NOT EXISTS ledger_expires_at ON ledger (expires_at)",
    # The newest sweep's summary: one row, replaced by each sweep.
    """CREATE TABLE IF NOT EXISTS last_sweep (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        summary TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS quiet_listings (
        graph TEXT PRIMARY KEY,
        until REAL NOT NULL
    )""",
)
_BREAKER_COLUMNS = (
    "state, expires_at, opened_at, cooldown, canary_token, canary_execution, canary_at, closed_at"
)
# Columns added after a table was first released: a file an earlier version made gets them
# at open. (A reservation from before ``in_flight_until`` existed reads as settled: spent.)
_ADDED_COLUMNS = (("budget", "in_flight_until", "REAL"),)


class _Connection:
    """One thread's SQLite connection, closed when the thread (and its holder) goes away.

    Only the process that opened a connection closes it: SQLite forbids using - closing
    included - a connection inherited across ``fork``.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.pid = os.getpid()
        self._finalizer = weakref.finalize(self, _close_in_owner, connection, self.pid)

    def close(self) -> None:
        self._finalizer()


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc)


def _missing_table(exc: sqlite3.OperationalError) -> str | None:
    """The table an error says is missing ("no such table: ledger"), or None."""
    text = str(exc)
    return text.removeprefix("no such table: ") if text.startswith("no such table: ") else None


def _close_in_owner(connection: sqlite3.Connection, pid: int) -> None:
    if os.getpid() == pid:
        connection.close()


class SQLiteStore:
    """A SQLite file shared by the threads and processes of one machine.

    Each thread gets its own connection (a connection inherited across ``fork`` is never
    reused); every write runs in a ``BEGIN IMMEDIATE`` transaction, which takes the file's
    write lock before reading, so the read-decide-write steps of :meth:`claim` and
    :meth:`reserve_budget` are atomic across processes. A writer waits ``busy_timeout``
    seconds for another one, then the call raises :class:`StoreUnavailable`. Writes also delete
    up to ``PURGE_BATCH`` expired rows per table: every write while there is a backlog, else
    at most once per ``PURGE_INTERVAL`` seconds per process (eight ``DELETE`` statements each
    time, the largest part of a restore's SQLite work when run on every write). The parent
    directory is created if missing.
    ``synchronous`` is ``normal`` (default) or ``full``: what a power cut may cost is in the
    module docstring.
    """

    def __init__(
        self,
        path: str,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        read_only: bool = False,
        synchronous: str = DEFAULT_SYNCHRONOUS,
    ) -> None:
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be normal or full, got {synchronous!r}")
        self.path = os.path.abspath(path)
        self._clock = clock
        self._busy_timeout = positive_seconds("busy_timeout", busy_timeout)
        self._read_only = read_only
        self._synchronous = synchronous
        self._local = threading.local()
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._registry_lock = threading.Lock()
        self._writer_lock = threading.Lock()
        self._writer_pid = os.getpid()
        # When this process's writes purge next (store clock); changed under the writer lock.
        self._purge_due = -math.inf
        self._open_file()

    @property
    def describe(self) -> str:
        options = ["mode=ro"] if self._read_only else []
        if self._synchronous != DEFAULT_SYNCHRONOUS:
            options.append(f"synchronous={self._synchronous}")
        return f"sqlite:///{self.path}" + ("?" + "&".join(options) if options else "")

    def __repr__(self) -> str:
        return f"SQLiteStore({self.describe!r})"

    def claim(self, key: str, ttl: float) -> Claim:
        check_text("key", key)
        ttl = positive_seconds("ttl", ttl)
        with self._write() as db:
            now = self._clock()
            self._purge(db, now)
            row = db.execute(
                "SELECT state, expires_at, record FROM dedupe WHERE key = ?", (key,)
            ).fetchone()
            if row is not None and row[1] > now:
                if row[0] == DONE:
                    return Claim(False, "", DONE, json.loads(row[2] or "{}"))
                return Claim(False, "", IN_PROGRESS, None)
            token = new_token()
            db.execute(
                "INSERT OR REPLACE INTO dedupe (key, state, token, expires_at, record, updated_at)"
                " VALUES (?, ?, ?, ?, NULL, ?)",
                (key, IN_PROGRESS, token, now + ttl, now),
            )
            return Claim(True, token, ACQUIRED, None)

    def finish(self, key: str, token: str, record: dict, retention: float) -> None:
        check_text("key", key)
        retention = positive_seconds("retention", retention)
        data = dump_record(record)
        with self._write() as db:
            _finish(db, self._clock(), key, token, data, retention)

    def release(self, key: str, token: str) -> None:
        check_text("key", key)
        with self._write() as db:
            _release(db, key, token)

    def renew(self, key: str, token: str, ttl: float) -> bool:
        check_text("key", key)
        ttl = positive_seconds("ttl", ttl)
        with self._write() as db:
            now = self._clock()
            changed = db.execute(
                "UPDATE dedupe SET expires_at = ?"
                " WHERE key = ? AND token = ? AND state = ? AND expires_at > ?",
                (now + ttl, key, token, IN_PROGRESS, now),
            ).rowcount
        return changed == 1

    def reserve_budget(
        self,
        subject: str,
        limit: int,
        window: float,
        *,
        in_flight: float,
        keep: float | None = None,
    ) -> Reservation:
        check_text("subject", subject)
        limit = check_limit(limit)
        window = positive_seconds("window", window)
        in_flight = positive_seconds("in_flight", in_flight)
        kept = budget_kept(window, keep)
        with self._write() as db:
            now = self._clock()
            self._purge(db, now)
            used, spent = db.execute(
                _COUNT_LIVE_AND_SPENT, (now, subject, now - window, now)
            ).fetchone()
            if used >= limit:
                return Reservation(False, "", SPENT if spent >= limit else BUSY)
            token = new_token()
            db.execute(
                "INSERT INTO budget (subject, token, at, expires_at, in_flight_until)"
                " VALUES (?, ?, ?, ?, ?)",
                (subject, token, now, now + kept, now + in_flight),
            )
            return Reservation(True, token, RESERVED)

    def settle_budget(self, subject: str, token: str) -> None:
        with self._write() as db:
            _settle_budget(db, subject, token)

    def refund_budget(self, subject: str, token: str) -> None:
        with self._write() as db:
            _refund_budget(db, subject, token)

    def budget_used(self, subject: str, window: float, *, spent_only: bool = False) -> int:
        window = positive_seconds("window", window)
        now = self._clock()
        with self._read() as db:
            used, spent = db.execute(
                _COUNT_LIVE_AND_SPENT, (now, subject, now - window, now)
            ).fetchone()
        return int(spent if spent_only else used)

    def budget_times(self, subject: str, window: float) -> list[float]:
        window = positive_seconds("window", window)
        now = self._clock()
        with self._read() as db:
            rows = db.execute(_TIMES_LIVE, (subject, now - window, now)).fetchall()
        return [float(at) for (at,) in rows]

    def first_seen(self, key: str, retention: float, *, after: float | None = None) -> float:
        check_text("key", key)
        retention = positive_seconds("retention", retention)
        with self._write() as db:
            now = self._clock()
            self._purge(db, now)
            row = db.execute(
                "SELECT at FROM first_seen WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
            if row is not None and (after is None or row[0] > after):
                return float(row[0])
            db.execute(
                "INSERT OR REPLACE INTO first_seen (key, at, expires_at) VALUES (?, ?, ?)",
                (key, now, now + retention),
            )
            return now

    def remember_deferred(self, key: str, failure: dict, due_at: float, retention: float) -> None:
        check_text("key", key)
        retention = positive_seconds("retention", retention)
        data = dump_record(failure)
        due_at = check_time("due_at", due_at)
        with self._write() as db:
            self._purge(db, self._clock())
            db.execute(
                "INSERT OR REPLACE INTO deferred (key, failure, due_at, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (key, data, due_at, due_at + retention),
            )

    def due_deferred(self, limit: int) -> list[tuple[str, dict]]:
        limit = check_limit(limit)
        now = self._clock()
        with self._read() as db:
            rows = db.execute(
                "SELECT key, failure FROM deferred WHERE due_at <= ? AND expires_at > ?"
                " ORDER BY due_at, key LIMIT ?",
                (now, now, max(limit, 0)),
            ).fetchall()
        return [(key, json.loads(failure)) for key, failure in rows]

    def take_rate_slot(self, subject: str, limit: int, interval: float) -> RateSlot:
        check_text("subject", subject)
        limit = check_limit(limit)
        interval = positive_seconds("interval", interval)
        with self._write() as db:
            now = self._clock()
            self._purge(db, now)
            times = [
                float(at)
                for (at,) in db.execute(
                    "SELECT at FROM rate_slots WHERE subject = ? AND at > ? AND expires_at > ?"
                    " ORDER BY at",
                    (subject, now - interval, now),
                )
            ]
            if len(times) >= limit:
                return RateSlot(False, "", free_slot_at(times, limit, interval))
            token = new_token()
            db.execute(
                "INSERT INTO rate_slots (subject, token, at, expires_at) VALUES (?, ?, ?, ?)",
                (subject, token, now, now + interval),
            )
            return RateSlot(True, token, now)

    def return_rate_slot(self, subject: str, token: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM rate_slots WHERE subject = ? AND token = ?", (subject, token))

    def rate_used(self, subject: str, interval: float) -> int:
        interval = positive_seconds("interval", interval)
        now = self._clock()
        with self._read() as db:
            (used,) = db.execute(
                "SELECT COUNT(*) FROM rate_slots WHERE subject = ? AND at > ? AND expires_at > ?",
                (subject, now - interval, now),
            ).fetchone()
        return int(used)

    def record_refailure(
        self,
        graph: str,
        execution: str,
        failed_at: float,
        *,
        window: float,
        threshold: int,
        cooldown: float,
    ) -> BreakerState:
        check_text("graph", graph)
        check_text("execution", execution)
        failed_at = check_time("failed_at", failed_at)
        window = positive_seconds("window", window)
        threshold = check_limit(threshold)
        cooldown = positive_seconds("cooldown", cooldown)
        with self._write() as db:
            now = self._clock()
            self._purge(db, now)
            failed_at = min(failed_at, now)
            record = self._breaker_record(db, graph, now)
            if steps.counts(record, failed_at, now, window):
                db.execute(
                    "INSERT INTO breaker_refailures (graph, execution, at, expires_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (graph, execution) DO UPDATE SET"
                    " at = MAX(at, excluded.at), expires_at = MAX(expires_at, excluded.expires_at)",
                    (graph, execution, failed_at, failed_at + window),
                )
                db.execute(
                    "DELETE FROM breaker_refailures WHERE rowid IN (SELECT rowid FROM"
                    " breaker_refailures WHERE graph = ? ORDER BY at DESC LIMIT -1 OFFSET ?)",
                    (graph, REFAILURES_KEPT),
                )
            evidence = self._evidence(db, graph, now, window)
            opened = steps.after_refailure(
                record, len(evidence), now, threshold=threshold, cooldown=cooldown, window=window
            )
            if opened is not None:
                self._save_breaker(db, graph, opened)
                record = opened
            return steps.state_of(graph, record, evidence, changed=opened is not None)

    def breaker(self, graph: str, *, window: float) -> BreakerState:
        check_text("graph", graph)
        window = positive_seconds("window", window)
        now = self._clock()
        with self._read() as db:
            record = self._breaker_record(db, graph, now)
            return steps.state_of(graph, record, self._evidence(db, graph, now, window))

    def take_canary(self, graph: str, execution: str, *, window: float) -> BreakerState:
        check_text("graph", graph)
        check_text("execution", execution)
        window = positive_seconds("window", window)
        token = new_token()
        return self._transition(
            graph,
            lambda record, now: steps.after_take_canary(
                record, execution, token, now, window=window
            ),
        )

    def close_breaker(self, graph: str, token: str, *, window: float) -> BreakerState:
        check_text("graph", graph)
        window = positive_seconds("window", window)
        return self._transition(
            graph,
            lambda record, now: steps.after_close(record, token, now, window=window),
            forget_refailures=True,
        )

    def reopen_breaker(
        self, graph: str, token: str, *, max_cooldown: float, window: float
    ) -> BreakerState:
        check_text("graph", graph)
        max_cooldown = positive_seconds("max_cooldown", max_cooldown)
        window = positive_seconds("window", window)
        return self._transition(
            graph,
            lambda record, now: steps.after_reopen(
                record, token, now, max_cooldown=max_cooldown, window=window
            ),
        )

    def release_canary(self, graph: str, token: str, *, window: float) -> BreakerState:
        check_text("graph", graph)
        window = positive_seconds("window", window)
        return self._transition(
            graph, lambda record, now: steps.after_release(record, token, now, window=window)
        )

    def breakers_open(self) -> list[BreakerState]:
        now = self._clock()
        with self._read() as db:
            rows = db.execute(
                f"SELECT graph, {_BREAKER_COLUMNS} FROM breakers"  # noqa: S608 - fixed columns
                " WHERE expires_at > ? AND state != ? ORDER BY opened_at, graph",
                (now, CLOSED),
            ).fetchall()
        return [steps.state_of(row[0], steps.BreakerRecord(*row[1:])) for row in rows]

    def pause(self, subject: str, record: dict, until: float) -> None:
        check_text("subject", subject)
        data = dump_record(record)
        until = check_time("until", until)
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO pauses (subject, record, expires_at) VALUES (?, ?, ?)",
                (subject, data, until),
            )

    def resume(self, subject: str) -> bool:
        check_text("subject", subject)
        with self._write() as db:
            now = self._clock()
            live = db.execute(
                "SELECT 1 FROM pauses WHERE subject = ? AND expires_at > ?", (subject, now)
            ).fetchone()
            db.execute("DELETE FROM pauses WHERE subject = ?", (subject,))
        return live is not None

    def pauses(self) -> dict[str, dict]:
        with self._read() as db:
            rows = db.execute(
                "SELECT subject, record, expires_at FROM pauses WHERE expires_at > ?",
                (self._clock(),),
            ).fetchall()
        return {subject: {**json.loads(data), "until": until} for subject, data, until in rows}

    def reset_breaker(self, graph: str) -> bool:
        check_text("graph", graph)
        with self._write() as db:
            record = self._breaker_record(db, graph, self._clock())
            db.execute("DELETE FROM breakers WHERE graph = ?", (graph,))
            db.execute("DELETE FROM breaker_refailures WHERE graph = ?", (graph,))
        return record is not None and record.state != CLOSED

    def _transition(self, graph: str, step, *, forget_refailures: bool = False) -> BreakerState:
        """Apply one breaker step in one write transaction; the answer says if it changed."""
        with self._write() as db:
            now = self._clock()
            self._purge(db, now)
            record = self._breaker_record(db, graph, now)
            changed = step(record, now)
            if changed is not None:
                self._save_breaker(db, graph, changed)
                record = changed
                if forget_refailures:
                    db.execute("DELETE FROM breaker_refailures WHERE graph = ?", (graph,))
            return steps.state_of(graph, record, changed=changed is not None)

    @staticmethod
    def _breaker_record(
        db: sqlite3.Connection, graph: str, now: float
    ) -> steps.BreakerRecord | None:
        row = db.execute(
            f"SELECT {_BREAKER_COLUMNS} FROM breakers"  # noqa: S608 - fixed columns
            " WHERE graph = ? AND expires_at > ?",
            (graph, now),
        ).fetchone()
        return steps.BreakerRecord(*row) if row is not None else None

    @staticmethod
    def _save_breaker(db: sqlite3.Connection, graph: str, record: steps.BreakerRecord) -> None:
        db.execute(
            f"INSERT OR REPLACE INTO breakers (graph, {_BREAKER_COLUMNS})"  # noqa: S608
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                graph,
                record.state,
                record.expires_at,
                record.opened_at,
                record.cooldown,
                record.canary_token,
                record.canary_execution,
                record.canary_at,
                record.closed_at,
            ),
        )

    @staticmethod
    def _evidence(
        db: sqlite3.Connection, graph: str, now: float, window: float
    ) -> tuple[Refailure, ...]:
        rows = db.execute(
            "SELECT execution, at FROM breaker_refailures WHERE graph = ? AND at > ?"
            " AND expires_at > ? ORDER BY at, execution",
            (graph, now - window, now),
        ).fetchall()
        return tuple(Refailure(execution, float(at)) for execution, at in rows)

    def recent(self, limit: int = 20, *, window: float | None = None) -> dict:
        with self._read() as db:
            now = self._clock()
            rows = db.execute(
                "SELECT key, state, expires_at, record FROM dedupe WHERE expires_at > ?"
                " ORDER BY updated_at DESC LIMIT ?",
                (now, limit),
            ).fetchall()
            since = -math.inf if window is None else now - window
            budget = db.execute(
                "SELECT subject, COUNT(*), MAX(at) FROM budget WHERE expires_at > ? AND at > ?"
                " GROUP BY subject ORDER BY MAX(at) DESC LIMIT ?",
                (now, since, limit),
            ).fetchall()
        return {
            "dedupe": [
                {
                    "key": key,
                    "state": state,
                    "expires_at": expires_at,
                    "record": json.loads(record) if record is not None else None,
                }
                for key, state, expires_at, record in rows
            ],
            "budget": [
                {"subject": subject, "used": used, "last_at": last_at}
                for subject, used, last_at in budget
            ],
        }

    def forget(self, key: str) -> bool:
        check_text("key", key)
        with self._write() as db:
            live = db.execute(
                "SELECT COUNT(*) FROM dedupe WHERE key = ? AND expires_at > ?",
                (key, self._clock()),
            ).fetchone()[0]
            db.execute("DELETE FROM dedupe WHERE key = ?", (key,))
        return bool(live)

    def reset_budget(self, subject: str) -> int:
        check_text("subject", subject)
        with self._write() as db:
            return db.execute("DELETE FROM budget WHERE subject = ?", (subject,)).rowcount

    def check_writable(self) -> None:
        probe = f"\x00check-writable:{new_token()}"  # no event id starts with NUL
        with self._write() as db:
            db.execute(
                "INSERT INTO dedupe (key, state, token, expires_at, record, updated_at)"
                " VALUES (?, ?, '', 0, NULL, 0)",
                (probe, IN_PROGRESS),
            )
            db.execute("DELETE FROM dedupe WHERE key = ?", (probe,))

    def ping(self) -> None:
        with self._read() as db:
            db.execute("SELECT COUNT(*) FROM dedupe WHERE key = ''").fetchone()

    def close(self) -> None:
        with self._registry_lock:
            holders = list(self._connections)
            self._connections = weakref.WeakSet()
        for holder in holders:
            holder.close()
        self._local = threading.local()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # internals

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"state store {self.describe} unavailable: {exc}")

    def _open_file(self) -> None:
        """Create the file and schema now, so a bad path fails at start-up, not per event."""
        try:
            if not self._read_only:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
            db = self._connection()
            if self._read_only:
                db.execute("SELECT 1 FROM dedupe, budget LIMIT 1").fetchall()
                return
            self._use_wal(db)
            self._set_synchronous(db)
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    db.execute(statement)
                for table, column, kind in _ADDED_COLUMNS:
                    present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                    if column not in present:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise self._unavailable(exc) from None

    def _use_wal(self, db: sqlite3.Connection) -> None:
        """Switch the file to WAL, which lets readers work during a write.

        The switch needs a moment of exclusivity and SQLite answers "locked" at once, without
        its busy handler, when processes race to open a new file; so retry for up to the
        busy timeout. (A file that stays in rollback mode is still correct, only slower.)
        """
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                db.execute("PRAGMA journal_mode = WAL").fetchone()
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.005 + secrets.randbelow(20) / 1000)

    def _connect(self) -> sqlite3.Connection:
        if self._read_only:
            target, uri = f"file:{quote(self.path)}?mode=ro", True
        else:
            target, uri = self.path, False
        db = sqlite3.connect(
            target,
            timeout=self._busy_timeout,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # only close() crosses threads
            uri=uri,
        )
        self._set_synchronous(db)
        return db

    def _set_synchronous(self, db: sqlite3.Connection) -> None:
        """NORMAL only in WAL mode (see the module docstring); FULL otherwise or when asked.

        A new file is switched to WAL after its first connection opens, so the first
        connection is set again by :meth:`_open_file` once the switch is made.
        """
        wal = db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        normal = wal and self._synchronous == "normal"
        db.execute(f"PRAGMA synchronous = {'NORMAL' if normal else 'FULL'}")

    @property
    def synchronous(self) -> str:
        """What this connection's commits wait for: ``normal`` or ``full`` (PRAGMA value)."""
        value = self._connection().execute("PRAGMA synchronous").fetchone()[0]
        return {1: "normal", 2: "full"}.get(value, str(value))

    def _connection(self) -> sqlite3.Connection:
        holder: _Connection | None = getattr(self._local, "holder", None)
        if holder is None or holder.pid != os.getpid():
            holder = _Connection(self._connect())
            self._local.holder = holder
            with self._registry_lock:
                self._connections.add(holder)
        return holder.connection

    def _discard_connection(self) -> None:
        holder = getattr(self._local, "holder", None)
        self._local.holder = None
        if holder is not None and holder.pid == os.getpid():
            holder.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction; any SQLite failure becomes StoreUnavailable.

        Writers of one process queue on a lock first: SQLite's own busy handler makes a
        losing writer sleep in growing steps (up to 100 ms), which measured p99 105 ms for
        8 threads against 11.5 ms with the lock (benchmarks/RESULTS.md). Other processes
        still meet at the file lock, with the busy timeout.
        """
        if not self._process_writer_lock().acquire(timeout=self._busy_timeout):
            raise self._unavailable(TimeoutError("another writer held the store too long"))
        try:
            with self._transaction() as db:
                yield db
        finally:
            self._writer_lock.release()

    def _process_writer_lock(self) -> threading.Lock:
        if self._writer_pid != os.getpid():  # a fork child never inherits a held lock
            self._writer_lock = threading.Lock()
            self._writer_pid = os.getpid()
        return self._writer_lock

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
        except (sqlite3.Error, OSError) as exc:
            self._discard_connection()
            raise self._unavailable(exc) from None
        try:
            yield db
            db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            # Whatever failed - a read-only file, a full disk, a lock held too long - the
            # connection may carry it (SQLite falls back to a read-only connection when the
            # file was not writable at open), so the next write starts on a fresh one and the
            # store recovers as soon as the cause is gone, without a restart.
            self._rollback(db)
            self._discard_connection()
            raise self._unavailable(exc) from None
        except BaseException:
            self._rollback(db)
            raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._connection()
        except sqlite3.OperationalError as exc:
            missing = _missing_table(exc) if self._read_only else None
            if missing is not None:  # a file from before these records, opened read-only
                raise RecordsNotKept(
                    f"state store {self.describe} keeps no {missing} records: the file was "
                    "made by an earlier version and is open read-only",
                    missing,
                ) from None
            self._discard_connection()
            raise self._unavailable(exc) from None
        except (sqlite3.Error, OSError) as exc:
            self._discard_connection()
            raise self._unavailable(exc) from None

    def _rollback(self, db: sqlite3.Connection) -> None:
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
        except sqlite3.Error:
            self._discard_connection()

    def _purge(self, db: sqlite3.Connection, now: float) -> None:
        """Delete up to ``PURGE_BATCH`` expired rows per table, when one is due: on every
        write while the last purge found a full batch somewhere, else ``PURGE_INTERVAL``
        seconds after it (or at once if the clock went back). Runs under the writer lock."""
        if self._purge_due - PURGE_INTERVAL <= now < self._purge_due:
            return
        tables = (
            "dedupe", "budget", "first_seen", "deferred", "rate_slots", "breakers", "pauses",
        )  # fmt: skip
        backlog = False
        for table in (*tables, "breaker_refailures", "ledger"):
            deleted = db.execute(
                f"DELETE FROM {table} WHERE rowid IN"  # noqa: S608 - fixed table names
                f" (SELECT rowid FROM {table} WHERE expires_at <= ? LIMIT ?)",
                (now, PURGE_BATCH),
            ).rowcount
            backlog = backlog or deleted >= PURGE_BATCH
        self._purge_due = now if backlog else now + PURGE_INTERVAL

    def ledger_append(
        self, graph: str, execution: str, entries: list[dict], *, keep: float, max_entries: int
    ) -> None:
        keep, max_entries, data = ledger_batch(graph, execution, entries, keep, max_entries)
        with self._write() as db:
            now = self._clock()
            self._purge(db, now)
            _append_ledger(db, now, graph, execution, data, keep, max_entries)

    def ledger(self, graph: str, execution: str) -> list[dict]:
        check_text("graph", graph)
        check_text("execution", execution)
        now = self._clock()
        with self._read() as db:
            rows = db.execute(
                "SELECT entry FROM ledger WHERE graph = ? AND execution = ? AND expires_at > ?"
                " ORDER BY seq",
                (graph, execution, now),
            ).fetchall()
        return [json.loads(entry) for (entry,) in rows]

    def record_sweep(self, summary: dict) -> None:
        data = dump_record(summary)
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO last_sweep (id, summary) VALUES (1, ?)", (data,))

    def last_sweep(self) -> dict | None:
        with self._read() as db:
            row = db.execute("SELECT summary FROM last_sweep WHERE id = 1").fetchone()
        return json.loads(row[0]) if row is not None else None

    def waiting_deferred(self, limit: int) -> list[tuple[str, dict]]:
        limit = check_limit(limit)
        now = self._clock()
        with self._read() as db:
            rows = db.execute(
                "SELECT key, failure FROM deferred WHERE expires_at > ? ORDER BY due_at, key"
                " LIMIT ?",
                (now, max(limit, 0)),
            ).fetchall()
        return [(key, json.loads(failure)) for key, failure in rows]

    def quiet_until(self) -> dict[str, float]:
        with self._read() as db:
            rows = db.execute(
                "SELECT graph, until FROM quiet_listings WHERE until > ?", (self._clock(),)
            ).fetchall()
        return dict(rows)

    def set_quiet_until(self, marks: Mapping[str, float]) -> None:
        marks = check_quiet_marks(marks)
        with self._write() as db:
            db.executemany(
                "INSERT OR REPLACE INTO quiet_listings (graph, until) VALUES (?, ?)",
                marks.items(),
            )
            # Passed marks (and those set to a past moment: forgotten) go in the same step;
            # there is at most one row per graph, so this stays as small as the graph list.
            db.execute("DELETE FROM quiet_listings WHERE until <= ?", (self._clock(),))

    def deferred_among(self, keys: Collection[str]) -> dict[str, tuple[float, dict]]:
        keys = check_keys(keys)
        now = self._clock()
        found: dict[str, tuple[float, dict]] = {}
        with self._read() as db:
            # In chunks: SQLite bounds the parameters of one statement (999 before 3.32).
            for start in range(0, len(keys), _KEYS_PER_READ):
                chunk = keys[start : start + _KEYS_PER_READ]
                marks = ", ".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT key, due_at, failure FROM deferred WHERE key IN ({marks})"  # noqa: S608 - placeholders only
                    " AND expires_at > ?",
                    (*chunk, now),
                ).fetchall()
                for key, due_at, failure in rows:
                    found[key] = (float(due_at), json.loads(failure))
        return found

    def settle_item(
        self,
        key: str,
        token: str,
        *,
        record: dict | None,
        retention: float,
        budget: tuple[str, str] | None = None,
        spent: bool = False,
        ledger: LedgerBatch | None = None,
    ) -> None:
        data, retention = settled_item(key, record, retention, budget)
        batch = None if ledger is None else (ledger.graph, ledger.execution, *ledger_batch(*ledger))
        # One BEGIN IMMEDIATE ... COMMIT for every part: the steps the separate methods run,
        # so each part means what it means there.
        with self._write() as db:
            now = self._clock()
            if budget is not None and spent:
                _settle_budget(db, *budget)
            elif budget is not None:
                _refund_budget(db, *budget)
            if data is not None:
                _finish(db, now, key, token, data, retention)
            else:
                _release(db, key, token)
            if batch is not None:
                graph, execution, keep, max_entries, lines = batch
                self._purge(db, now)
                _append_ledger(db, now, graph, execution, lines, keep, max_entries)


# The writes an item's end is made of, each inside the caller's transaction: the single-purpose
# methods run one each, settle_item runs them together in one transaction.


def _finish(
    db: sqlite3.Connection, now: float, key: str, token: str, data: str, retention: float
) -> None:
    """Record the outcome ``data`` for ``retention`` s; the failure is no longer deferred."""
    db.execute(
        "INSERT OR REPLACE INTO dedupe (key, state, token, expires_at, record, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (key, DONE, token, now + retention, data, now),
    )
    db.execute("DELETE FROM deferred WHERE key = ?", (key,))


def _release(db: sqlite3.Connection, key: str, token: str) -> None:
    """Drop our in-progress marker (and only ours: ``token``), so a redelivery may claim."""
    db.execute(
        "DELETE FROM dedupe WHERE key = ? AND token = ? AND state = ?",
        (key, token, IN_PROGRESS),
    )


def _settle_budget(db: sqlite3.Connection, subject: str, token: str) -> None:
    """The unit is spent: no longer in flight, it counts until it leaves the window."""
    db.execute(
        "UPDATE budget SET in_flight_until = NULL WHERE subject = ? AND token = ?",
        (subject, token),
    )


def _refund_budget(db: sqlite3.Connection, subject: str, token: str) -> None:
    """The unit restored nothing: it no longer counts."""
    db.execute("DELETE FROM budget WHERE subject = ? AND token = ?", (subject, token))


def _append_ledger(
    db: sqlite3.Connection,
    now: float,
    graph: str,
    execution: str,
    lines: list[str],
    keep: float,
    max_entries: int,
) -> None:
    """Append the serialised entries, then keep only the newest ``max_entries``."""
    db.executemany(
        "INSERT INTO ledger (graph, execution, entry, expires_at) VALUES (?, ?, ?, ?)",
        [(graph, execution, line, now + keep) for line in lines],
    )
    db.execute(
        "DELETE FROM ledger WHERE seq IN (SELECT seq FROM ledger WHERE graph = ?"
        " AND execution = ? ORDER BY seq DESC LIMIT -1 OFFSET ?)",
        (graph, execution, max_entries),
    )
