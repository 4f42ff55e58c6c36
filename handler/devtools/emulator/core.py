"""What every emulated API shares: executions in memory, fault injection, the server's life.

An API (:mod:`.obs`) subclasses :class:`EmulatorCore` and says how a request is routed,
authenticated and answered (``_dispatch``), how its errors look (``_error``), which graph and
execution a request names (``_target``), how an execution is described (``_info``), which
signer checks its requests (``_signer_for``) and which state words it speaks (``STATES``,
``FAILED``, ``RUNNING``). Everything else - seeding, restore bookkeeping, background
transitions, faults, latency, the call log, start and stop - is here, so every API behaves
alike under the same faults.

Faults and latency: :mod:`.faults`.

Observability: ``calls`` (a snapshot list of :class:`Call` records; a reset is recorded with
status 0), ``restores(graph, execution)``, ``restored_at(graph, execution)`` (when the last
accepted restore happened), ``state(graph, execution)``,
``execution_info(graph, execution)`` and ``connections_opened`` (TCP connections accepted:
two calls over one keep-alive connection count one).

Background transition: ``after_restore=("FAILED", 0.5)`` flips a restored execution from
running to that state after 0.5 s, unless it was restored again or re-seeded meanwhile; with
a delay of 0 the restored run ends before the restore is answered (it "fails again at once").
A broken downstream (``break_downstream``, :mod:`.faults`) does the same to every restored
run, with an error naming it, until it is fixed: an outage and its recovery. Whichever of
the two reaches a run first decides it.

Seeding: :meth:`EmulatorCore.seed` one execution (state, start and stop time, execution type),
:meth:`EmulatorCore.seed_many` thousands in one go (a sweep's test or benchmark), and
:meth:`EmulatorCore.seed_graph` a graph without executions. Listing is each API's (paging
differs); the core keeps executions by graph so a page costs the graph's size, not the whole
emulator's.

Imports only :mod:`.wire` and the project's name and signing rules.

Why one module of about 640 lines: every operation here - seeding, restore bookkeeping,
transitions, listing's per-graph index - reads or writes the same executions under one lock,
and keeping them in one class keeps that locking visible in one place. It is a development
tool, never deployed.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar

from werkzeug.serving import make_server
from werkzeug.wrappers import Request

from handler.credentials import Credentials
from handler.devtools.emulator.faults import BrokenDownstream, Fault, FaultInjection, Hold
from handler.devtools.emulator.wire import (
    MAX_REQUEST_BODY,
    SERVER_NAME,
    Answer,
    RequestHandler,
    consume_body,
    finish,
    json_answer,
    logger,
    not_used,
    shutdown_quietly,
)
from handler.names import validate_name

MAX_SKEW_SECONDS = 15 * 60
DEFAULT_REGION = "cn-north-4"
DEFAULT_PROJECT_ID = "emulator-project"
DEFAULT_DOMAIN_ID = "emulator-domain"
SEED_KEYS = frozenset(
    {"credentials", "security_token", "region", "project_id", "domain_id"}
    | {"after_restore", "executions", "graphs"}
)
EXECUTION_KEYS = frozenset(
    {"graph", "execution", "state", "started_at", "stopped_at", "execution_type", "error_message"}
)
EXECUTION_TYPES = ("APICALL", "TRIGGERCAL")  # how an execution was started; lists sort by it
# A seeded time: epoch seconds, a datetime (naive is UTC) or ISO 8601 text (``...Z``).
Moment = float | int | datetime | str

Self = TypeVar("Self", bound="EmulatorCore")


class Call(NamedTuple):
    """One request the emulator answered; ``status`` is 0 when the connection was reset."""

    method: str
    graph: str | None
    execution: str | None
    status: int


@dataclass
class Execution:
    """One execution; times are epoch seconds (each API formats them in its own words)."""

    state: str
    started: float
    updated: float
    stopped: float | None = None  # None while running
    execution_type: str = "APICALL"
    restore_count: int = 0
    restored: float | None = None
    error_message: str | None = None  # why it failed; only the DWR API shows it


class EmulatorCore(FaultInjection):
    """In-memory workflow executions behind a signed HTTP API on loopback.

    ``credentials`` maps access key ids to secret keys. ``security_token``, when set, must be
    carried by every request. ``clock`` (seconds since the epoch) is what request dates are
    checked against and what timestamps are made from; tests can pin it.
    """

    STATES: ClassVar[tuple[str, ...]] = ()
    FAILED: ClassVar[str] = ""
    RUNNING: ClassVar[str] = ""
    NOT_FOUND_CODE: ClassVar[str] = ""  # the error codes of a refused restore or query
    NOT_FAILED_CODE: ClassVar[str] = ""

    def __init__(
        self,
        credentials: Mapping[str, str],
        security_token: str | None = None,
        *,
        region: str = DEFAULT_REGION,
        project_id: str = DEFAULT_PROJECT_ID,
        domain_id: str = DEFAULT_DOMAIN_ID,
        after_restore: tuple[str, float] | None = None,
        clock: Callable[[], float] = time.time,
        max_skew: float = MAX_SKEW_SECONDS,
    ) -> None:
        if not credentials:
            raise ValueError("at least one access key / secret key pair is required")
        self._signers = {
            ak: self._signer_for(Credentials(ak, sk)) for ak, sk in credentials.items()
        }
        self._security_token = security_token or None
        self.region, self.project_id, self.domain_id = region, project_id, domain_id
        self._clock = clock
        self._max_skew = max_skew
        self._lock = threading.Lock()
        self._executions: dict[tuple[str, str], Execution] = {}
        # The same executions by graph, and when each graph appeared: what the lists read.
        self._by_graph: dict[str, dict[str, Execution]] = {}
        self._graph_created: dict[str, float] = {}
        self._graph_version: dict[str, int] = {}  # bumped when a graph's list order may change
        self._faults: deque[Fault] = deque()
        self._holds: list[Hold] = []
        self._latency = 0.0
        self._calls: list[Call] = []
        self._open: set[socket.socket] = set()
        self._connections_opened = 0
        self._timers: set[threading.Timer] = set()
        self._after_restore: tuple[str, float] | None = None
        self.after_restore = after_restore
        self._downstream: BrokenDownstream | None = None
        self._server: Any = None
        self._scheme = "http"
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"{type(self).__name__}({where}, access_keys={sorted(self._signers)!r})"

    # --- what an API defines --------------------------------------------------------------

    def _signer_for(self, credentials: Credentials) -> Any:
        raise NotImplementedError

    def _dispatch(self, request: Request, request_id: str) -> Answer:
        raise NotImplementedError

    def _error(self, status: int, code: str, message: str, request_id: str) -> Answer:
        raise NotImplementedError

    def _target(self, request: Request) -> tuple[str | None, str | None]:
        raise NotImplementedError

    def _operation(self, request: Request) -> str:
        """``restore``, ``query``, ``list``, ``list_graphs`` or ``other``: for targeted faults."""
        raise NotImplementedError

    def _info(self, graph: str, execution: str, current: Execution) -> dict[str, Any]:
        raise NotImplementedError

    def _body_limit(self, request: Request) -> int:
        """The largest request body this request may carry (a route set may take more)."""
        return MAX_REQUEST_BODY

    def _query_answer(self, info: dict[str, Any]) -> dict[str, Any]:
        """The query's answer document around :meth:`_info`."""
        raise NotImplementedError

    def _execution_urn(self, graph: str, execution: str) -> str:
        raise NotImplementedError

    # --- the operations both APIs have, in their words -------------------------------------

    def _restore(self, graph: str, execution: str, request_id: str) -> Answer:
        taken, restored, now = self._take_restore(graph, execution)
        if taken is None:
            return self._not_found(graph, execution, request_id)
        if not restored:
            message = (
                f"execution state is {taken.state}; only {self.FAILED} executions can be restored"
            )
            return self._error(409, self.NOT_FAILED_CODE, message, request_id)
        document = {
            "execution_urn": self._execution_urn(graph, execution),
            "restored_at": iso(now),
            "execution_name": execution,
        }
        return json_answer(200, document)

    def _describe(self, graph: str, execution: str, request_id: str) -> Answer:
        info = self.execution_info(graph, execution)
        if info is None:
            return self._not_found(graph, execution, request_id)
        return json_answer(200, self._query_answer(info))

    def _not_found(self, graph: str, execution: str, request_id: str) -> Answer:
        message = f"execution {execution} of graph {graph} does not exist"
        return self._error(404, self.NOT_FOUND_CODE, message, request_id)

    # --- construction from a seed -------------------------------------------------------

    @classmethod
    def from_seed(cls: type[Self], seed: Mapping[str, Any], **options: Any) -> Self:
        """Build from a seed document (the JSON format in the package docstring).

        ``options`` are constructor arguments that win over the seed's; ``credentials`` given
        here are added to the seed's, so a command line can add a key to a shared seed file.
        """
        seed = mapping(seed, "seed")
        unknown = set(seed) - SEED_KEYS
        if unknown:
            raise ValueError(f"unknown seed keys: {sorted(unknown)}")
        names = ("security_token", "region", "project_id", "domain_id")
        settings: dict[str, Any] = {name: seed[name] for name in names if name in seed}
        if seed.get("after_restore") is not None:
            settings["after_restore"] = cls._after_restore_from_seed(seed["after_restore"])
        credentials = {**mapping(seed.get("credentials") or {}, "credentials")}
        credentials.update(options.pop("credentials", None) or {})
        settings.update(options)
        emulator = cls(credentials, **settings)
        for graph in seed.get("graphs") or []:
            emulator.seed_graph(graph)
        emulator.load_executions(seed.get("executions") or [])
        return emulator

    @classmethod
    def from_seed_file(cls: type[Self], path: str | Path, **options: Any) -> Self:
        """Build from a seed file; see :meth:`from_seed`."""
        return cls.from_seed(read_seed(path), **options)

    @classmethod
    def _after_restore_from_seed(cls, value: object) -> tuple[str, float]:
        settings = mapping(value, "after_restore")
        return (settings.get("state", cls.FAILED), float(settings.get("delay", 0.0)))

    def load_executions(self, entries: Iterable[Mapping[str, Any]]) -> int:
        """Seed each execution entry of a seed file; see :meth:`seed_many`."""
        return self.seed_many(entries)

    # --- state ----------------------------------------------------------------------------

    def seed_many(self, entries: Iterable[Mapping[str, Any]]) -> int:
        """Seed many executions at once; returns how many.

        Each entry is ``{"graph", "execution", "state", "started_at", "stopped_at",
        "execution_type", "error_message"}`` (all but graph and execution optional; the keys
        of :meth:`seed`'s arguments, as a seed file writes them). Every entry is checked
        before any is applied, so a bad one seeds nothing; thousands take milliseconds.
        """
        now = self._clock()
        checked = []
        for position, entry in enumerate(entries):
            entry = mapping(entry, "execution entry")
            unknown = set(entry) - EXECUTION_KEYS
            if unknown:
                raise ValueError(f"execution entry {position}: unknown keys {sorted(unknown)}")
            checked.append(self._checked_seed(now=now, **entry))
        with self._lock:
            for item in checked:
                self._apply_seed(now, *item)
        return len(checked)

    def seed_graph(self, graph: str) -> None:
        """Make a graph exist (list-graphs shows it) without any execution."""
        validate_name(graph, "graph")
        with self._lock:
            self._graph(graph, self._clock())

    def seed(
        self,
        graph: str,
        execution: str,
        state: str | None = None,
        *,
        error_message: str | None = None,
        started_at: Moment | None = None,
        stopped_at: Moment | None = None,
        execution_type: str | None = None,
    ) -> None:
        """Create an execution, or change an existing one (its restore history is kept).

        The state defaults to the API's failed state; ``error_message`` is why it failed (the
        DWR API shows it on the failed node; a default one is made up when not given).
        ``started_at`` defaults to now (or the stop time, if earlier); ``stopped_at`` to now
        for a finished state, and a running execution has none. ``execution_type`` is
        ``APICALL`` (default) or ``TRIGGERCAL``: the OBS list orders by it.
        """
        now = self._clock()
        item = self._checked_seed(
            graph,
            execution,
            state,
            error_message=error_message,
            started_at=started_at,
            stopped_at=stopped_at,
            execution_type=execution_type,
            now=now,
        )
        with self._lock:
            self._apply_seed(now, *item)

    def _checked_seed(
        self,
        graph: Any = None,
        execution: Any = None,
        state: Any = None,
        *,
        error_message: Any = None,
        started_at: Any = None,
        stopped_at: Any = None,
        execution_type: Any = None,
        now: float,
    ) -> tuple[str, str, str, float | None, float | None, str | None, str | None]:
        """One seed's values, checked and converted; ValueError names the bad one."""
        state = self.FAILED if state is None else state
        validate_name(graph, "graph")
        validate_name(execution, "execution")
        self._check_state(state)
        if execution_type is not None and execution_type not in EXECUTION_TYPES:
            raise ValueError(f"execution_type must be one of {', '.join(EXECUTION_TYPES)}")
        if error_message is not None and not isinstance(error_message, str):
            raise ValueError("error_message must be text")
        started = None if started_at is None else moment(started_at, "started_at")
        stopped = None if stopped_at is None else moment(stopped_at, "stopped_at")
        if stopped is not None and state == self.RUNNING:
            raise ValueError(f"a {self.RUNNING} execution has no stopped_at")
        return graph, execution, state, started, stopped, execution_type, error_message

    def _apply_seed(
        self,
        now: float,
        graph: str,
        execution: str,
        state: str,
        started: float | None,
        stopped: float | None,
        execution_type: str | None,
        error_message: str | None,
    ) -> None:
        """Create or change one execution; the caller holds the lock."""
        if stopped is None and state != self.RUNNING:
            stopped = now
        current = self._executions.get((graph, execution))
        if current is None:
            if started is None:
                started = min(now, stopped) if stopped is not None else now
            current = Execution(state, started, now, stopped, execution_type or "APICALL")
            self._executions[(graph, execution)] = current
            self._graph(graph, now)[execution] = current
            self._graph_version[graph] += 1
        else:
            current.state, current.updated, current.stopped = state, now, stopped
            if started is not None:
                current.started = started
            if execution_type is not None and execution_type != current.execution_type:
                current.execution_type = execution_type
                self._graph_version[graph] += 1
        current.error_message = error_message

    def _graph(self, graph: str, now: float) -> dict[str, Execution]:
        """The graph's executions by name, creating the graph; the caller holds the lock."""
        executions = self._by_graph.get(graph)
        if executions is None:
            executions = self._by_graph[graph] = {}
            self._graph_created[graph] = now
            self._graph_version[graph] = 0
        return executions

    def state(self, graph: str, execution: str) -> str | None:
        """The execution's state, or None when it does not exist."""
        with self._lock:
            current = self._executions.get((graph, execution))
            return current.state if current else None

    def restores(self, graph: str, execution: str) -> int:
        """How many restores of this execution were accepted (answered 200 or applied)."""
        with self._lock:
            current = self._executions.get((graph, execution))
            return current.restore_count if current else 0

    def restored_at(self, graph: str, execution: str) -> float | None:
        """When the last accepted restore of this execution happened (epoch seconds, the
        emulator's clock), or None when it was never restored or does not exist.

        Read-only: a time-to-recovery benchmark measures from the moment it made a run fail
        to this moment, on the one clock both were taken with.
        """
        with self._lock:
            current = self._executions.get((graph, execution))
            return current.restored if current else None

    def execution_info(self, graph: str, execution: str) -> dict[str, Any] | None:
        """What a query of this execution answers about it, or None."""
        with self._lock:
            current = self._executions.get((graph, execution))
            return self._info(graph, execution, current) if current else None

    @property
    def calls(self) -> list[Call]:
        """A snapshot of every request answered so far, oldest first."""
        with self._lock:
            return list(self._calls)

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted since start: tells keep-alive apart from reconnecting."""
        with self._lock:
            return self._connections_opened

    @property
    def after_restore(self) -> tuple[str, float] | None:
        return self._after_restore

    @after_restore.setter
    def after_restore(self, value: tuple[str, float] | None) -> None:
        """Set or clear the background transition that follows each accepted restore."""
        if value is not None:
            target, delay = value
            self._check_state(target)
            if target == self.RUNNING or not delay >= 0:
                finished = " or ".join(s for s in self.STATES if s != self.RUNNING)
                raise ValueError(f"after_restore must be ({finished}, delay >= 0 seconds)")
            value = (target, float(delay))
        self._after_restore = value

    @classmethod
    def state_word(cls, text: str) -> str:
        """The API's spelling of a state given in any case (``failed`` -> ``FAILED``)."""
        return next((state for state in cls.STATES if state.lower() == text.lower()), text)

    def _check_state(self, state: object) -> None:
        if state not in self.STATES:
            raise ValueError(f"state must be one of {', '.join(self.STATES)}, got {state!r}")

    def _take_restore(self, graph: str, execution: str) -> tuple[Execution | None, bool, float]:
        """Restore a failed execution: ``(a copy of it, restored?, now)``.

        A refusal (not failed) changes nothing; the copy is None when it does not exist.
        """
        now = self._clock()
        with self._lock:
            current = self._executions.get((graph, execution))
            if current is None or current.state != self.FAILED:
                return (replace_execution(current) if current else None), False, now
            current.state, current.updated, current.restored = self.RUNNING, now, now
            current.stopped = None
            current.restore_count += 1
            generation, transition = current.restore_count, self._after_restore
            taken = replace_execution(current)
            outage = self._downstream
            if outage is not None and outage.fails_after == 0:
                # The run needs the downstream at once: decided before the answer, as below.
                self._reach_downstream_locked(current, outage)
                outage = None
            if current.state != self.RUNNING:
                transition = None  # the downstream ended it already
            if transition is not None and transition[1] == 0:
                # "Fails again at once": the restored run ends before the restore is even
                # answered, so the next request of any client sees it ended, never a race.
                current.state = transition[0]
                current.updated = current.stopped = self._clock()
                transition = None
        if outage is not None:
            self._start_timer(
                outage.fails_after, self._reach_downstream, graph, execution, generation
            )
        if transition is not None:
            self._schedule(graph, execution, generation, *transition)
        return taken, True, now

    # --- serving --------------------------------------------------------------------------

    def start(
        self: Self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Self:
        """Listen on ``host:port`` (0: a free port) in a daemon thread; returns self.

        With ``ssl_context`` (a server context holding a certificate) it serves HTTPS, as the
        real endpoints do, and :attr:`url` says ``https://``.
        """
        if self._server is not None:
            raise RuntimeError(f"already running at {self.url}")
        try:
            server = make_server(
                host, port, not_used, threaded=True, request_handler=RequestHandler
            )
        except SystemExit:  # werkzeug prints the reason and exits when it cannot bind
            raise OSError(f"cannot listen on {host}:{port}") from None
        if ssl_context is not None:
            # The handshake is left to each connection's own thread (its first read), not done
            # in the accepting thread, so one slow handshake does not hold up the others.
            server.socket = ssl_context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        server.emulator = self
        self._scheme = "https" if ssl_context is not None else "http"
        with self._lock:
            self._connections_opened = 0
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() waits at most this long for the loop
            name=f"{SERVER_NAME}:{server.port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    @property
    def url(self) -> str:
        """``http://host:port`` (``https://`` when serving TLS) of the running emulator."""
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        host = self._server.server_address[0]
        host = f"[{host}]" if ":" in host else host
        return f"{self._scheme}://{host}:{self._server.port}"

    def stop(self) -> None:
        """Stop listening, drop open keep-alive connections and pending transitions."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        self.release_holds()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections, timers = list(self._open), list(self._timers)
            self._timers.clear()
        for connection in connections:
            shutdown_quietly(connection)
        for timer in timers:
            timer.cancel()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self: Self) -> Self:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- one request ----------------------------------------------------------------------

    def _handle(self, request: Request) -> Answer:
        """Decide the answer to one request, record it, and apply latency."""
        request_id = uuid.uuid4().hex.upper()
        graph, execution = self._target(request)
        answer = consume_body(request, request_id, self._error, self._body_limit(request))
        if answer is None:
            self._wait_if_held(graph, self._operation(request))
            fault = self._next_fault(graph, self._operation(request))
            if fault is None or fault.applied:
                answer = self._dispatch(request, request_id)
            if fault is not None:
                answer = fault.answer
        answer = finish(answer, request_id, self._error)
        status = 0 if answer.reset is not None else answer.status
        call = Call(request.method, graph, execution, status)
        with self._lock:
            self._calls.append(call)
            delay = self._latency
        logger.debug("%s %s/%s -> %s", *call)
        if delay:
            time.sleep(delay)
        return answer

    # --- background transitions -----------------------------------------------------------

    def _schedule(
        self, graph: str, execution: str, generation: int, target: str, delay: float
    ) -> None:
        self._start_timer(delay, self._transition, graph, execution, generation, target)

    def _start_timer(self, delay: float, function: Callable[..., None], *args: Any) -> None:
        timer = threading.Timer(delay, function, args=args)
        timer.daemon = True
        with self._lock:
            self._timers.add(timer)
        timer.start()

    def _reach_downstream(self, graph: str, execution: str, generation: int) -> None:
        """A restored run reaches the downstream, unless a later restore, a re-seed or the
        after-restore transition has overtaken it."""
        with self._lock:
            self._timers.discard(threading.current_thread())  # type: ignore[arg-type]
            current = self._executions.get((graph, execution))
            outage = self._downstream
            if (
                outage is not None
                and current is not None
                and current.state == self.RUNNING
                and current.restore_count == generation
            ):
                self._reach_downstream_locked(current, outage)

    def _reach_downstream_locked(self, current: Execution, outage: BrokenDownstream) -> None:
        """Broken now: the run fails again, naming it. Fixed: the run goes on. The caller
        holds the lock."""
        now = self._clock()
        if outage.broken_at(now):
            current.state, current.updated, current.stopped = self.FAILED, now, now
            current.error_message = outage.message
            outage.failed += 1
        else:
            outage.passed += 1

    def _transition(self, graph: str, execution: str, generation: int, target: str) -> None:
        """Finish a restored run, unless a later restore or a re-seed has overtaken it."""
        with self._lock:
            self._timers.discard(threading.current_thread())  # type: ignore[arg-type]
            current = self._executions.get((graph, execution))
            if current and current.state == self.RUNNING and current.restore_count == generation:
                current.state = target
                current.updated = current.stopped = self._clock()

    # --- connection bookkeeping, called by the request handler -----------------------------

    def _opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._open.add(connection)
            self._connections_opened += 1

    def _closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._open.discard(connection)


def replace_execution(current: Execution) -> Execution:
    """A copy to answer from outside the lock."""
    return Execution(**vars(current))


def moment(value: object, what: str) -> float:
    """Epoch seconds from a seeded time: epoch seconds, a datetime (naive is UTC), ISO text."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a time")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{what} must be ISO 8601, e.g. 2026-11-27T10:00:00Z") from None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    raise ValueError(f"{what} must be epoch seconds, a datetime or ISO 8601 text")


def iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- seeds ----------------------------------------------------------------------------------


def read_seed(path: str | Path) -> dict[str, Any]:
    """Load and shape-check a seed file (see the package docstring for the format)."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    return mapping(document, "seed")


def mapping(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a JSON object")
    return dict(value)
