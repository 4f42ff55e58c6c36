"""The state store: deduplication markers and the restore budget, shared by every instance.

The policy stage (handler/policy.py) asks it whether an event was handled and whether an
execution has restores left; handler/pipeline/ opens it, the CLI opens one for operators.

- ``base``: the :class:`StateStore` protocol every backend fulfils, :class:`Claim`,
  :class:`StoreUnavailable` and the argument checks the backends share.
- ``url``: :func:`validate_state_url` and the URL forms (``memory://``, ``sqlite:///path``,
  ``redis://``); standard library only, so settings can check the URL at start-up.
- ``factory``: :func:`open_store` and :func:`open_store_deferred` choose the backend by scheme.
- ``memory``, ``sqlite``, ``redis`` (with its Lua scripts in ``redis_scripts``): one backend
  each.

What it may import: the standard library and ``handler.redaction``, no pipeline stage.
redis-py is imported only when a Redis store is made, never by importing this package.
"""

from handler.redaction import redact_url
from handler.store.base import Claim, StateStore, StoreUnavailable
from handler.store.factory import DeferredStore, open_store, open_store_deferred
from handler.store.memory import MemoryStore
from handler.store.redis import DEFAULT_REDIS_PREFIX, RedisStore
from handler.store.sqlite import SQLiteStore
from handler.store.url import validate_state_url

__all__ = [
    "DEFAULT_REDIS_PREFIX",
    "Claim",
    "DeferredStore",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    "StateStore",
    "StoreUnavailable",
    "open_store",
    "open_store_deferred",
    "redact_url",
    "validate_state_url",
]
