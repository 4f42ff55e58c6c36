"""The state store: deduplication markers and the restore budget, shared by every instance.

Admission (handler/pipeline/admission.py) asks it whether an event was handled and whether an
execution has restores left; handler/pipeline/ opens it, the CLI opens one for operators.

- ``base``: the :class:`StateStore` protocol every backend fulfils, :class:`Claim`,
  :class:`StoreUnavailable` (and :class:`RecordsNotKept`) and the argument checks the
  backends share.
- ``url``: :func:`validate_state_url` and the URL forms (``memory://``, ``sqlite:///path``,
  ``redis://``); standard library only, so settings can check the URL at start-up.
- ``factory``: :func:`open_store` and :func:`open_store_deferred` choose the backend by scheme.
- ``memory``, ``sqlite``, ``redis`` (with its Lua scripts in ``redis_scripts``): one backend
  each; ``breaker_steps``: the circuit breaker's transitions, which memory and SQLite share.

What it may import: the standard library and ``handler.redaction``, no pipeline stage.
redis-py is imported only when a Redis store is made, never by importing this package.

Importing the package loads only ``base`` and ``url``: the factory and the backends load on
first use (``handler.store.open_store`` or a backend's name), and the factory loads only the
backend a URL names - a FunctionGraph cold start on SQLite never reads the Redis or memory
modules.
"""

from __future__ import annotations

import importlib
from typing import Any

from handler.redaction import redact_url
from handler.store.base import Claim, RecordsNotKept, StateStore, StoreUnavailable
from handler.store.url import validate_state_url

# Names loaded on first use: name -> the module that defines it.
_LAZY = {
    "DeferredStore": "handler.store.factory",
    "open_store": "handler.store.factory",
    "open_store_deferred": "handler.store.factory",
    "MemoryStore": "handler.store.memory",
    "DEFAULT_REDIS_PREFIX": "handler.store.redis",
    "RedisStore": "handler.store.redis",
    "SQLiteStore": "handler.store.sqlite",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain global
    return value


__all__ = [
    "DEFAULT_REDIS_PREFIX",
    "Claim",
    "DeferredStore",
    "MemoryStore",
    "RecordsNotKept",
    "RedisStore",
    "SQLiteStore",
    "StateStore",
    "StoreUnavailable",
    "open_store",
    "open_store_deferred",
    "redact_url",
    "validate_state_url",
]
