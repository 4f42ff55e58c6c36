"""Opening a store from its URL: the scheme chooses the backend.

:func:`open_store` checks the whole URL before it opens anything; :func:`open_store_deferred`
lets a function instance start while its store is down. The backends live in their own
modules; importing them does not import redis-py, which the Redis backend loads only when a
Redis store is made.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from handler.redaction import redact_url
from handler.store.base import StateStore, StoreUnavailable
from handler.store.url import parse_sqlite_url, validate_state_url


def open_store(
    url: str,
    *,
    clock: Callable[[], float] = time.time,
    key_prefix: str | None = None,
) -> StateStore:
    """Open the store named by ``url`` (the URL forms: :mod:`handler.store.url`).

    An unknown scheme or a malformed URL raises :class:`ValueError` (naming the scheme, never
    echoing the URL). ``memory://`` and ``sqlite:///`` open eagerly, so a SQLite file that
    cannot be created or read raises :class:`StoreUnavailable` here. Redis connects lazily -
    an instance should start, and answer with a retryable failure, while Redis is down - so
    call :meth:`StateStore.ping` to check it at start-up. ``key_prefix`` namespaces the
    Redis keys (default: ``DEFAULT_REDIS_PREFIX``).

    Only the named backend's module is imported (a cold start on SQLite reads no other).
    """
    validate_state_url(url)
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        from handler.store.memory import MemoryStore

        return MemoryStore(clock=clock)
    if scheme == "sqlite":
        from handler.store.sqlite import SQLiteStore

        parts = parse_sqlite_url(url)
        return SQLiteStore(
            parts.path,
            clock=clock,
            busy_timeout=parts.busy_timeout,
            read_only=parts.read_only,
            synchronous=parts.synchronous,
        )
    from handler.store.redis import DEFAULT_REDIS_PREFIX, RedisStore

    prefix = DEFAULT_REDIS_PREFIX if key_prefix is None else key_prefix
    return RedisStore(url, clock=clock, key_prefix=prefix)


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
