"""Fault injection: the answers a client must survive, queued for the next requests.

Faults (thread-safe, one queue, first in first out; each consumes one request, whatever its
path or method, before authentication and before any state change unless said otherwise):

* ``fail_next(n, status, retry_after, body, content_type)`` - answer with that status;
  the default body is the API's JSON error.
* ``garbage_next(n, body, status, content_type, declared_length)`` - HTML or other non-JSON
  bodies; a ``declared_length`` larger than the body sends a short body and then closes the
  connection, so the client sees a truncated answer.
* ``redirect_next(n, location, status)`` - a 3xx with ``Location``.
* ``reset_next(n, partial=b"", applied=False)`` - reads the request, writes ``partial`` (by
  default nothing; e.g. a status line and half the headers), then closes the socket with
  ``SO_LINGER`` 0, so the client gets a TCP reset, never a complete answer. With
  ``applied=True`` the request is carried out first (a restore really happens) and only the
  answer is lost - the "maybe applied" case.
* ``latency(seconds)`` - every answer is delayed by that much *after* the request was carried
  out (a client that times out has still restored the execution). ``latency(0)`` ends it.
* ``hold_next(graph=..., operation=...)`` - the next matching request waits, before it is
  carried out, until the returned :class:`Hold` is released (or its timeout passes):
  a test can keep a caller inside one call for as long as it needs, without timing.

* ``break_downstream(fails_after, name=..., fixed_at=None)`` - not a fault of the API but of
  what the workflows need (a database, a bucket): every execution restored from then on fails
  again ``fails_after`` seconds after its restore (0: before the restore is even answered),
  with an error message naming the downstream (DWR's query shows it on the failed node; the
  OBS API shows no error text), until it is fixed - ``fix_downstream()`` now, or
  ``fix_downstream(at)`` / ``fixed_at=`` at a moment of the emulator's clock. Whether a run
  fails is decided when it reaches the downstream (``fails_after`` after its restore): a run
  restored just before the fix that reaches it after succeeds. ``downstream`` says how many
  runs it failed and let through. Other faults still apply to the requests themselves.

Every fault applies to the list calls too. ``faults_for(graph=..., operation=...)`` queues
faults that only requests naming that graph and/or doing that operation (``restore``,
``query``, ``list``, ``list_graphs``, ``publish``, ``metric_data``) consume - e.g. one
graph's listing fails while the others' succeed::

    emu.faults_for(graph="graph-3", operation="list").fail_next(5, 503)

Other requests pass such a fault by; untargeted faults are taken by whichever request comes
first. The queue stays first in, first out among the faults a request may take.

A mixin of :class:`~handler.devtools.emulator.core.EmulatorCore`, which owns the lock, the
queue and the latency and consumes one fault per request; imports only :mod:`.wire`.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from handler.devtools.emulator.wire import JSON, Answer, body_bytes, retry_after_value

# The notification routes (:mod:`.notify`) add "publish" (SMN) and "metric_data" (Cloud Eye).
OPERATIONS = ("restore", "query", "list", "list_graphs", "publish", "metric_data")


@dataclass(frozen=True)
class Fault:
    answer: Answer
    applied: bool = False  # carry the request out first, then give this answer instead
    graph: str | None = None  # only a request naming this graph takes it
    operation: str | None = None  # only a request doing this operation takes it

    def matches(self, graph: str | None, operation: str) -> bool:
        return (self.graph is None or self.graph == graph) and (
            self.operation is None or self.operation == operation
        )


@dataclass
class Hold:
    """One held request: ``reached`` is set when it arrived, ``release()`` lets it go on."""

    graph: str | None
    operation: str | None
    timeout: float
    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()

    def matches(self, graph: str | None, operation: str) -> bool:
        return (self.graph is None or self.graph == graph) and (
            self.operation is None or self.operation == operation
        )


DEFAULT_DOWNSTREAM = "shared-database"


@dataclass
class BrokenDownstream:
    """What every restored run depends on, broken until ``fixed_at`` (None: not yet fixed)."""

    fails_after: float
    name: str
    fixed_at: float | None = None
    failed: int = 0  # restored runs it failed again
    passed: int = 0  # restored runs that reached it once it was fixed

    def broken_at(self, moment: float) -> bool:
        return self.fixed_at is None or moment < self.fixed_at

    @property
    def message(self) -> str:
        """Why a run it failed failed: the error text, naming the downstream."""
        return f"downstream {self.name} unavailable: connection refused"


@dataclass(frozen=True)
class DownstreamStatus:
    """A snapshot of the broken downstream: ``broken`` now, and what it did so far."""

    name: str
    fails_after: float
    fixed_at: float | None
    broken: bool
    failed: int
    passed: int


class FaultQueueing:
    """The fault-queueing calls; subclasses say where a fault goes (``_queue``)."""

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        retry_after: float | str | None = None,
        body: bytes | str | Mapping[str, Any] | None = None,
        content_type: str = JSON,
    ) -> None:
        """Answer the next ``n`` requests with ``status`` (a JSON error unless ``body``)."""
        headers = () if retry_after is None else (("Retry-After", retry_after_value(retry_after)),)
        answer = Answer(status, body_bytes(body), content_type, headers)
        self._queue(n, Fault(answer))

    def garbage_next(
        self,
        n: int = 1,
        body: bytes | str = b"<html><body><h1>502 Bad Gateway</h1></body></html>",
        status: int = 502,
        content_type: str = "text/html",
        declared_length: int | None = None,
    ) -> None:
        """Answer with a non-JSON body; ``declared_length`` > len(body) truncates the answer."""
        answer = Answer(status, body_bytes(body), content_type, (), declared_length)
        self._queue(n, Fault(answer))

    def redirect_next(
        self, n: int = 1, location: str = "http://127.0.0.1:9/", status: int = 302
    ) -> None:
        """Answer with a redirect: a client must not follow it with its signed request."""
        if not 300 <= status < 400:
            raise ValueError("a redirect status is 3xx")
        answer = Answer(status, b"", "", (("Location", location),))
        self._queue(n, Fault(answer))

    def reset_next(self, n: int = 1, partial: bytes = b"", *, applied: bool = False) -> None:
        """Reset the connection of the next ``n`` requests after sending ``partial`` bytes.

        With ``applied`` the request is carried out first, so only its answer is lost.
        """
        self._queue(n, Fault(Answer(0, reset=bytes(partial)), applied=applied))

    def _queue(self, n: int, fault: Fault) -> None:
        raise NotImplementedError


class TargetedFaults(FaultQueueing):
    """Queues faults on an emulator that only matching requests take (``faults_for``)."""

    def __init__(self, owner: FaultInjection, graph: str | None, operation: str | None) -> None:
        self._owner, self._graph, self._operation = owner, graph, operation

    def _queue(self, n: int, fault: Fault) -> None:
        self._owner._queue(n, replace(fault, graph=self._graph, operation=self._operation))


class FaultInjection(FaultQueueing):
    """Queue faults and set latency; ``_next_fault`` hands the next one to the request."""

    _lock: threading.Lock
    _faults: deque[Fault]
    _latency: float
    _holds: list[Hold]
    _clock: Callable[[], float]
    _downstream: BrokenDownstream | None

    def break_downstream(
        self,
        fails_after: float,
        *,
        name: str = DEFAULT_DOWNSTREAM,
        fixed_at: float | None = None,
    ) -> None:
        """From now on every restored execution fails again ``fails_after`` seconds after its
        restore, the error naming ``name``, until the downstream is fixed (``fixed_at``, a
        moment of the emulator's clock, or :meth:`fix_downstream`). Replaces an earlier one."""
        if not (isinstance(fails_after, (int, float)) and math.isfinite(fails_after)):
            raise ValueError("fails_after must be a number of seconds >= 0")
        if fails_after < 0:
            raise ValueError("fails_after must be a number of seconds >= 0")
        if not name or not name.isprintable():
            raise ValueError("the downstream needs a printable name")
        with self._lock:
            self._downstream = BrokenDownstream(float(fails_after), name, fixed_at)

    def fix_downstream(self, at: float | None = None) -> None:
        """The downstream works again from ``at`` (the emulator's clock; default: now): a
        restored run that reaches it from then on is not failed by it."""
        with self._lock:
            if self._downstream is None:
                raise ValueError("no broken downstream to fix: call break_downstream first")
            self._downstream.fixed_at = self._clock() if at is None else float(at)

    @property
    def downstream(self) -> DownstreamStatus | None:
        """The broken downstream's state now, or None when there is none."""
        with self._lock:
            outage = self._downstream
            if outage is None:
                return None
            return DownstreamStatus(
                outage.name,
                outage.fails_after,
                outage.fixed_at,
                outage.broken_at(self._clock()),
                outage.failed,
                outage.passed,
            )

    def faults_for(
        self, *, graph: str | None = None, operation: str | None = None
    ) -> TargetedFaults:
        """Queue faults (same calls) that only requests for ``graph`` / ``operation`` take."""
        if operation is not None and operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}")
        return TargetedFaults(self, graph, operation)

    def hold_next(
        self, *, graph: str | None = None, operation: str | None = None, timeout: float = 30.0
    ) -> Hold:
        """Make the next request for ``graph`` / ``operation`` wait until released (at most
        ``timeout`` seconds, so a test that forgets cannot hang the emulator)."""
        if operation is not None and operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}")
        hold = Hold(graph, operation, float(timeout))
        with self._lock:
            self._holds.append(hold)
        return hold

    def latency(self, seconds: float) -> None:
        """Delay every answer by ``seconds`` (after the request took effect); 0 ends it."""
        if not seconds >= 0:
            raise ValueError("latency must be >= 0 seconds")
        with self._lock:
            self._latency = float(seconds)

    def clear_faults(self) -> None:
        """Drop queued faults and latency; release every hold."""
        with self._lock:
            self._faults.clear()
            self._latency = 0.0
        self.release_holds()

    def release_holds(self) -> None:
        """Let every held request go on and drop the holds not taken yet."""
        with self._lock:
            holds, self._holds = self._holds, []
        for hold in holds:
            hold.release()

    def _wait_if_held(self, graph: str | None, operation: str) -> None:
        """Hold this request if a hold is waiting for it (the wait is outside the lock)."""
        if not self._holds:  # the usual case, without taking the lock on every request
            return
        with self._lock:
            hold = next(
                (h for h in self._holds if not h.reached.is_set() and h.matches(graph, operation)),
                None,
            )
            if hold is not None:
                hold.reached.set()
        if hold is not None:
            hold.released.wait(hold.timeout)

    def _queue(self, n: int, fault: Fault) -> None:
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self._faults.extend([fault] * n)

    def _next_fault(self, graph: str | None = None, operation: str = "") -> Fault | None:
        """Take the oldest fault this request may take (untargeted, or aimed at it)."""
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.matches(graph, operation):
                    del self._faults[index]
                    return fault
            return None
