"""The state store: deduplication markers and the restore budget, shared by every instance.

Failure events arrive at least once, and several function instances may handle copies of one
event at the same time. Two questions must therefore be answered atomically by a store that
every instance sees:

* *dedupe* - has this event been handled (then answer with the recorded outcome), or is some
  instance handling it right now (then back off)? :meth:`StateStore.claim` takes an
  in-progress marker that expires after a TTL, so a crashed instance cannot block an event
  forever; :meth:`~StateStore.finish` replaces it with the final outcome, kept for a
  retention period; :meth:`~StateStore.release` drops it after a transient failure so a
  redelivery can try again.
* *budget* - how many restores has this execution had within a sliding window?
  :meth:`~StateStore.reserve_budget` counts and reserves in one atomic step, so concurrent
  instances can never exceed the limit; :meth:`~StateStore.refund_budget` returns a unit
  that turned out not to be consumed.

For operators and readiness probes: :meth:`~StateStore.forget` drops one event's outcome or
marker, :meth:`~StateStore.reset_budget` one execution's reservations, and
:meth:`~StateStore.check_writable` proves a write works now without leaving anything behind.

Three backends, chosen by :func:`open_store`'s URL (checked in full, without opening anything,
by :func:`validate_state_url`):

``memory://``
    In-process dicts behind a lock: tests, the demo and the operator CLI.
``sqlite:///path`` (optional ``?busy_timeout=SECONDS&mode=ro``)
    One file shared by the threads and processes of one machine (WAL journal, ``BEGIN
    IMMEDIATE`` writes). As in SQLAlchemy, the path is everything after ``sqlite:///``:
    ``sqlite:////tmp/state.db`` is the absolute ``/tmp/state.db``, ``sqlite:///state.db`` is
    ``state.db`` relative to the working directory at open time. ``mode=ro`` opens an
    existing file read-only (for inspection: every write raises :class:`StoreUnavailable`).
``redis://...`` / ``rediss://...``
    A Redis server shared by every instance anywhere; each operation is one Lua script.

All times come from the injectable ``clock`` (wall-clock seconds, which must agree across the
processes sharing a store); Redis' own key expiry is used only to collect garbage, a grace
period after the logical expiry, so clock skew between an instance and Redis never ends a
marker early. Every backend failure - unreachable, read-only, locked past the busy timeout -
raises :class:`StoreUnavailable`, whose message never contains a password from the URL.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from handler.redaction import redact_url

__all__ = [
    "DEFAULT_REDIS_PREFIX",
    "Claim",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    "StateStore",
    "StoreUnavailable",
    "open_store",
    "validate_state_url",
]

DEFAULT_REDIS_PREFIX = "obs-workflow-restore:"
DEFAULT_BUSY_TIMEOUT = 5.0  # seconds a SQLite write waits for another writer
REDIS_TIMEOUT = 2.0  # seconds to connect to / hear back from Redis: "down" must fail fast
REDIS_EXPIRY_GRACE_MS = 60_000  # Redis drops a key this long after its logical expiry
PURGE_BATCH = 32  # expired rows removed per SQLite write: bounded cost per call
REDIS_SCAN_LIMIT = 10_000  # keys recent() examines at most on Redis
REDIS_CALIBRATE_EVERY = 300.0  # seconds between re-reading Redis' clock (see RedisStore)
REDIS_LOST_LIMIT = 1_000  # claims/reservations whose reply was lost, kept to undo later

ACQUIRED = "acquired"
IN_PROGRESS = "in_progress"
DONE = "done"


class StoreUnavailable(Exception):
    """The store cannot be reached or written; the caller should treat it as transient.

    The message names the store by its redacted description and never contains a password.
    """


@dataclass(frozen=True)
class Claim:
    """The answer to :meth:`StateStore.claim`.

    ``state`` is ``"acquired"`` (``acquired`` is true and ``token`` identifies our marker),
    ``"in_progress"`` (someone else holds a live marker) or ``"done"`` (``record`` is the
    recorded outcome).
    """

    acquired: bool
    token: str
    state: str
    record: dict | None


class StateStore(Protocol):
    """What the pipeline needs from a store; see the module docstring for the semantics."""

    @property
    def describe(self) -> str:
        """A redacted one-line description for logs, e.g. ``redis://:***@host:6379/0``."""
        ...

    def claim(self, key: str, ttl: float) -> Claim:
        """Atomically answer "done", "in progress", or take a marker expiring in ``ttl`` s.

        An expired marker or an expired outcome counts as absent and is taken over.
        """
        ...

    def finish(self, key: str, token: str, record: dict, retention: float) -> None:
        """Record ``key``'s final outcome for ``retention`` s, replacing any marker.

        Recorded even if our marker expired meanwhile: the outcome is true regardless.
        """
        ...

    def release(self, key: str, token: str) -> None:
        """Drop the in-progress marker if ``token`` still owns it, so a redelivery can retry."""
        ...

    def reserve_budget(self, subject: str, limit: int, window: float) -> str | None:
        """Reserve one unit if fewer than ``limit`` were reserved in the last ``window`` s.

        Returns the reservation's token, or ``None`` when the budget is spent (always for
        ``limit < 1``). Concurrent callers can never exceed ``limit``.
        """
        ...

    def refund_budget(self, subject: str, token: str) -> None:
        """Remove a reservation: the operation turned out not to consume budget."""
        ...

    def budget_used(self, subject: str, window: float) -> int:
        """How many reservations ``subject`` holds from the last ``window`` seconds."""
        ...

    def recent(self, limit: int = 20, *, window: float | None = None) -> dict:
        """A snapshot for operators: ``{"dedupe": [...], "budget": [...]}``, newest first.

        ``dedupe`` items are ``{"key", "state", "expires_at", "record"}`` for live entries;
        ``budget`` items ``{"subject", "used", "last_at"}``. ``used`` counts reservations
        within ``window`` when given, else every reservation the store still holds.
        """
        ...

    def forget(self, key: str) -> bool:
        """Drop ``key``'s recorded outcome or in-progress marker, so the event can run again.

        For operators undoing a wrong outcome; returns whether a live entry was there.
        """
        ...

    def reset_budget(self, subject: str) -> int:
        """Drop every budget reservation of ``subject``; returns how many the store held.

        The count may include reservations already outside the window that the store had
        not collected yet.
        """
        ...

    def check_writable(self) -> None:
        """Raise :class:`StoreUnavailable` unless a write succeeds now (readiness probes).

        The probe write is undone in the same step: it leaves nothing behind.
        """
        ...

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers."""
        ...

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


# Query options a redis:// URL may carry: redis-py's own names, each with the check its value
# must pass. redis-py passes an unknown name on to the connection as a keyword argument and only
# fails (with a TypeError) at the first command, so every name is checked here, at load time.
_REDIS_NUMBER_OPTIONS = ("socket_timeout", "socket_connect_timeout")
_REDIS_FLAG_OPTIONS = ("socket_keepalive", "retry_on_timeout", "ssl_check_hostname")
_REDIS_TEXT_OPTIONS = ("client_name", "username", "password")
_REDIS_TLS_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_REDIS_OPTIONS = frozenset(
    (
        "db",
        "health_check_interval",
        "max_connections",
        "protocol",
        *_REDIS_NUMBER_OPTIONS,
        *_REDIS_FLAG_OPTIONS,
        *_REDIS_TEXT_OPTIONS,
        *_REDIS_TLS_OPTIONS,
    )
)
_FLAG_VALUES = ("true", "false", "1", "0", "yes", "no", "on", "off")


def validate_state_url(url: str) -> None:
    """Check a state store URL completely, without opening anything or importing redis-py.

    Raises :class:`ValueError` naming the part that is wrong - the scheme, the SQLite path or
    an option, the Redis host, port, database index or an option - so a configuration error
    stops the function at start-up instead of failing every delivery. Messages never contain
    the URL itself, a password or the value of an option that may be secret.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("the state store URL is empty: use memory://, sqlite:/// or redis://")
    if any(ord(char) < 32 or ord(char) == 127 for char in url):
        raise ValueError("the state store URL contains a control character")
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        if url.split(":", 1)[1].strip("/"):
            raise ValueError("a memory:// store URL takes no path or options")
    elif scheme == "sqlite":
        _parse_sqlite_url(url)
    elif scheme in ("redis", "rediss"):
        _validate_redis_url(url, tls=scheme == "rediss")
    elif not scheme:
        raise ValueError("the state store URL has no scheme: use memory://, sqlite:/// or redis://")
    else:
        raise ValueError(
            f"unsupported state store scheme {scheme!r}: use memory://, sqlite:///, redis:// "
            "or rediss://"
        )


def _validate_redis_url(url: str, *, tls: bool) -> None:
    parts = urlsplit(url)
    if parts.fragment:
        raise ValueError("a Redis store URL takes no #fragment")
    if not parts.hostname:
        raise ValueError("a Redis store URL needs a host, e.g. redis://127.0.0.1:6379/0")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError("the Redis port must be a whole number from 1 to 65535")
    path = parts.path.strip("/")
    if path and not (path.isascii() and path.isdigit()):
        raise ValueError("the Redis database index (the URL path) must be a whole number >= 0")
    seen = set()
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in _REDIS_OPTIONS:
            known = ", ".join(sorted(_REDIS_OPTIONS))
            raise ValueError(f"unsupported Redis store option {name[:40]!r} (known: {known})")
        if name in seen:
            raise ValueError(f"Redis store option {name!r} is given twice")
        seen.add(name)
        if name in (*_REDIS_TLS_OPTIONS, "ssl_check_hostname") and not tls:
            raise ValueError(f"Redis store option {name!r} needs a rediss:// (TLS) URL")
        _check_redis_option(name, value)


def _check_redis_option(name: str, value: str) -> None:
    shown = ascii(value[:40])
    if name in _REDIS_NUMBER_OPTIONS:
        try:
            _positive(name, float(value))
        except ValueError:
            raise ValueError(f"{name} must be a positive number of seconds, got {shown}") from None
    elif name in _REDIS_FLAG_OPTIONS:
        if value.lower() not in _FLAG_VALUES:
            raise ValueError(f"{name} must be true or false, got {shown}")
    elif name in ("db", "health_check_interval"):  # redis-py reads both as int
        if not (value.isascii() and value.isdigit()):
            raise ValueError(f"{name} must be a whole number >= 0, got {shown}")
    elif name == "max_connections":
        if not (value.isascii() and value.isdigit() and int(value) >= 1):
            raise ValueError(f"max_connections must be a whole number >= 1, got {shown}")
    elif name == "protocol":
        if value not in ("2", "3"):
            raise ValueError(f"protocol must be 2 or 3, got {shown}")
    elif name == "ssl_cert_reqs":
        if value.lower() not in ("none", "optional", "required"):
            raise ValueError(f"ssl_cert_reqs must be none, optional or required, got {shown}")
    elif not value:  # a text option, possibly secret: its value is never shown
        raise ValueError(f"Redis store option {name!r} is empty")


def open_store(
    url: str,
    *,
    clock: Callable[[], float] = time.time,
    key_prefix: str = DEFAULT_REDIS_PREFIX,
) -> StateStore:
    """Open the store named by ``url`` (see the module docstring for the URL forms).

    An unknown scheme or a malformed URL raises :class:`ValueError` (naming the scheme, never
    echoing the URL). ``memory://`` and ``sqlite:///`` open eagerly, so a SQLite file that
    cannot be created or read raises :class:`StoreUnavailable` here. Redis connects lazily -
    an instance should start, and answer with a retryable failure, while Redis is down - so
    call :meth:`StateStore.ping` to check it at start-up. ``key_prefix`` namespaces the
    Redis keys.
    """
    validate_state_url(url)
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        return MemoryStore(clock=clock)
    if scheme == "sqlite":
        path, busy_timeout, read_only = _parse_sqlite_url(url)
        return SQLiteStore(path, clock=clock, busy_timeout=busy_timeout, read_only=read_only)
    return RedisStore(url, clock=clock, key_prefix=key_prefix)


def open_store_deferred(url: str, *, clock: Callable[[], float] = time.time) -> StateStore:
    """Like :func:`open_store`, but a backend that cannot be opened yet does not fail here.

    A function instance must start, and answer every delivery with a retryable failure, while
    its store is down; the store is opened again on each use until it succeeds.
    """
    try:
        return open_store(url, clock=clock)
    except StoreUnavailable:
        return DeferredStore(url, clock=clock)


class DeferredStore:
    """A store whose backend could not be opened: each use tries again, failing closed."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        self._url = url
        self._clock = clock
        self._store: StateStore | None = None
        self._lock = threading.Lock()
        self.describe = redact_url(url)

    def __repr__(self) -> str:
        return f"DeferredStore({self.describe!r})"

    def __getattr__(self, name: str) -> object:
        # claim, finish, release, reserve_budget, ... of the real store, once it opens.
        return getattr(self._open(), name)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def _open(self) -> StateStore:
        with self._lock:
            if self._store is None:
                self._store = open_store(self._url, clock=self._clock)
            return self._store


# --- shared helpers -------------------------------------------------------------------------


def _new_token() -> str:
    return secrets.token_hex(16)


def _dump_record(record: dict) -> str:
    """Serialise before any I/O, so a bad record fails the same way on every backend."""
    if not isinstance(record, dict):
        raise TypeError(f"record must be a dict, not {type(record).__name__}")
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, not {type(limit).__name__}")
    return limit


def _newest(items: list[dict], by: str, limit: int) -> list[dict]:
    items.sort(key=lambda item: item[by], reverse=True)
    return items[: max(limit, 0)]


# --- memory ---------------------------------------------------------------------------------


class MemoryStore:
    """In-process store: correct for the threads of one process, invisible to any other.

    Expired entries are swept once the calls since the last sweep outnumber the entries, so
    the sweeping cost per call stays constant on average.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (state, token, expires_at, record_json, updated_at)
        self._dedupe: dict[str, tuple[str, str, float, str | None, float]] = {}
        # subject -> token -> (at, expires_at)
        self._budget: dict[str, dict[str, tuple[float, float]]] = {}
        self._calls = 0

    @property
    def describe(self) -> str:
        return "memory://"

    def __repr__(self) -> str:
        return "MemoryStore('memory://')"

    def claim(self, key: str, ttl: float) -> Claim:
        _check_text("key", key)
        ttl = _positive("ttl", ttl)
        with self._lock:
            now = self._clock()
            self._sweep(now)
            entry = self._dedupe.get(key)
            if entry is not None and entry[2] > now:
                if entry[0] == DONE:
                    return Claim(False, "", DONE, json.loads(entry[3] or "{}"))
                return Claim(False, "", IN_PROGRESS, None)
            token = _new_token()
            self._dedupe[key] = (IN_PROGRESS, token, now + ttl, None, now)
            return Claim(True, token, ACQUIRED, None)

    def finish(self, key: str, token: str, record: dict, retention: float) -> None:
        _check_text("key", key)
        retention = _positive("retention", retention)
        data = _dump_record(record)
        with self._lock:
            now = self._clock()
            self._dedupe[key] = (DONE, token, now + retention, data, now)

    def release(self, key: str, token: str) -> None:
        _check_text("key", key)
        with self._lock:
            entry = self._dedupe.get(key)
            if entry is not None and entry[0] == IN_PROGRESS and entry[1] == token:
                del self._dedupe[key]

    def reserve_budget(self, subject: str, limit: int, window: float) -> str | None:
        _check_text("subject", subject)
        limit = _check_limit(limit)
        window = _positive("window", window)
        with self._lock:
            now = self._clock()
            self._sweep(now)
            held = self._budget.get(subject, {})
            used = sum(1 for at, _ in held.values() if at > now - window)
            if used >= limit:
                return None
            token = _new_token()
            self._budget.setdefault(subject, {})[token] = (now, now + window)
            return token

    def refund_budget(self, subject: str, token: str) -> None:
        with self._lock:
            held = self._budget.get(subject)
            if held is not None:
                held.pop(token, None)
                if not held:
                    del self._budget[subject]

    def budget_used(self, subject: str, window: float) -> int:
        window = _positive("window", window)
        with self._lock:
            now = self._clock()
            held = self._budget.get(subject, {})
            return sum(1 for at, _ in held.values() if at > now - window)

    def recent(self, limit: int = 20, *, window: float | None = None) -> dict:
        with self._lock:
            now = self._clock()
            dedupe = [
                {
                    "key": key,
                    "state": state,
                    "expires_at": expires_at,
                    "record": json.loads(data) if data is not None else None,
                    "updated_at": updated_at,
                }
                for key, (state, _, expires_at, data, updated_at) in self._dedupe.items()
                if expires_at > now
            ]
            budget = []
            for subject, held in self._budget.items():
                live = [
                    at
                    for at, expires_at in held.values()
                    if (at > now - window if window is not None else expires_at > now)
                ]
                if live:
                    budget.append({"subject": subject, "used": len(live), "last_at": max(live)})
        dedupe = _newest(dedupe, "updated_at", limit)
        for item in dedupe:
            del item["updated_at"]
        return {"dedupe": dedupe, "budget": _newest(budget, "last_at", limit)}

    def forget(self, key: str) -> bool:
        _check_text("key", key)
        with self._lock:
            entry = self._dedupe.pop(key, None)
            return entry is not None and entry[2] > self._clock()

    def reset_budget(self, subject: str) -> int:
        _check_text("subject", subject)
        with self._lock:
            return len(self._budget.pop(subject, {}))

    def check_writable(self) -> None:
        return None  # process memory: writable while the process lives

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _sweep(self, now: float) -> None:
        """Drop expired entries, amortised: one full pass per ``len(entries)`` calls."""
        self._calls += 1
        if self._calls < max(64, len(self._dedupe) + len(self._budget)):
            return
        self._calls = 0
        for key in [k for k, entry in self._dedupe.items() if entry[2] <= now]:
            del self._dedupe[key]
        for subject in list(self._budget):
            held = self._budget[subject]
            for token in [t for t, (_, expires_at) in held.items() if expires_at <= now]:
                del held[token]
            if not held:
                del self._budget[subject]


# --- SQLite ---------------------------------------------------------------------------------

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
        PRIMARY KEY (subject, token)
    )""",
    "CREATE INDEX IF NOT EXISTS budget_expires_at ON budget (expires_at)",
)


def _parse_sqlite_url(url: str) -> tuple[str, float, bool]:
    """Split ``sqlite:///PATH[?busy_timeout=S&mode=ro|rw]`` into its parts."""
    prefix = "sqlite:///"
    if url[: len(prefix)].lower() != prefix:
        raise ValueError("a SQLite store URL is sqlite:/// followed by a path")
    path, _, query = url[len(prefix) :].partition("?")
    if not path or path == ":memory:":
        raise ValueError("a SQLite store URL needs a file path (use memory:// for no file)")
    busy_timeout, read_only = DEFAULT_BUSY_TIMEOUT, False
    seen = set()
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in seen:
            raise ValueError(f"SQLite store option {name[:40]!r} is given twice")
        seen.add(name)
        if name == "busy_timeout":
            try:
                busy_timeout = _positive("busy_timeout", float(value))
            except ValueError:
                raise ValueError(
                    f"busy_timeout must be a positive number of seconds, got {value[:40]!a}"
                ) from None
        elif name == "mode":
            if value not in ("ro", "rw"):
                raise ValueError(f"mode must be ro or rw, got {value[:40]!a}")
            read_only = value == "ro"
        else:
            raise ValueError(
                f"unsupported SQLite store option {name[:40]!r} (known: busy_timeout, mode)"
            )
    return path, busy_timeout, read_only


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


def _close_in_owner(connection: sqlite3.Connection, pid: int) -> None:
    if os.getpid() == pid:
        connection.close()


class SQLiteStore:
    """A SQLite file shared by the threads and processes of one machine.

    Each thread gets its own connection (a connection inherited across ``fork`` is never
    reused); every write runs in a ``BEGIN IMMEDIATE`` transaction, which takes the file's
    write lock before reading, so the read-decide-write steps of :meth:`claim` and
    :meth:`reserve_budget` are atomic across processes. A writer waits ``busy_timeout``
    seconds for another one, then the call raises :class:`StoreUnavailable`. Every write also
    deletes up to ``PURGE_BATCH`` expired rows. The parent directory is created if missing.
    """

    def __init__(
        self,
        path: str,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        read_only: bool = False,
    ) -> None:
        self.path = os.path.abspath(path)
        self._clock = clock
        self._busy_timeout = _positive("busy_timeout", busy_timeout)
        self._read_only = read_only
        self._local = threading.local()
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._registry_lock = threading.Lock()
        self._writer_lock = threading.Lock()
        self._writer_pid = os.getpid()
        self._open_file()

    @property
    def describe(self) -> str:
        return f"sqlite:///{self.path}" + ("?mode=ro" if self._read_only else "")

    def __repr__(self) -> str:
        return f"SQLiteStore({self.describe!r})"

    def claim(self, key: str, ttl: float) -> Claim:
        _check_text("key", key)
        ttl = _positive("ttl", ttl)
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
            token = _new_token()
            db.execute(
                "INSERT OR REPLACE INTO dedupe (key, state, token, expires_at, record, updated_at)"
                " VALUES (?, ?, ?, ?, NULL, ?)",
                (key, IN_PROGRESS, token, now + ttl, now),
            )
            return Claim(True, token, ACQUIRED, None)

    def finish(self, key: str, token: str, record: dict, retention: float) -> None:
        _check_text("key", key)
        retention = _positive("retention", retention)
        data = _dump_record(record)
        with self._write() as db:
            now = self._clock()
            db.execute(
                "INSERT OR REPLACE INTO dedupe (key, state, token, expires_at, record, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key, DONE, token, now + retention, data, now),
            )

    def release(self, key: str, token: str) -> None:
        _check_text("key", key)
        with self._write() as db:
            db.execute(
                "DELETE FROM dedupe WHERE key = ? AND token = ? AND state = ?",
                (key, token, IN_PROGRESS),
            )

    def reserve_budget(self, subject: str, limit: int, window: float) -> str | None:
        _check_text("subject", subject)
        limit = _check_limit(limit)
        window = _positive("window", window)
        with self._write() as db:
            now = self._clock()
            self._purge(db, now)
            (used,) = db.execute(
                "SELECT COUNT(*) FROM budget WHERE subject = ? AND at > ?", (subject, now - window)
            ).fetchone()
            if used >= limit:
                return None
            token = _new_token()
            db.execute(
                "INSERT INTO budget (subject, token, at, expires_at) VALUES (?, ?, ?, ?)",
                (subject, token, now, now + window),
            )
            return token

    def refund_budget(self, subject: str, token: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM budget WHERE subject = ? AND token = ?", (subject, token))

    def budget_used(self, subject: str, window: float) -> int:
        window = _positive("window", window)
        with self._read() as db:
            (used,) = db.execute(
                "SELECT COUNT(*) FROM budget WHERE subject = ? AND at > ?",
                (subject, self._clock() - window),
            ).fetchone()
        return int(used)

    def recent(self, limit: int = 20, *, window: float | None = None) -> dict:
        with self._read() as db:
            now = self._clock()
            rows = db.execute(
                "SELECT key, state, expires_at, record FROM dedupe WHERE expires_at > ?"
                " ORDER BY updated_at DESC LIMIT ?",
                (now, limit),
            ).fetchall()
            if window is None:
                where, bound = "expires_at > ?", now
            else:
                where, bound = "at > ?", now - window
            budget = db.execute(
                f"SELECT subject, COUNT(*), MAX(at) FROM budget WHERE {where}"  # noqa: S608
                " GROUP BY subject ORDER BY MAX(at) DESC LIMIT ?",
                (bound, limit),
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
        _check_text("key", key)
        with self._write() as db:
            live = db.execute(
                "SELECT COUNT(*) FROM dedupe WHERE key = ? AND expires_at > ?",
                (key, self._clock()),
            ).fetchone()[0]
            db.execute("DELETE FROM dedupe WHERE key = ?", (key,))
        return bool(live)

    def reset_budget(self, subject: str) -> int:
        _check_text("subject", subject)
        with self._write() as db:
            return db.execute("DELETE FROM budget WHERE subject = ?", (subject,)).rowcount

    def check_writable(self) -> None:
        probe = f"\x00check-writable:{_new_token()}"  # no event id starts with NUL
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
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    db.execute(statement)
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
        db.execute("PRAGMA synchronous = FULL")  # a committed claim survives a power cut
        return db

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
        except (sqlite3.Error, OSError) as exc:
            self._discard_connection()
            raise self._unavailable(exc) from None

    def _rollback(self, db: sqlite3.Connection) -> None:
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
        except sqlite3.Error:
            self._discard_connection()

    @staticmethod
    def _purge(db: sqlite3.Connection, now: float) -> None:
        for table in ("dedupe", "budget"):
            db.execute(
                f"DELETE FROM {table} WHERE rowid IN"  # noqa: S608 - fixed table names
                f" (SELECT rowid FROM {table} WHERE expires_at <= ? LIMIT ?)",
                (now, PURGE_BATCH),
            )


# --- Redis ----------------------------------------------------------------------------------

# Every script that takes something (a marker, a budget unit) first compares Redis' own clock
# with the caller's deadline, in Redis time (the last ARGV): a script that a stalled server runs
# only after the caller gave up must not take anything the caller will never use or release.
_LATE = "late"
_DEADLINE_LUA = """
local clock = redis.call('TIME')
if tonumber(clock[1]) + tonumber(clock[2]) / 1000000 > tonumber(ARGV[#ARGV]) then
  return {'late', ''}
end
"""

# KEYS[1] marker hash; ARGV: now, token, expires_at, redis_ttl_ms, deadline
_CLAIM_LUA = (
    _DEADLINE_LUA
    + """
local cur = redis.call('HMGET', KEYS[1], 'state', 'token', 'expires_at', 'record')
if cur[1] and tonumber(cur[3]) > tonumber(ARGV[1]) then
  if cur[1] == 'done' then return {'done', cur[4] or ''} end
  if cur[2] == ARGV[2] then return {'acquired', ''} end
  return {'in_progress', ''}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', 'in_progress', 'token', ARGV[2],
           'expires_at', ARGV[3], 'updated_at', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {'acquired', ''}
"""
)

# KEYS[1] marker hash; ARGV: now, token, expires_at, record, redis_ttl_ms
_FINISH_LUA = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', 'done', 'token', ARGV[2], 'expires_at', ARGV[3],
           'record', ARGV[4], 'updated_at', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""

# KEYS[1] marker hash; ARGV: token
_RELEASE_LUA = """
local cur = redis.call('HMGET', KEYS[1], 'state', 'token')
if cur[1] == 'in_progress' and cur[2] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] marker hash; ARGV: now. Answers 1 when a live entry was dropped.
_FORGET_LUA = """
local expires_at = redis.call('HGET', KEYS[1], 'expires_at')
redis.call('DEL', KEYS[1])
if expires_at and tonumber(expires_at) > tonumber(ARGV[1]) then return 1 end
return 0
"""

# KEYS[1] budget sorted set. Answers how many reservations it held.
_RESET_BUDGET_LUA = """
local held = redis.call('ZCARD', KEYS[1])
redis.call('DEL', KEYS[1])
return held
"""

# KEYS[1] a probe key nobody else uses. A replica, a full maxmemory or min-replicas-to-write
# refuse the SET; PX collects the key should the DEL never run.
_CHECK_WRITABLE_LUA = """
redis.call('SET', KEYS[1], '1', 'PX', 10000)
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS[1] budget sorted set (member token, score time); ARGV: now, window_start, limit,
# token, redis_ttl_ms, deadline. Answers {token} when reserved, {false} when spent.
_RESERVE_LUA = (
    _DEADLINE_LUA
    + """
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then return {ARGV[4]} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return {'spent'} end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[5]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
return {ARGV[4]}
"""
)


def _redis_ttl_ms(seconds: float) -> int:
    return math.ceil(seconds * 1000) + REDIS_EXPIRY_GRACE_MS


def _redis_secrets(url: str) -> list[str]:
    """Every form in which a URL's password could show up in a message."""
    parts = urlsplit(url)
    found = []
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if "pass" in name.lower() and value:
            found += [value, quote(value)]
    return sorted(set(found), key=len, reverse=True)


class RedisStore:
    """A Redis server shared by every instance; one Lua script per read-decide-write step.

    A marker or outcome is a hash ``<prefix>dedupe:<key>``; a budget is a sorted set
    ``<prefix>budget:<subject>`` of reservation tokens scored by time. Connections are made
    lazily with 2-second connect/read timeouts (URL query options such as
    ``socket_timeout`` override them) and one immediate retry; the scripts are idempotent
    for a given token, so a retry after a lost reply cannot take a second budget unit or
    turn our own marker into someone else's.

    A stalled server (``SIGSTOP``, a long fork, a saturated network) still holds the commands
    it was sent, and runs them once it resumes - after the caller gave up. So that such a
    late :meth:`claim` cannot leave an in-progress marker that blocks every redelivery for the
    whole claim TTL (nor a late :meth:`reserve_budget` spend a unit for nothing), each call
    carries a deadline - when the call started plus the socket timeout, in Redis' own clock -
    and the script refuses to act past it. Redis' clock is read with ``TIME`` now and then
    and mapped onto this process' monotonic clock, so the wall clocks need not agree; an
    answer "late" that does arrive only means the mapping drifted: it is read again and the
    call retried once. A claim or reservation whose reply never came back is remembered and
    undone, best effort, at the next use of the store.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        key_prefix: str = DEFAULT_REDIS_PREFIX,
    ) -> None:
        self._clock = clock
        self._prefix = key_prefix
        self._describe = redact_url(url)
        self._secrets = _redis_secrets(url)
        try:
            import redis  # lazily: only deployments that use Redis install redis-py
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise StoreUnavailable(
                f"state store {self._describe} needs redis-py: "
                "pip install 'obs-workflow-restore[redis]'"
            ) from None
        self._errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)
        try:
            self._redis = redis.Redis.from_url(
                url,
                socket_connect_timeout=REDIS_TIMEOUT,
                socket_timeout=REDIS_TIMEOUT,
                retry=Retry(NoBackoff(), 1),
                health_check_interval=30,
                decode_responses=True,
            )
        except (ValueError, TypeError) as exc:
            raise ValueError(f"invalid Redis store URL: {self._scrub(str(exc))}") from None
        # How long one attempt waits for its answer: past it the caller has given up.
        self._answer_within = float(
            self._redis.connection_pool.connection_kwargs.get("socket_timeout") or REDIS_TIMEOUT
        )
        self._redis_minus_monotonic: float | None = None
        self._calibrated_at = -math.inf
        self._lost: list[tuple[str, str, str]] = []  # ("claim"|"budget", key or subject, token)
        self._lost_lock = threading.Lock()
        self._claim = self._redis.register_script(_CLAIM_LUA)
        self._finish = self._redis.register_script(_FINISH_LUA)
        self._release = self._redis.register_script(_RELEASE_LUA)
        self._reserve = self._redis.register_script(_RESERVE_LUA)
        self._forget = self._redis.register_script(_FORGET_LUA)
        self._reset_budget = self._redis.register_script(_RESET_BUDGET_LUA)
        self._check_writable = self._redis.register_script(_CHECK_WRITABLE_LUA)

    @property
    def describe(self) -> str:
        return self._describe

    def __repr__(self) -> str:
        return f"RedisStore({self._describe!r})"

    def claim(self, key: str, ttl: float) -> Claim:
        _check_text("key", key)
        ttl = _positive("ttl", ttl)
        token = _new_token()
        now = self._clock()
        self._undo_lost()
        with self._remember_if_lost("claim", key, token), self._guard():
            state, record = self._in_time(
                self._claim,
                keys=[self._dedupe_key(key)],
                args=[repr(now), token, repr(now + ttl), _redis_ttl_ms(ttl)],
            )
        if state == DONE:
            return Claim(False, "", DONE, json.loads(record or "{}"))
        if state == IN_PROGRESS:
            return Claim(False, "", IN_PROGRESS, None)
        return Claim(True, token, ACQUIRED, None)

    def finish(self, key: str, token: str, record: dict, retention: float) -> None:
        _check_text("key", key)
        retention = _positive("retention", retention)
        data = _dump_record(record)
        now = self._clock()
        self._undo_lost()
        with self._guard():
            self._finish(
                keys=[self._dedupe_key(key)],
                args=[repr(now), token, repr(now + retention), data, _redis_ttl_ms(retention)],
            )

    def release(self, key: str, token: str) -> None:
        _check_text("key", key)
        self._undo_lost()
        with self._guard():
            self._release(keys=[self._dedupe_key(key)], args=[token])

    def reserve_budget(self, subject: str, limit: int, window: float) -> str | None:
        _check_text("subject", subject)
        limit = _check_limit(limit)
        window = _positive("window", window)
        if limit < 1:
            return None
        token = _new_token()
        now = self._clock()
        self._undo_lost()
        with self._remember_if_lost("budget", subject, token), self._guard():
            (answer, *_) = self._in_time(
                self._reserve,
                keys=[self._budget_key(subject)],
                args=[repr(now), repr(now - window), limit, token, _redis_ttl_ms(window)],
            )
        return token if answer == token else None

    def refund_budget(self, subject: str, token: str) -> None:
        self._undo_lost()
        with self._guard():
            self._redis.zrem(self._budget_key(subject), token)

    def budget_used(self, subject: str, window: float) -> int:
        window = _positive("window", window)
        since = self._clock() - window
        with self._guard():
            return int(self._redis.zcount(self._budget_key(subject), f"({since!r}", "+inf"))

    def recent(self, limit: int = 20, *, window: float | None = None) -> dict:
        """See :meth:`StateStore.recent`; here it SCANs at most ``REDIS_SCAN_LIMIT`` keys."""
        now = self._clock()
        with self._guard():
            dedupe = []
            keys = self._scan("dedupe:")
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, "state", "expires_at", "record", "updated_at")
            for key, (state, expires_at, record, updated_at) in zip(
                keys, pipe.execute(), strict=True
            ):
                if state is None or float(expires_at) <= now:
                    continue
                dedupe.append(
                    {
                        "key": key[len(self._prefix) + len("dedupe:") :],
                        "state": state,
                        "expires_at": float(expires_at),
                        "record": json.loads(record) if record is not None else None,
                        "updated_at": float(updated_at),
                    }
                )
            budget = []
            keys = self._scan("budget:")
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                low = f"({now - window!r}" if window is not None else "-inf"
                pipe.zcount(key, low, "+inf")
                pipe.zrange(key, -1, -1, withscores=True)
            answers = pipe.execute()
            for index, key in enumerate(keys):
                used, last = answers[2 * index], answers[2 * index + 1]
                if used and last:
                    budget.append(
                        {
                            "subject": key[len(self._prefix) + len("budget:") :],
                            "used": int(used),
                            "last_at": float(last[0][1]),
                        }
                    )
        dedupe = _newest(dedupe, "updated_at", limit)
        for item in dedupe:
            del item["updated_at"]
        return {"dedupe": dedupe, "budget": _newest(budget, "last_at", limit)}

    def forget(self, key: str) -> bool:
        _check_text("key", key)
        with self._guard():
            return bool(self._forget(keys=[self._dedupe_key(key)], args=[repr(self._clock())]))

    def reset_budget(self, subject: str) -> int:
        _check_text("subject", subject)
        with self._guard():
            return int(self._reset_budget(keys=[self._budget_key(subject)]))

    def check_writable(self) -> None:
        self._undo_lost()
        with self._guard():
            self._check_writable(keys=[f"{self._prefix}check-writable:{_new_token()}"])

    def ping(self) -> None:
        self._undo_lost()
        with self._guard():
            self._redis.ping()

    def close(self) -> None:
        try:
            self._redis.close()
            self._redis.connection_pool.disconnect()
        except self._errors:
            pass

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # internals

    def _dedupe_key(self, key: str) -> str:
        return f"{self._prefix}dedupe:{key}"

    def _budget_key(self, subject: str) -> str:
        return f"{self._prefix}budget:{subject}"

    def _scan(self, kind: str) -> list[str]:
        pattern = _glob_escape(self._prefix + kind) + "*"
        keys = []
        for key in self._redis.scan_iter(match=pattern, count=500):
            keys.append(key)
            if len(keys) >= REDIS_SCAN_LIMIT:
                break
        return keys

    def _in_time(self, script: Callable[..., list], keys: list[str], args: list) -> list:
        """Run a deadline-checking script; an answer "late" that arrives means drift: retry."""
        for attempt in range(2):
            answer = script(keys=keys, args=[*args, repr(self._deadline(fresh=attempt > 0))])
            if not answer or answer[0] != _LATE:
                return answer
        raise StoreUnavailable(
            f"state store {self._describe} unavailable: answers arrive after the "
            f"{self._answer_within:g}s socket timeout"
        )

    def _deadline(self, *, fresh: bool) -> float:
        """Now plus one attempt's socket timeout, in Redis' clock (seconds since the epoch)."""
        if fresh or time.monotonic() - self._calibrated_at > REDIS_CALIBRATE_EVERY:
            seconds, microseconds = self._redis.time()
            after = time.monotonic()
            # Redis read its clock at some moment before `after`; assuming `after` can only
            # make the deadline earlier than the caller's, never later.
            self._redis_minus_monotonic = seconds + microseconds / 1e6 - after
            self._calibrated_at = after
        assert self._redis_minus_monotonic is not None
        return time.monotonic() + self._redis_minus_monotonic + self._answer_within

    @contextmanager
    def _remember_if_lost(self, kind: str, name: str, token: str) -> Iterator[None]:
        """If the call fails, its script may still have run: remember what to undo."""
        try:
            yield
        except StoreUnavailable:
            with self._lost_lock:
                if len(self._lost) < REDIS_LOST_LIMIT:
                    self._lost.append((kind, name, token))
            raise

    def _undo_lost(self) -> None:
        """Release markers and refund units taken by calls whose reply was lost (best effort).

        Safe at any later time: the caller gave up after the script's deadline, so a script
        not yet run never acts, and the release and refund only touch our own token.
        """
        with self._lost_lock:
            lost, self._lost = self._lost, []
        for index, (kind, name, token) in enumerate(lost):
            try:
                if kind == "claim":
                    self._release(keys=[self._dedupe_key(name)], args=[token])
                else:
                    self._redis.zrem(self._budget_key(name), token)
            except self._errors:
                with self._lost_lock:
                    self._lost[:0] = lost[index:]  # still down: try again next time
                return

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn every Redis failure into StoreUnavailable with a password-free message."""
        try:
            yield
        except self._errors as exc:
            detail = self._scrub(f"{type(exc).__name__}: {exc}")
            raise StoreUnavailable(f"state store {self._describe} unavailable: {detail}") from None


def _glob_escape(text: str) -> str:
    """Escape the glob metacharacters of Redis' SCAN MATCH."""
    escaped = text.replace("\\", "\\\\")
    for char in "*?[]":
        escaped = escaped.replace(char, "\\" + char)
    return escaped
