"""The Redis backend (``redis://``, ``rediss://``): one server shared by every instance.

redis-py is imported when a :class:`RedisStore` is made, not when this module is: only
deployments that use Redis install it, and the cold path of the others stays light. The
``import redis`` below is absolute, as every import is in Python 3, so it names the redis-py
library, not this module.

Redis' own key expiry is used only to collect garbage, a grace period after the logical
expiry, so clock skew between an instance and Redis never ends a marker early.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from handler.redaction import redact_url
from handler.store.base import (
    ACQUIRED,
    BUSY,
    CLOSED,
    DONE,
    IN_PROGRESS,
    RESERVED,
    SPENT,
    BreakerState,
    Claim,
    LedgerBatch,
    RateSlot,
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
    ledger_batch,
    new_token,
    positive_seconds,
    recent_view,
    settled_item,
)
from handler.store.redis_scripts import (
    CHECK_WRITABLE_LUA,
    CLAIM_LUA,
    CLOSE_BREAKER_LUA,
    DEFERRED_AMONG_LUA,
    DUE_DEFERRED_LUA,
    FINISH_LUA,
    FIRST_SEEN_LUA,
    FORGET_LUA,
    LATE,
    LEDGER_APPEND_LUA,
    READ_BREAKER_LUA,
    RECORD_REFAILURE_LUA,
    REDIS_EXPIRY_GRACE_MS,
    REFUND_LUA,
    RELEASE_CANARY_LUA,
    RELEASE_LUA,
    REMEMBER_DEFERRED_LUA,
    RENEW_LUA,
    REOPEN_BREAKER_LUA,
    RESERVE_LUA,
    RESET_BREAKER_LUA,
    RESET_BUDGET_LUA,
    RETURN_RATE_SLOT_LUA,
    SET_QUIET_LUA,
    SETTLE_ITEM_LUA,
    SETTLE_LUA,
    TAKE_CANARY_LUA,
    TAKE_RATE_SLOT_LUA,
)

DEFAULT_REDIS_PREFIX = "obs-workflow-restore:"
REDIS_TIMEOUT = 2.0  # seconds to connect to / hear back from Redis: "down" must fail fast
REDIS_SCAN_LIMIT = 10_000  # keys recent() examines at most on Redis
REDIS_CALIBRATE_EVERY = 300.0  # seconds between re-reading Redis' clock (see RedisStore)
REDIS_LOST_LIMIT = 1_000  # claims/reservations whose reply was lost, kept to undo later


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
        # (kind: "claim", "budget", "rate" or "canary"; key, subject or graph; token; window)
        self._lost: list[tuple[str, str, str, str]] = []
        self._lost_lock = threading.Lock()
        self._claim = self._redis.register_script(CLAIM_LUA)
        self._finish = self._redis.register_script(FINISH_LUA)
        self._release = self._redis.register_script(RELEASE_LUA)
        self._renew = self._redis.register_script(RENEW_LUA)
        self._reserve = self._redis.register_script(RESERVE_LUA)
        self._refund = self._redis.register_script(REFUND_LUA)
        self._settle = self._redis.register_script(SETTLE_LUA)
        self._first_seen = self._redis.register_script(FIRST_SEEN_LUA)
        self._remember_deferred = self._redis.register_script(REMEMBER_DEFERRED_LUA)
        self._due_deferred = self._redis.register_script(DUE_DEFERRED_LUA)
        self._forget = self._redis.register_script(FORGET_LUA)
        self._reset_budget = self._redis.register_script(RESET_BUDGET_LUA)
        self._check_writable = self._redis.register_script(CHECK_WRITABLE_LUA)
        self._take_rate_slot = self._redis.register_script(TAKE_RATE_SLOT_LUA)
        self._return_rate_slot = self._redis.register_script(RETURN_RATE_SLOT_LUA)
        self._record_refailure = self._redis.register_script(RECORD_REFAILURE_LUA)
        self._read_breaker = self._redis.register_script(READ_BREAKER_LUA)
        self._take_canary = self._redis.register_script(TAKE_CANARY_LUA)
        self._close_breaker = self._redis.register_script(CLOSE_BREAKER_LUA)
        self._reopen_breaker = self._redis.register_script(REOPEN_BREAKER_LUA)
        self._release_canary = self._redis.register_script(RELEASE_CANARY_LUA)
        self._reset_breaker = self._redis.register_script(RESET_BREAKER_LUA)
        self._ledger_append = self._redis.register_script(LEDGER_APPEND_LUA)
        self._settle_item = self._redis.register_script(SETTLE_ITEM_LUA)

    @property
    def describe(self) -> str:
        return self._describe

    def __repr__(self) -> str:
        return f"RedisStore({self._describe!r})"

    def claim(self, key: str, ttl: float) -> Claim:
        check_text("key", key)
        ttl = positive_seconds("ttl", ttl)
        token = new_token()
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
        check_text("key", key)
        retention = positive_seconds("retention", retention)
        data = dump_record(record)
        now = self._clock()
        self._undo_lost()
        with self._guard():
            self._finish(
                keys=[self._dedupe_key(key), *self._deferred_keys()],
                args=[
                    repr(now),
                    token,
                    repr(now + retention),
                    data,
                    _redis_ttl_ms(retention),
                    key,
                ],
            )

    def release(self, key: str, token: str) -> None:
        check_text("key", key)
        self._undo_lost()
        with self._guard():
            self._release(keys=[self._dedupe_key(key)], args=[token])

    def renew(self, key: str, token: str, ttl: float) -> bool:
        check_text("key", key)
        ttl = positive_seconds("ttl", ttl)
        now = self._clock()
        with self._guard():
            renewed = self._renew(
                keys=[self._dedupe_key(key)],
                args=[repr(now), token, repr(now + ttl), _redis_ttl_ms(ttl)],
            )
        return bool(renewed)

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
        if limit < 1:
            return Reservation(False, "", SPENT)
        token = new_token()
        now = self._clock()
        self._undo_lost()
        with self._remember_if_lost("budget", subject, token), self._guard():
            (answer, *_) = self._in_time(
                self._reserve,
                keys=[self._budget_key(subject)],
                args=[
                    repr(now),
                    repr(now - window),
                    limit,
                    token,
                    f"{token}:{now + kept!r}:{now + in_flight!r}",
                    repr(kept),
                    _redis_ttl_ms(kept),
                ],
            )
        if answer == token:
            return Reservation(True, token, RESERVED)
        return Reservation(False, "", BUSY if answer == BUSY else SPENT)

    def settle_budget(self, subject: str, token: str) -> None:
        self._undo_lost()
        with self._guard():
            self._settle(keys=[self._budget_key(subject)], args=[token])

    def refund_budget(self, subject: str, token: str) -> None:
        self._undo_lost()
        with self._guard():
            self._refund(keys=[self._budget_key(subject)], args=[token])

    def budget_used(self, subject: str, window: float, *, spent_only: bool = False) -> int:
        now = self._clock()
        held = self._budget_members(subject, window, now)
        return sum(1 for member, _ in held if not spent_only or _budget_spent(member, now))

    def budget_times(self, subject: str, window: float) -> list[float]:
        return [at for _, at in self._budget_members(subject, window, self._clock())]

    def _budget_members(self, subject: str, window: float, now: float) -> list[tuple[str, float]]:
        """``subject``'s reservations kept and within ``window``: (member, when), oldest first."""
        window = positive_seconds("window", window)
        with self._guard():
            held = self._redis.zrangebyscore(
                self._budget_key(subject), f"({now - window!r}", "+inf", withscores=True
            )
        return [(member, float(at)) for member, at in held if _budget_kept_past(member, now)]

    def first_seen(self, key: str, retention: float, *, after: float | None = None) -> float:
        check_text("key", key)
        retention = positive_seconds("retention", retention)
        now = self._clock()
        self._undo_lost()
        with self._guard():
            seen = self._first_seen(
                keys=[f"{self._prefix}first-seen:{key}"],
                args=[
                    repr(now),
                    repr(now + retention),
                    "" if after is None else repr(after),
                    _redis_ttl_ms(retention),
                ],
            )
        return float(seen)

    def remember_deferred(self, key: str, failure: dict, due_at: float, retention: float) -> None:
        check_text("key", key)
        retention = positive_seconds("retention", retention)
        data = dump_record(failure)
        due_at = check_time("due_at", due_at)
        now = self._clock()
        self._undo_lost()
        with self._guard():
            self._remember_deferred(
                keys=self._deferred_keys(),
                args=[
                    key,
                    repr(due_at),
                    f"{due_at + retention!r}|{data}",
                    repr(now),
                    _redis_ttl_ms(max(due_at - now, 0.0) + retention),
                ],
            )

    def due_deferred(self, limit: int) -> list[tuple[str, dict]]:
        limit = check_limit(limit)
        if limit < 1:
            return []
        with self._guard():
            found = self._due_deferred(
                keys=self._deferred_keys(), args=[repr(self._clock()), limit]
            )
        return [
            (key, json.loads(value.split("|", 1)[1]))
            for key, value in zip(found[::2], found[1::2], strict=True)
        ]

    def take_rate_slot(self, subject: str, limit: int, interval: float) -> RateSlot:
        check_text("subject", subject)
        limit = check_limit(limit)
        interval = positive_seconds("interval", interval)
        if limit < 1:
            return RateSlot(False, "", math.inf)
        token = new_token()
        now = self._clock()
        self._undo_lost()
        with self._remember_if_lost("rate", subject, token), self._guard():
            answer, at = self._in_time(
                self._take_rate_slot,
                keys=[self._rate_key(subject)],
                args=[
                    repr(now),
                    repr(now - interval),
                    limit,
                    token,
                    _redis_ttl_ms(interval),
                ],
            )
        if answer == "granted":
            return RateSlot(True, token, float(at))
        return RateSlot(False, "", float(at) + interval)

    def return_rate_slot(self, subject: str, token: str) -> None:
        self._undo_lost()
        with self._guard():
            self._return_rate_slot(keys=[self._rate_key(subject)], args=[token])

    def rate_used(self, subject: str, interval: float) -> int:
        interval = positive_seconds("interval", interval)
        now = self._clock()
        with self._guard():
            return int(self._redis.zcount(self._rate_key(subject), f"({now - interval!r}", "+inf"))

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
        now = self._clock()
        self._undo_lost()
        with self._guard():
            answer = self._record_refailure(
                keys=self._breaker_keys(graph),
                args=[
                    repr(now),
                    graph,
                    execution,
                    repr(min(failed_at, now)),
                    repr(now - window),
                    repr(window),
                    threshold,
                    repr(cooldown),
                    new_token(),
                ],
            )
        return _breaker_state(graph, answer)

    def breaker(self, graph: str, *, window: float) -> BreakerState:
        check_text("graph", graph)
        window = positive_seconds("window", window)
        now = self._clock()
        with self._guard():
            answer = self._read_breaker(
                keys=self._breaker_keys(graph), args=[repr(now), repr(now - window)]
            )
        return _breaker_state(graph, answer)

    def take_canary(self, graph: str, execution: str, *, window: float) -> BreakerState:
        check_text("graph", graph)
        check_text("execution", execution)
        window = positive_seconds("window", window)
        token = new_token()
        now = self._clock()
        self._undo_lost()
        with self._remember_if_lost("canary", graph, token, repr(window)), self._guard():
            answer = self._in_time(
                self._take_canary,
                keys=self._breaker_keys(graph),
                args=[repr(now), graph, execution, token, repr(window)],
            )
        return _breaker_state(graph, answer)

    def close_breaker(self, graph: str, token: str, *, window: float) -> BreakerState:
        check_text("graph", graph)
        window = positive_seconds("window", window)
        return self._breaker_step(self._close_breaker, graph, [token, repr(window)])

    def reopen_breaker(
        self, graph: str, token: str, *, max_cooldown: float, window: float
    ) -> BreakerState:
        check_text("graph", graph)
        max_cooldown = positive_seconds("max_cooldown", max_cooldown)
        window = positive_seconds("window", window)
        return self._breaker_step(
            self._reopen_breaker, graph, [token, repr(max_cooldown), repr(window)]
        )

    def release_canary(self, graph: str, token: str, *, window: float) -> BreakerState:
        check_text("graph", graph)
        window = positive_seconds("window", window)
        return self._breaker_step(self._release_canary, graph, [token, repr(window)])

    def pause(self, subject: str, record: dict, until: float) -> None:
        check_text("subject", subject)
        data = dump_record(record)
        until = check_time("until", until)
        entry = json.dumps({"record": data, "until": until})
        with self._guard():
            self._redis.hset(f"{self._prefix}pauses", subject, entry)

    def resume(self, subject: str) -> bool:
        check_text("subject", subject)
        live = subject in self.pauses()
        with self._guard():
            self._redis.hdel(f"{self._prefix}pauses", subject)
        return live

    def pauses(self) -> dict[str, dict]:
        """See :meth:`StateStore.pauses`; expired entries are dropped as they are read."""
        key = f"{self._prefix}pauses"
        now = self._clock()
        with self._guard():
            entries = self._redis.hgetall(key)
        live, expired = {}, []
        for subject, raw in entries.items():
            try:
                entry = json.loads(raw)
                until = float(entry["until"])
                record = json.loads(entry["record"])
            except (ValueError, KeyError, TypeError):
                expired.append(subject)  # not ours to read: dropped like an expired one
                continue
            if until <= now:
                expired.append(subject)
            else:
                live[subject] = {**record, "until": until}
        if expired:
            with self._guard():
                self._redis.hdel(key, *expired)
        return live

    def breakers_open(self) -> list[BreakerState]:
        """See :meth:`StateStore.breakers_open`; the index lists at most one entry per graph
        whose breaker is not closed, each dropped when its record expires."""
        now = self._clock()
        index = f"{self._prefix}breakers-open"
        with self._guard():
            graphs = self._redis.zrangebyscore(index, f"({now!r}", "+inf")
            pipe = self._redis.pipeline(transaction=False)
            for graph in graphs:
                pipe.hmget(
                    self._breaker_keys(graph)[0],
                    "state", "expires_at", "opened_at", "cooldown", "canary_token",
                    "canary_execution", "canary_at",
                )  # fmt: skip
            records = pipe.execute()
        found = []
        for graph, (state, expires_at, *fields) in zip(graphs, records, strict=True):
            if state is None or state == CLOSED or float(expires_at) <= now:
                continue
            found.append(_breaker_state(graph, [state, *fields, "0"]))
        found.sort(key=lambda breaker: (breaker.opened_at or 0.0, breaker.graph))
        return found

    def reset_breaker(self, graph: str) -> bool:
        check_text("graph", graph)
        with self._guard():
            return bool(
                self._reset_breaker(
                    keys=self._breaker_keys(graph), args=[repr(self._clock()), graph]
                )
            )

    def _breaker_step(self, script: Callable[..., list], graph: str, args: list) -> BreakerState:
        """Run a breaker transition script (ARGV: now, graph, a call id, then ``args``)."""
        now = self._clock()
        self._undo_lost()
        with self._guard():
            answer = script(
                keys=self._breaker_keys(graph), args=[repr(now), graph, new_token(), *args]
            )
        return _breaker_state(graph, answer)

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
            low = f"({now - window!r}" if window is not None else "-inf"
            for key in keys:
                pipe.zrangebyscore(key, low, "+inf", withscores=True)
            for key, held in zip(keys, pipe.execute(), strict=True):
                live = [float(at) for member, at in held if _budget_kept_past(member, now)]
                if live:
                    budget.append(
                        {
                            "subject": key[len(self._prefix) + len("budget:") :],
                            "used": len(live),
                            "last_at": max(live),
                        }
                    )
        return recent_view(dedupe, budget, limit)

    def forget(self, key: str) -> bool:
        check_text("key", key)
        with self._guard():
            return bool(self._forget(keys=[self._dedupe_key(key)], args=[repr(self._clock())]))

    def reset_budget(self, subject: str) -> int:
        check_text("subject", subject)
        with self._guard():
            return int(self._reset_budget(keys=[self._budget_key(subject)]))

    def check_writable(self) -> None:
        self._undo_lost()
        with self._guard():
            self._check_writable(keys=[f"{self._prefix}check-writable:{new_token()}"])

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

    def _deferred_keys(self) -> list[str]:
        """The deferred failures' index (by due time) and the failures themselves."""
        return [f"{self._prefix}deferred", f"{self._prefix}deferred-failures"]

    def _budget_key(self, subject: str) -> str:
        return f"{self._prefix}budget:{subject}"

    def _rate_key(self, subject: str) -> str:
        return f"{self._prefix}rate:{subject}"

    def _breaker_keys(self, graph: str) -> list[str]:
        """The graph's record, its re-failures, and the index of breakers not closed."""
        return [
            f"{self._prefix}breaker:{graph}",
            f"{self._prefix}breaker-refailures:{graph}",
            f"{self._prefix}breakers-open",
        ]

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
            if not answer or answer[0] != LATE:
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
    def _remember_if_lost(
        self, kind: str, name: str, token: str, window: str = ""
    ) -> Iterator[None]:
        """If the call fails, its script may still have run: remember what to undo."""
        try:
            yield
        except StoreUnavailable:
            with self._lost_lock:
                if len(self._lost) < REDIS_LOST_LIMIT:
                    self._lost.append((kind, name, token, window))
            raise

    def _undo_lost(self) -> None:
        """Release markers, refund units, give back rate slots and canaries taken by calls
        whose reply was lost (best effort).

        Safe at any later time: the caller gave up after the script's deadline, so a script
        not yet run never acts, and the release and refund only touch our own token.
        """
        with self._lost_lock:
            lost, self._lost = self._lost, []
        for index, (kind, name, token, window) in enumerate(lost):
            try:
                if kind == "claim":
                    self._release(keys=[self._dedupe_key(name)], args=[token])
                elif kind == "rate":
                    self._return_rate_slot(keys=[self._rate_key(name)], args=[token])
                elif kind == "canary":
                    self._release_canary(
                        keys=self._breaker_keys(name),
                        args=[repr(self._clock()), name, new_token(), token, window],
                    )
                else:
                    self._refund(keys=[self._budget_key(name)], args=[token])
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

    def ledger_append(
        self, graph: str, execution: str, entries: list[dict], *, keep: float, max_entries: int
    ) -> None:
        keep, max_entries, data = ledger_batch(graph, execution, entries, keep, max_entries)
        now = self._clock()
        with self._guard():
            self._ledger_append(
                keys=[self._ledger_key(graph, execution)],
                args=[
                    repr(now),
                    max_entries,
                    _redis_ttl_ms(keep),
                    *(f"{now + keep!r}|{item}" for item in data),
                ],
            )

    def ledger(self, graph: str, execution: str) -> list[dict]:
        check_text("graph", graph)
        check_text("execution", execution)
        with self._guard():
            members = self._redis.lrange(self._ledger_key(graph, execution), 0, -1)
        now = self._clock()
        return [entry for entry in (_ledger_entry(m, now) for m in members) if entry is not None]

    def record_sweep(self, summary: dict) -> None:
        data = dump_record(summary)
        with self._guard():
            self._redis.set(f"{self._prefix}last-sweep", data)

    def last_sweep(self) -> dict | None:
        with self._guard():
            data = self._redis.get(f"{self._prefix}last-sweep")
        return json.loads(data) if data is not None else None

    def waiting_deferred(self, limit: int) -> list[tuple[str, dict]]:
        """See :meth:`StateStore.waiting_deferred`: the index's soonest ``limit`` entries, then
        their failures (two reads: a count for operators decides nothing, and an entry
        finished in between is left out); expired ones are skipped here and collected by the
        scripts that remember and hand out deferred failures."""
        limit = check_limit(limit)
        if limit < 1:
            return []
        index, failures = self._deferred_keys()
        with self._guard():
            keys = self._redis.zrange(index, 0, limit - 1)
            values = self._redis.hmget(failures, keys) if keys else []
        now = self._clock()
        waiting = []
        for key, value in zip(keys, values, strict=True):
            if value is None:
                continue  # finished meanwhile
            expires_at, _, data = value.partition("|")
            if float(expires_at) > now:
                waiting.append((key, json.loads(data)))
        return waiting

    def quiet_until(self) -> dict[str, float]:
        """See :meth:`StateStore.quiet_until`: one ``HGETALL``; passed marks are skipped here
        and dropped by the next :meth:`set_quiet_until`."""
        now = self._clock()
        with self._guard():
            entries = self._redis.hgetall(f"{self._prefix}quiet-listings")
        marks = {}
        for graph, raw in entries.items():
            try:
                moment = float(raw)
            except ValueError:
                continue  # not ours to read: the graph is listed (and the field dropped)
            if moment > now:
                marks[graph] = moment
        return marks

    def set_quiet_until(self, marks: Mapping[str, float]) -> None:
        marks = check_quiet_marks(marks)
        args: list[str] = [repr(self._clock()), str(REDIS_EXPIRY_GRACE_MS)]
        for graph, moment in marks.items():
            args += [graph, repr(moment)]
        with self._guard():
            # Registered here, not at start-up: only a sweep over quiet graphs runs it.
            script = self._redis.register_script(SET_QUIET_LUA)
            script(keys=[f"{self._prefix}quiet-listings"], args=args)

    def deferred_among(self, keys: Collection[str]) -> dict[str, tuple[float, dict]]:
        """See :meth:`StateStore.deferred_among`: each key's due time and failure read in one
        script (so a key finished meanwhile is either wholly there or wholly gone), a
        bounded number of keys per call."""
        keys = check_keys(keys)
        now = self._clock()
        found: dict[str, tuple[float, dict]] = {}
        with self._guard():
            script = self._redis.register_script(DEFERRED_AMONG_LUA)
            for start in range(0, len(keys), _KEYS_PER_READ):
                chunk = keys[start : start + _KEYS_PER_READ]
                answer = script(keys=self._deferred_keys(), args=chunk)
                for key, due_at, value in zip(answer[::3], answer[1::3], answer[2::3], strict=True):
                    expires_at, _, data = value.partition("|")
                    if float(expires_at) > now:
                        found[key] = (float(due_at), json.loads(data))
        return found

    def _ledger_key(self, graph: str, execution: str) -> str:
        return f"{self._prefix}ledger:{quote(graph, safe='')}/{quote(execution, safe='')}"

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
        now = self._clock()
        keys = [self._dedupe_key(key), *self._deferred_keys()]
        # Unused parts still name a key of their own kind: a script declares every key.
        keys.append(self._budget_key(budget[0] if budget is not None else key))
        args: list[object] = [
            repr(now),
            token,
            data or "",
            repr(now + retention),
            _redis_ttl_ms(retention) if data is not None else 0,
            key,
            "" if budget is None else "settle" if spent else "refund",
            budget[1] if budget is not None else "",
        ]
        if ledger is None:
            keys.append(self._ledger_key(key, key))
            args += ["", 0]
        else:
            keep, max_entries, lines = ledger_batch(*ledger)
            keys.append(self._ledger_key(ledger.graph, ledger.execution))
            args += [
                max_entries,
                _redis_ttl_ms(keep),
                *(f"{now + keep!r}|{line}" for line in lines),
            ]
        self._undo_lost()
        with self._guard():
            self._settle_item(keys=keys, args=args)


def _ledger_entry(member: str, now: float) -> dict | None:
    """A ledger member ("expires_at|entry") as its entry, or None once expired."""
    expires_at, _, data = member.partition("|")
    return json.loads(data) if float(expires_at) > now else None


def _breaker_state(graph: str, answer: list) -> BreakerState:
    """A breaker script's reply (see redis_scripts.BREAKER_LUA) as the contract's answer."""
    state, opened_at, cooldown, canary_token, canary_execution, canary_at, changed = answer[:7]
    evidence = answer[7:]
    return BreakerState(
        graph,
        state,
        opened_at=float(opened_at) if opened_at else None,
        cooldown=float(cooldown) if cooldown else None,
        canary_token=canary_token or "",
        canary_execution=canary_execution or None,
        canary_at=float(canary_at) if canary_at else None,
        refailures=tuple(
            Refailure(execution, float(at))
            for execution, at in zip(evidence[::2], evidence[1::2], strict=True)
        ),
        changed=changed == "1",
    )


def _budget_kept_past(member: str, now: float) -> bool:
    """Whether a budget member (see redis_scripts) is still kept at ``now``.

    A bare token, written by an earlier version, carries no expiry: it counts while it is in
    the window, as it did then."""
    fields = member.split(":")
    return len(fields) < 2 or float(fields[1]) > now


def _budget_spent(member: str, now: float) -> bool:
    """Whether a budget member is settled, or in flight past its time (see redis_scripts)."""
    fields = member.split(":")
    return len(fields) < 3 or float(fields[2]) <= now


def _glob_escape(text: str) -> str:
    """Escape the glob metacharacters of Redis' SCAN MATCH."""
    escaped = text.replace("\\", "\\\\")
    for char in "*?[]":
        escaped = escaped.replace(char, "\\" + char)
    return escaped


_KEYS_PER_READ = 500
