"""The sweep's data: what one sweep covers, each failure it finds as a restore item, its summary.

Huawei Cloud emits no event when a workflow execution fails, so a restore function that only
waits for events may wait forever. A sweep lists executions instead and turns each failure
that stopped within the lookback window into an :class:`~handler.intake.Item` whose identity
is that failure (graph, execution and stop time): a redelivered or overlapping sweep finds
the same identity and the pipeline's dedupe answers ``duplicate``; a *new* failure of the
same execution has a new stop time and is restored again, within the restore budget.

Like :mod:`handler.intake`, this module turns outside input into items: the overrides a
timer, ``POST /sweep`` or the command line give (:class:`SweepRequest`, checked under the
limits of every body) and the rows a listing yields (:class:`Failure`, names checked). How
each API lists - OBS by marker, DWR by offset with windows split by time - is the client's
(:mod:`handler.client.listing`); running a sweep - the lease, the graphs, the restore cap,
each item through the restorer - is :mod:`handler.pipeline.sweeper`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from handler.intake import MAX_BODY_BYTES, IntakeError, Item
from handler.intake.identity import sweep_identity
from handler.intake.items import RESTORE
from handler.intake.limits import check_value, parse_json_text
from handler.names import InvalidNameError, validate_name
from handler.settings import MAX_SWEEP_LOOKBACK, Settings, SettingsError, parse_duration
from handler.timestamps import parse_api_time

if TYPE_CHECKING:
    from handler.client import ExecutionSummary

SWEEP = "sweep"  # Item.shape of what a sweep found
# Why a sweep stopped early (its summary's ``stopped``).
STOPPED_DEADLINE = "deadline"
STOPPED_IN_PROGRESS = "sweep in progress"
STOPPED_LEASE_LOST = "lease lost"
STOPPED_STORE_UNAVAILABLE = "state store unavailable"
# An override may name at most this many graphs: more than one page of the graph list, and
# each is listed in turn, so a longer list is a mistake rather than a plan.
MAX_OVERRIDE_GRAPHS = 1000
# The summary names at most this many errors (and counts the rest): a graph with thousands of
# unusable rows must not make one log line megabytes long.
MAX_SUMMARY_ERRORS = 50
# Time kept back from the invocation's deadline for the items already found and the summary.
DEADLINE_RESERVE_SECONDS = 2.0


class SweepRequest(NamedTuple):
    """What one sweep covers: settings' defaults, overridden per run (timer, HTTP, CLI)."""

    graphs: tuple[str, ...] = ()  # empty: every graph the list API returns, allowlist-filtered
    lookback: float = 86400.0
    max_restores: int = 50
    dry_run: bool = False
    # How long a graph whose listing found no failure may go unlisted (handler.pipeline.quiet);
    # 0: every graph is listed by every sweep, as for graphs an override names.
    quiet_interval: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SweepRequest:
        return cls(
            graphs=settings.sweep_graphs,
            lookback=settings.sweep_lookback,
            max_restores=settings.sweep_max_restores,
            dry_run=settings.dry_run,
            quiet_interval=settings.sweep_quiet_interval,
        )

    def overridden(self, overrides: Any) -> SweepRequest:
        """This request with a JSON object's ``graphs``, ``lookback`` and ``dryRun`` applied.

        Overrides come from outside (a timer's ``user_event``, an HTTP body), so a bad one is
        an :class:`~handler.intake.IntakeError` (400) naming the field, under the limits of
        every other body (depth, size); ``dryRun`` can only turn a dry run on, never off.
        ``graphs`` names 1 to ``MAX_OVERRIDE_GRAPHS`` graphs, ``lookback`` is 60 s to
        ``MAX_SWEEP_LOOKBACK``.
        """
        if overrides is None or overrides == "":
            return self
        check_value(overrides, "sweep overrides")
        if not isinstance(overrides, dict):
            raise IntakeError(400, "BadSweepRequest", "sweep overrides must be a JSON object")
        if not overrides:
            return self
        unknown = sorted(set(overrides) - {"graphs", "lookback", "dryRun"})
        if unknown:
            raise IntakeError(400, "BadSweepRequest", f"unknown sweep field(s): {unknown}")
        graphs, lookback, dry_run = self.graphs, self.lookback, self.dry_run
        quiet_interval = self.quiet_interval
        if "graphs" in overrides:
            graphs = _graph_names(overrides["graphs"])
            quiet_interval = 0.0  # graphs someone named are listed now
        if "lookback" in overrides:
            lookback = _lookback(overrides["lookback"])
        if "dryRun" in overrides:
            if not isinstance(overrides["dryRun"], bool):
                raise IntakeError(400, "BadSweepRequest", "dryRun must be true or false")
            dry_run = dry_run or overrides["dryRun"]
        return SweepRequest(graphs, lookback, self.max_restores, dry_run, quiet_interval)


class Failure(NamedTuple):
    """One failed execution a listing found."""

    graph: str
    execution: str
    execution_urn: str | None
    stopped_at: str | None  # the service's text; None when it gave no stop time
    started_at: str | None

    @classmethod
    def listed(cls, graph: str, row: ExecutionSummary) -> Failure:
        """The failure a listing's row shows; raises :class:`InvalidNameError` when its
        execution name breaks the naming rule (such a row cannot be restored)."""
        name = validate_name(row.execution_name, "executionName")
        return cls(graph, name, row.execution_urn, row.stopped_at, row.started_at)

    def item(self) -> Item:
        """The restore item: its identity is this failure, not just the execution."""
        when = self.stopped_at or self.started_at or "unknown"
        event_id = sweep_identity(self.graph, self.execution, when)
        moment = parse_api_time(self.stopped_at) if self.stopped_at else None
        return Item(
            RESTORE,
            event_id,
            SWEEP,
            self.graph,
            self.execution,
            source=SWEEP,
            failed_at=moment.timestamp() if moment else None,
        )

    def event_data(self) -> dict[str, Any]:
        """What the published ``…execution.failed`` CloudEvent carries."""
        return {
            "graphName": self.graph,
            "executionName": self.execution,
            "executionUrn": self.execution_urn,
            "stoppedAt": self.stopped_at,
            "startedAt": self.started_at,
        }


@dataclass
class SweepSummary:
    """The one summary line and document of a sweep."""

    graphs_scanned: int = 0
    graphs_quiet: int = 0  # not listed: no failure at their last listing, next slot not come
    pages: int = 0
    executions_listed: int = 0
    failures_found: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    waiting: int = 0  # failures left for the next sweep: the restore cap was reached
    errors: list[dict[str, Any]] = field(default_factory=list)
    errors_left_off: int = 0  # errors beyond MAX_SUMMARY_ERRORS: counted, not listed
    stopped: str | None = None  # why the sweep ended early: one of the STOPPED_* words
    duration_ms: float = 0.0
    # Per graph listed, for ``status`` (the runtime keeps a bounded part in the store): the
    # failures its listing found and the errors named for it (rows that could not be
    # restored, a listing cut short). Not in :meth:`document`: the ``sweep finished`` line
    # of a sweep over thousands of graphs stays one short line.
    graph_failures: dict[str, int] = field(default_factory=dict)
    graph_errors: dict[str, int] = field(default_factory=dict)

    @property
    def store_unavailable(self) -> bool:
        """Nothing was swept: the state store could not be reached (answered 503)."""
        return self.stopped == STOPPED_STORE_UNAVAILABLE

    def found(self, graph: str) -> None:
        """Count one failure a listing of ``graph`` found."""
        self.failures_found += 1
        self.graph_failures[graph] = self.graph_failures.get(graph, 0) + 1

    def error(self, entry: dict[str, Any]) -> None:
        """Name one error (a graph or row skipped), or count it once the list is full; one of
        a graph that was listed also counts as that graph's (a name that breaks the naming
        rule was never listed: it is named in ``errors`` only)."""
        graph = entry.get("graph")
        if isinstance(graph, str) and entry.get("errorCode") != "InvalidGraphName":
            self.graph_errors[graph] = self.graph_errors.get(graph, 0) + 1
        if len(self.errors) < MAX_SUMMARY_ERRORS:
            self.errors.append(entry)
        else:
            self.errors_left_off += 1

    def document(self) -> dict[str, Any]:
        return {
            "graphsScanned": self.graphs_scanned,
            "graphsQuiet": self.graphs_quiet,
            "pages": self.pages,
            "executionsListed": self.executions_listed,
            "failuresFound": self.failures_found,
            "outcomes": dict(self.outcomes),
            "waitingForNextSweep": self.waiting,
            "errors": list(self.errors),
            **({"errorsLeftOff": self.errors_left_off} if self.errors_left_off else {}),
            "stopped": self.stopped,
            "durationMs": round(self.duration_ms, 3),
        }


def shown_name(value: object) -> str:
    """A name the service gave that breaks the naming rule, as the summary may show it:
    printable, short, never the raw (possibly hostile) text."""
    text = value if isinstance(value, str) else repr(value)
    return ascii(text[:64])[1:-1]


def time_left_until(deadline: float | None) -> Callable[[], bool]:
    """Whether there is still time for another call before ``deadline`` (monotonic)."""
    if deadline is None:
        return lambda: True
    return lambda: deadline - time.monotonic() > DEADLINE_RESERVE_SECONDS


def read_user_event(user_event: Any) -> tuple[Any, str | None]:
    """A timer's ``user_event`` as ``(overrides, why it was ignored)``.

    The console fills a timer's additional information with plain text (``User Event``) by
    default, and a timer's answer reaches nobody: text that is not meant as a JSON object
    must not stop every sweep, so it is ignored (the default sweep runs, and the caller logs
    why at WARNING). Text that starts like a JSON object is meant as overrides: one that does
    not parse, nests too deep or is too large is an :class:`~handler.intake.IntakeError`.
    """
    if user_event is None:
        return None, None
    if not isinstance(user_event, str):  # a platform that passes decoded JSON
        if isinstance(user_event, dict):
            return user_event, None
        return None, f"user_event is {type(user_event).__name__}, not a JSON object"
    text = user_event.removeprefix("\ufeff").strip()
    if not text:
        return None, None
    if not text.startswith("{"):
        return None, "user_event is not a JSON object"
    if len(text) > MAX_BODY_BYTES:
        raise IntakeError(413, "BodyTooLarge", f"user_event is larger than {MAX_BODY_BYTES} bytes")
    try:
        return parse_json_text(text, "user_event"), None
    except IntakeError as exc:
        if exc.code == "NotJSON":  # meant as overrides, but unreadable: say which field
            raise IntakeError(400, "BadSweepRequest", exc.message) from None
        raise


def parse_overrides(user_event: Any) -> Any:
    """A timer's ``user_event`` as JSON overrides (None when there are none or it is ignored);
    see :func:`read_user_event`."""
    return read_user_event(user_event)[0]


def _graph_names(value: Any) -> tuple[str, ...]:
    """1 to ``MAX_OVERRIDE_GRAPHS`` valid names, each once. An empty list is refused rather
    than read as "every graph" (what leaving ``graphs`` out means): asking to sweep no graph
    and sweeping all of them would be the opposite of what was asked."""
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise IntakeError(400, "BadSweepRequest", "graphs must be a list of graph names")
    if not value:
        message = "graphs must name at least one graph (leave it out to sweep every graph)"
        raise IntakeError(400, "BadSweepRequest", message)
    if len(value) > MAX_OVERRIDE_GRAPHS:
        message = f"graphs names {len(value)} graphs, at most {MAX_OVERRIDE_GRAPHS} are allowed"
        raise IntakeError(400, "BadSweepRequest", message)
    try:
        return tuple(dict.fromkeys(validate_name(name, "graphs[]") for name in value))
    except InvalidNameError as exc:
        raise IntakeError(400, "BadSweepRequest", str(exc)) from None


def _lookback(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise IntakeError(400, "BadSweepRequest", "lookback must be a duration like 6h or 7d")
    try:
        return parse_duration(str(value), "lookback", minimum=60, maximum=MAX_SWEEP_LOOKBACK)
    except SettingsError as exc:
        raise IntakeError(400, "BadSweepRequest", str(exc)) from None
