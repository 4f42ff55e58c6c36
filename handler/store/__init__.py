"""The state store: deduplication markers and the restore budget, shared by every instance."""

from handler.redaction import redact_url
from handler.store.base import (
    DEFAULT_REDIS_PREFIX,
    Claim,
    DeferredStore,
    MemoryStore,
    RedisStore,
    SQLiteStore,
    StateStore,
    StoreUnavailable,
    open_store,
    open_store_deferred,
    validate_state_url,
)

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
