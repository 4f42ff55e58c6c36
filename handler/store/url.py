"""State store URLs, checked in full before anything is opened.

``memory://``
    In-process dicts behind a lock: tests, the demo and the operator CLI.
``sqlite:///path`` (optional ``?busy_timeout=SECONDS&mode=ro&synchronous=full``)
    One file shared by the threads and processes of one machine. As in SQLAlchemy, the path
    is everything after ``sqlite:///``: ``sqlite:////tmp/state.db`` is the absolute
    ``/tmp/state.db``, ``sqlite:///state.db`` is ``state.db`` relative to the working
    directory at open time. ``mode=ro`` opens an existing file read-only (for inspection:
    every write raises :class:`~handler.store.base.StoreUnavailable`). ``synchronous`` is
    ``normal`` (the default: no fsync per commit in WAL mode; a power cut or OS crash - not a
    process crash - may lose the last commits) or ``full`` (every commit is on disk before it
    returns); see :class:`~handler.store.sqlite.SQLiteStore`.
``redis://...`` / ``rediss://...``
    A Redis server shared by every instance anywhere; query options ``socket_timeout`` and
    ``socket_connect_timeout`` (seconds), and for ``rediss://`` ``ssl_cert_reqs`` and
    ``ssl_ca_certs``.

Settings check ``RESTORE_STATE_URL`` with :func:`validate_state_url` when the function
starts, so a configuration error stops it there instead of failing every delivery. That check
runs on FunctionGraph's cold path: this module uses the standard library only - it opens no
file and never imports redis-py.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

from handler.store.base import positive_seconds

DEFAULT_BUSY_TIMEOUT = 5.0  # seconds a SQLite write waits for another writer
SYNCHRONOUS_MODES = ("normal", "full")
DEFAULT_SYNCHRONOUS = "normal"

# Query options a redis:// URL may carry - the README's: the two timeouts, and for rediss://
# how the server's certificate is checked (a private CA, as some managed Redis use). Anything
# else in the query is refused by name at load time: redis-py would pass an unknown name on
# to the connection and only fail (with a TypeError) at the first command.
_REDIS_NUMBER_OPTIONS = ("socket_timeout", "socket_connect_timeout")
_REDIS_TLS_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs")
_REDIS_OPTIONS = frozenset((*_REDIS_NUMBER_OPTIONS, *_REDIS_TLS_OPTIONS))


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
        parse_sqlite_url(url)
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
        if name in _REDIS_TLS_OPTIONS and not tls:
            raise ValueError(f"Redis store option {name!r} needs a rediss:// (TLS) URL")
        _check_redis_option(name, value)


def _check_redis_option(name: str, value: str) -> None:
    shown = ascii(value[:40])
    if name in _REDIS_NUMBER_OPTIONS:
        try:
            positive_seconds(name, float(value))
        except ValueError:
            raise ValueError(f"{name} must be a positive number of seconds, got {shown}") from None
    elif name == "ssl_cert_reqs":
        if value.lower() not in ("none", "optional", "required"):
            raise ValueError(f"ssl_cert_reqs must be none, optional or required, got {shown}")
    elif not value:  # ssl_ca_certs: a path
        raise ValueError(f"Redis store option {name!r} is empty")


class SQLiteURL(NamedTuple):
    """The parts of a ``sqlite:///`` URL."""

    path: str
    busy_timeout: float
    read_only: bool
    synchronous: str  # "normal" or "full"


def parse_sqlite_url(url: str) -> SQLiteURL:
    """Split ``sqlite:///PATH[?busy_timeout=S&mode=ro|rw&synchronous=normal|full]``."""
    prefix = "sqlite:///"
    if url[: len(prefix)].lower() != prefix:
        raise ValueError("a SQLite store URL is sqlite:/// followed by a path")
    path, _, query = url[len(prefix) :].partition("?")
    if not path or path == ":memory:":
        raise ValueError("a SQLite store URL needs a file path (use memory:// for no file)")
    busy_timeout, read_only, synchronous = DEFAULT_BUSY_TIMEOUT, False, DEFAULT_SYNCHRONOUS
    seen = set()
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in seen:
            raise ValueError(f"SQLite store option {name[:40]!r} is given twice")
        seen.add(name)
        if name == "busy_timeout":
            try:
                busy_timeout = positive_seconds("busy_timeout", float(value))
            except ValueError:
                raise ValueError(
                    f"busy_timeout must be a positive number of seconds, got {value[:40]!a}"
                ) from None
        elif name == "mode":
            if value not in ("ro", "rw"):
                raise ValueError(f"mode must be ro or rw, got {value[:40]!a}")
            read_only = value == "ro"
        elif name == "synchronous":
            if value.lower() not in SYNCHRONOUS_MODES:
                raise ValueError(f"synchronous must be normal or full, got {value[:40]!a}")
            synchronous = value.lower()
        else:
            raise ValueError(
                f"unsupported SQLite store option {name[:40]!r} "
                "(known: busy_timeout, mode, synchronous)"
            )
    return SQLiteURL(path, busy_timeout, read_only, synchronous)
