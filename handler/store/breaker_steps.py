"""The circuit breaker's transitions as pure steps over one graph's record.

The memory and SQLite backends run these steps inside their lock or write transaction, so
the two cannot drift apart; the Redis backend runs the same steps in Lua
(:mod:`handler.store.redis_scripts`), and the contract suite holds all three to one
behaviour. What the states mean: :class:`handler.store.base.BreakerState`.

A record is kept until ``expires_at``: an open breaker until a window after its canary was
due, a half-open one until a window after its canary was due to be judged, a closed one (a
remembered close: re-failures that stopped before it do not count again) for a window.
No record at all is a closed breaker.
"""

from __future__ import annotations

from typing import NamedTuple

from handler.store.base import CLOSED, HALF_OPEN, OPEN, BreakerState, Refailure


class BreakerRecord(NamedTuple):
    """One graph's breaker as a backend stores it."""

    state: str
    expires_at: float
    opened_at: float | None = None
    cooldown: float | None = None
    canary_token: str = ""
    canary_execution: str | None = None
    canary_at: float | None = None
    closed_at: float | None = None


def live(record: BreakerRecord | None, now: float) -> BreakerRecord | None:
    """The record if it has not expired: an expired one counts as absent (closed)."""
    return record if record is not None and record.expires_at > now else None


def counts(record: BreakerRecord | None, failed_at: float, now: float, window: float) -> bool:
    """Whether a re-failure at ``failed_at`` counts: within the window, and not one that
    stopped before the breaker last closed (the canary proved that outage over)."""
    if failed_at <= now - window:
        return False
    return not (
        record is not None
        and record.state == CLOSED
        and record.closed_at is not None
        and failed_at <= record.closed_at
    )


def after_refailure(
    record: BreakerRecord | None,
    distinct: int,
    now: float,
    *,
    threshold: int,
    cooldown: float,
    window: float,
) -> BreakerRecord | None:
    """The opened record when ``distinct`` re-failing executions reach ``threshold`` on a
    closed breaker; None (nothing to change) otherwise."""
    if record is not None and record.state != CLOSED:
        return None
    if threshold < 1 or distinct < threshold:
        return None
    return BreakerRecord(OPEN, now + cooldown + window, opened_at=now, cooldown=cooldown)


def after_take_canary(
    record: BreakerRecord | None, execution: str, token: str, now: float, *, window: float
) -> BreakerRecord | None:
    """Half-open with ``execution`` as the canary, if open and its cooldown is over."""
    if record is None or record.state != OPEN:
        return None
    assert record.opened_at is not None and record.cooldown is not None
    if now < record.opened_at + record.cooldown:
        return None
    return record._replace(
        state=HALF_OPEN,
        canary_token=token,
        canary_execution=execution,
        canary_at=now,
        expires_at=now + record.cooldown + window,
    )


def after_close(
    record: BreakerRecord | None, token: str, now: float, *, window: float
) -> BreakerRecord | None:
    """The remembered close, if ``token`` is the half-open breaker's canary."""
    if not _canary_of(record, token):
        return None
    return BreakerRecord(CLOSED, now + window, closed_at=now)


def after_reopen(
    record: BreakerRecord | None, token: str, now: float, *, max_cooldown: float, window: float
) -> BreakerRecord | None:
    """Open again since now with the cooldown doubled (capped, never shortened), if
    ``token`` is the half-open breaker's canary."""
    if not _canary_of(record, token):
        return None
    assert record is not None and record.cooldown is not None
    cooldown = max(record.cooldown, min(2 * record.cooldown, max_cooldown))
    return BreakerRecord(OPEN, now + cooldown + window, opened_at=now, cooldown=cooldown)


def after_release(
    record: BreakerRecord | None, token: str, now: float, *, window: float
) -> BreakerRecord | None:
    """Open as before the canary was taken, if ``token`` is the half-open breaker's canary."""
    if not _canary_of(record, token):
        return None
    assert record is not None and record.opened_at is not None and record.cooldown is not None
    return record._replace(
        state=OPEN,
        canary_token="",
        canary_execution=None,
        canary_at=None,
        expires_at=max(record.opened_at + record.cooldown, now) + window,
    )


def state_of(
    graph: str,
    record: BreakerRecord | None,
    refailures: tuple[Refailure, ...] = (),
    *,
    changed: bool = False,
) -> BreakerState:
    """The contract's answer for a (live) record; a remembered close reads as closed."""
    if record is None or record.state == CLOSED:
        return BreakerState(graph, CLOSED, refailures=refailures, changed=changed)
    return BreakerState(
        graph,
        record.state,
        opened_at=record.opened_at,
        cooldown=record.cooldown,
        canary_token=record.canary_token,
        canary_execution=record.canary_execution,
        canary_at=record.canary_at,
        refailures=refailures,
        changed=changed,
    )


def _canary_of(record: BreakerRecord | None, token: str) -> bool:
    return (
        record is not None and record.state == HALF_OPEN and bool(token)
        and record.canary_token == token
    )  # fmt: skip
