"""The runtime: everything a process needs to restore, built once from :class:`Settings`.

:func:`build_runtime` is the one place that wires the stages together - logging, the state
store, the reporter (and its sink), the API client for the configured API, admission, the
restorer and the sweeper - and writes the start-up line. Entry points (:mod:`handler.entry`,
:mod:`handler.cli`) build one and hand it deliveries; tests build one around a store, a
reporter and a clock of their own with :class:`Runtime`.
"""

from __future__ import annotations

import atexit
import time
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any

from handler.client import DwrClient, RetrySchedule, WorkflowApi, WorkflowClient
from handler.credentials import Credentials
from handler.intake import Item
from handler.invocation import Invocation
from handler.ledger import Ledger, iso_utc
from handler.outage import BreakerEvent, Outage
from handler.outcomes import Answer
from handler.pipeline.admission import Admission
from handler.pipeline.clients import Clients
from handler.pipeline.deferred import DeferredFailures
from handler.pipeline.lease import SweepLease
from handler.pipeline.quiet import QuietListings
from handler.pipeline.restorer import Observer, Restorer
from handler.pipeline.sweeper import Sweeper
from handler.report import Reporter, SinkSender, configure_logging
from handler.settings import Settings
from handler.store import StateStore, StoreUnavailable, open_store_deferred
from handler.sweep import (
    STOPPED_IN_PROGRESS,
    STOPPED_STORE_UNAVAILABLE,
    SweepRequest,
    SweepSummary,
)

if TYPE_CHECKING:  # built only when configured: an unconfigured cold start never reads them
    from handler.escalation import Escalation
    from handler.metrics import InvocationMetrics

# How long the end of an invocation (or a process) may spend sending messages and metrics.
NOTIFY_FLUSH_SECONDS = 5.0
# Graphs whose part (failures found, errors, outcomes) the last sweep's record keeps
# (``status``): the one record stays small however many graphs a sweep handled; the overall
# counts cover every graph, and ``perGraphLeftOff`` counts the graphs not kept.
SWEEP_GRAPHS_KEPT = 200


class Runtime:
    """The stages of one process, wired; safe to share between threads.

    ``observers`` are called with every item's result after its log line (notifications,
    metrics): see :mod:`handler.pipeline.restorer`.
    """

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        reporter: Reporter,
        clock: Callable[[], float] = time.time,
        *,
        observers: Sequence[Observer] = (),
    ) -> None:
        self.settings = settings
        self.store = store
        self.reporter = reporter
        self.clock = clock
        client_class, connect = _connector(settings)
        self.clients = Clients(
            connect, _static_credentials(settings), gives_error_text=client_class.gives_error_text
        )
        # Each execution's ledger (``history``): written with the item's settlement, before
        # every observer, so an outcome's entry comes before the give-up message it leads to.
        self.ledger = Ledger(store, settings.dedupe_retention, reporter, clock)
        # Give-up messages (RESTORE_NOTIFY_TOPIC_URN): queued by an observer, sent at flush.
        self.escalation = _escalation(settings, store, reporter, clock)
        if self.escalation is not None:
            observers = (*observers, self.escalation)
        # Cloud Eye metrics (CES_*): counted by an observer, sent in one batch at flush.
        self.metrics = _metrics(settings, store, reporter, clock)
        if self.metrics is not None:
            observers = (*observers, self.metrics)
        deferred = DeferredFailures(store, settings.dedupe_retention)
        # One outage view (rate and breakers) for admission and the sweeper's canary looks.
        self.outage = Outage(settings.outage, store, clock)
        self.admission = Admission(
            settings, store, deferred, clock, outage=self.outage, breaker_log=self.breaker_changed
        )
        self.restorer = Restorer(
            self.admission,
            self.clients,
            store,
            reporter,
            api=settings.workflow_api.upper(),
            clock=clock,
            observers=observers,
            ledger=self.ledger,
        )
        self.sweeper = Sweeper(
            self.restorer,
            self.clients,
            SweepLease(store, reporter),
            deferred,
            reporter,
            settings,
            outage=self.outage,
            breaker_log=self.breaker_changed,
            quiet=QuietListings(store, reporter, clock),
            pauses=lambda: store.pauses(),  # late: the store may open lazily, on first use
            clock=clock,
        )

    def breaker_changed(self, event: BreakerEvent) -> None:
        """A breaker opened, reopened or closed (exactly one instance gets each): one log line,
        and a message to the operators' SMN topic when one is configured."""
        self.reporter.breaker(event)
        if self.escalation is not None:
            self.escalation.breaker(event)

    def run(self, items: Sequence[Item], invocation: Invocation) -> Answer:
        """Every item of one delivery through the restorer."""
        return self.restorer.run(items, invocation)

    def sweep(self, request: SweepRequest, invocation: Invocation) -> tuple[Answer, SweepSummary]:
        """One sweep (:class:`~handler.pipeline.sweeper.Sweeper`); its summary is kept in
        the store for ``status``."""
        answer, summary = self.sweeper.sweep(request, invocation)
        self._record_sweep(answer, summary, dry_run=invocation.dry_run or request.dry_run)
        return answer, summary

    def _record_sweep(self, answer: Answer, summary: SweepSummary, *, dry_run: bool) -> None:
        """Keep the newest sweep's summary, with each graph's part of it - the failures its
        listing found, the errors named for it, what became of its items - not a dry run's (it
        changes nothing), nor one that did not run because another held the lease (the other
        one's is the news). A store that cannot keep it is logged; the sweep's answer stands."""
        if dry_run or summary.stopped in (STOPPED_IN_PROGRESS, STOPPED_STORE_UNAVAILABLE):
            return
        outcomes: dict[str, dict[str, int]] = {}
        for result in answer.results:
            if result.graph_name:
                counts = outcomes.setdefault(result.graph_name, {})
                counts[result.outcome.value] = counts.get(result.outcome.value, 0) + 1
        # Graphs a listing found something in (or could not list) first, then those only
        # deferred failures came from; the first SWEEP_GRAPHS_KEPT are kept.
        names = list(dict.fromkeys([*summary.graph_failures, *summary.graph_errors, *outcomes]))
        per_graph = {
            name: {
                "failuresFound": summary.graph_failures.get(name, 0),
                "errors": summary.graph_errors.get(name, 0),
                "outcomes": outcomes.get(name, {}),
            }
            for name in names[:SWEEP_GRAPHS_KEPT]
        }
        left_off = len(names) - len(per_graph)
        document = {
            "finishedAt": iso_utc(self.clock()),
            **summary.document(),
            "perGraph": dict(sorted(per_graph.items())),
            **({"perGraphLeftOff": left_off} if left_off else {}),
        }
        try:
            self.store.record_sweep(document)
        except StoreUnavailable as exc:
            self.reporter.store_problem(str(exc))

    def rejected(self, code: str, message: str, status: int, invocation: Invocation) -> Answer:
        """A delivery the intake could not read at all: one log line, no items."""
        self.reporter.delivery_rejected(code, message, invocation.id)
        return Answer.refused(code, message, status)

    def readiness_problem(self) -> str | None:
        """None when the state store can be written (so items can be admitted), else why not.

        The reason is answered to unauthenticated probes, so it names no host or path."""
        try:
            self.store.check_writable()
        except StoreUnavailable:
            return "state store cannot be written"
        return None

    def flush_events(self, timeout: float) -> bool:
        """Send what waits - give-up messages, then queued sink events - within a bounded
        time (before a platform freezes the process); True when the sink's queue is empty."""
        started = time.monotonic()
        self.flush_notifications(timeout / 2)
        return self.reporter.flush(max(0.0, timeout - (time.monotonic() - started)))

    def flush_notifications(self, seconds: float = NOTIFY_FLUSH_SECONDS) -> int:
        """Send the invocation's metrics and the outbox's give-up messages within
        ``seconds``; how many messages SMN took."""
        started = time.monotonic()
        if self.metrics is not None:
            try:
                self.metrics.flush(seconds / 2)
            except Exception as exc:  # metrics must never cost the invocation its answer
                self.reporter.crashed(exc)
        if self.escalation is None:
            return 0
        try:
            return self.escalation.flush(max(0.0, seconds - (time.monotonic() - started)))
        except Exception as exc:  # telling people must never cost the invocation its answer
            self.reporter.crashed(exc)
            return 0

    def close(self) -> None:
        self.flush_notifications()  # a command-line run's give-ups are sent before it exits
        self.reporter.close()
        self.clients.close()
        self.store.close()


def build_runtime(settings: Settings, log_stream: IO[str] | None = None) -> Runtime:
    """Everything a process needs to restore, from its settings: logging (JSON lines on
    ``log_stream``, stdout by default), the state store, the reporter and its sink.

    Writes the start-up line with the effective (redacted) settings.
    """
    logger = configure_logging(settings.log_level, log_stream)
    store = open_store_deferred(settings.state_url)
    sink = SinkSender(settings.event_sink, logger) if settings.event_sink else None
    reporter = Reporter(logger, sink)
    reporter.started(settings.redacted(), store.describe)
    runtime = Runtime(settings, store, reporter)
    if sink is not None:
        atexit.register(sink.close)  # queued sink events get a bounded last chance
    return runtime


def _escalation(
    settings: Settings, store: StateStore, reporter: Reporter, clock: Callable[[], float]
) -> Escalation | None:
    """The give-up messages' queue and sender, when a topic is configured."""
    notify = settings.notify
    if notify is None:
        return None
    from handler.client.smn import SmnClient
    from handler.escalation import Escalation

    def publisher(credentials: Credentials) -> SmnClient:
        return SmnClient(
            credentials.access_key_id,
            credentials.secret_access_key,
            notify.topic_urn,
            notify.endpoint,
            credentials.security_token,
            timeout=(settings.connect_timeout, settings.read_timeout),
            verify=settings.verify,
        )

    return Escalation(settings, store, reporter, publisher, _static_credentials(settings), clock)


def _metrics(
    settings: Settings, store: StateStore, reporter: Reporter, clock: Callable[[], float]
) -> InvocationMetrics | None:
    """The per-invocation Cloud Eye metrics, when an endpoint and project are configured."""
    metrics = settings.metrics
    if metrics is None:
        return None
    from handler.client.ces import CesClient
    from handler.metrics import InvocationMetrics

    def sender(credentials: Credentials) -> CesClient:
        return CesClient(
            credentials.access_key_id,
            credentials.secret_access_key,
            metrics.project_id,
            metrics.endpoint,
            credentials.security_token,
            namespace=metrics.namespace,
            timeout=(settings.connect_timeout, settings.read_timeout),
            verify=settings.verify,
        )

    return InvocationMetrics(reporter, store, sender, _static_credentials(settings), clock)


def _static_credentials(settings: Settings) -> Credentials | None:
    if settings.access_key_id and settings.secret_access_key:
        return Credentials(
            settings.access_key_id, settings.secret_access_key, settings.security_token
        )
    return None


def _obs(settings: Settings, credentials: Credentials, **options: Any) -> WorkflowApi:
    return WorkflowClient(
        credentials.access_key_id,
        credentials.secret_access_key,
        credentials.security_token,
        settings.endpoint,
        **options,
    )


def _dwr(settings: Settings, credentials: Credentials, **options: Any) -> WorkflowApi:
    assert settings.project_id is not None  # load_settings requires it for dwr
    return DwrClient(
        credentials.access_key_id,
        credentials.secret_access_key,
        settings.project_id,
        settings.endpoint,
        credentials.security_token,
        **options,
    )


# WORKFLOW_API -> the client class and how the settings make one.
_CLIENTS: dict[str, tuple[type[WorkflowClient] | type[DwrClient], Callable[..., WorkflowApi]]] = {
    "obs": (WorkflowClient, _obs),
    "dwr": (DwrClient, _dwr),
}


def _connector(
    settings: Settings,
) -> tuple[type[WorkflowClient] | type[DwrClient], Callable[[Credentials], WorkflowApi]]:
    """The configured API's client class, and a client for given credentials with the
    settings' endpoint, timeouts, retry schedule and TLS."""
    client_class, make = _CLIENTS[settings.workflow_api]
    options = {
        "timeout": (settings.connect_timeout, settings.read_timeout),
        "retry": RetrySchedule(max_attempts=settings.max_attempts),
        "verify": settings.verify,
    }

    def connect(credentials: Credentials) -> WorkflowApi:
        return make(settings, credentials, **options)

    return client_class, connect
