"""The pipeline every entry point shares: intake items → policy → client → report.

:class:`Restorer` is built once per process from :class:`~handler.settings.Settings`; entry
points hand it the items of one delivery and turn the :class:`Delivery` it returns into their
own answer (an HTTP status, a FunctionGraph result, an exception for a platform retry).
"""

from __future__ import annotations

import atexit
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import IO, Any

from handler.client import DEADLINE_EXCEEDED, DwrClient, RetryPolicy, WorkflowClient, WorkflowResult
from handler.credentials import Credentials
from handler.intake import Item
from handler.policy import FailureFacts, Policy, Settlement, Ticket, Verdict
from handler.report import (
    RESULT_FIELDS,
    Reporter,
    SinkSender,
    configure_logging,
    monotonic_ms,
)
from handler.settings import Settings
from handler.store import StateStore, StoreUnavailable, open_store_deferred
from handler.sweep import (
    SWEEP,
    Lister,
    ListingError,
    SweepRequest,
    SweepSummary,
    time_left_until,
)

# 4xx answers that may mean "this execution is not failed (any more)": checked with a query.
_AMBIGUOUS_REFUSALS = frozenset({400, 409, 412, 422})
EXECUTION_ERROR_CHARS = 300  # of the service's failure text kept in a result
SWEEP_LEASE = "sweep:lease"  # the state-store key one sweep at a time holds
# Answers that refuse the caller, not the request: keys, token, clock or permissions.
_CREDENTIAL_REFUSALS = frozenset({401, 403})


@dataclass(frozen=True)
class Invocation:
    """One call of an entry point: its id for log correlation, deadline and credentials."""

    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    deadline: float | None = None  # time.monotonic() seconds
    credentials: Credentials | None = None  # overrides the settings' (FunctionGraph agency)
    dry_run: bool = False  # this invocation only: everything but the restore call


@dataclass
class Delivery:
    """The answer to one delivery: per-item results, a summary and the status to report."""

    results: list[dict[str, Any]]
    retry: bool = False  # some item is not final: the platform should deliver again
    error: dict[str, str] | None = None
    error_status: int | None = None

    @property
    def summary(self) -> dict[str, int]:
        return dict(Counter(result["outcome"] for result in self.results))

    @property
    def status(self) -> int:
        if self.error_status is not None:
            return self.error_status
        if self.retry:
            return 503
        if self.results and all(result["outcome"] == "rejected" for result in self.results):
            return 400
        return 200

    def document(self) -> dict[str, Any]:
        """The JSON answer of every entry point."""
        document: dict[str, Any] = {
            "results": [{k: result.get(k) for k in RESULT_FIELDS} for result in self.results],
            "summary": self.summary,
        }
        if self.error:
            document["error"] = self.error
        return document


class Restorer:
    """Runs items through policy, client and report; safe to share between threads."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        reporter: Reporter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.reporter = reporter
        self._policy = Policy(settings, store, clock)
        self._api = settings.workflow_api.upper()  # "OBS" or "DWR", for reasons
        self._lock = threading.Lock()
        self._client: WorkflowClient | None = None
        self._client_credentials: Credentials | None = None

    def run(self, items: list[Item], invocation: Invocation) -> Delivery:
        """Process every item of one delivery; each ends in exactly one reported outcome."""
        delivery = Delivery([])
        for item in items:
            self._handle(item, invocation, delivery)
        return delivery

    def sweep(self, request: SweepRequest, invocation: Invocation) -> tuple[Delivery, SweepSummary]:
        """Find failures by listing (:mod:`handler.sweep`) and restore them like events.

        One sweep at a time: a lease in the state store makes an overlapping sweep (a slow one
        and the next timer, or instances sharing Redis) end at once, "sweep in progress".
        """
        started = time.monotonic()
        summary = SweepSummary()
        delivery = Delivery([])
        invocation = replace(invocation, dry_run=invocation.dry_run or request.dry_run)
        lease = self._take_sweep_lease(invocation, summary)
        if lease is not None:
            try:
                client = self._client_for(invocation.credentials)
                if client is None:
                    summary.errors.append({"graph": None, "errorCode": "NoCredentials"})
                else:
                    self._sweep_graphs(client, request, invocation, summary, delivery)
            finally:
                self._policy.release_lease(SWEEP_LEASE, lease)
        summary.duration_ms = (time.monotonic() - started) * 1000.0
        self.reporter.sweep_summary(summary.document(), invocation.id)
        return delivery, summary

    def rejected(self, code: str, message: str, status: int, invocation: Invocation) -> Delivery:
        """A delivery the intake could not read at all: one log line, no items."""
        self.reporter.delivery_rejected(code, message, invocation.id)
        return Delivery([], error={"code": code, "message": message}, error_status=status)

    def readiness_problem(self) -> str | None:
        """None when the state store can be written (so items can be admitted), else why not.

        The reason is answered to unauthenticated probes, so it names no host or path."""
        try:
            self.store.check_writable()
        except StoreUnavailable:
            return "state store cannot be written"
        return None

    def flush_events(self, timeout: float) -> bool:
        """Wait a bounded time for queued sink events (before a platform freezes the process)."""
        return self.reporter.flush(timeout)

    def close(self) -> None:
        self.reporter.close()
        with self._lock:
            if self._client is not None:
                self._client.close()
        self.store.close()

    def _handle(self, item: Item, invocation: Invocation, delivery: Delivery) -> str:
        """Process and report one item into ``delivery``; return its outcome."""
        started = monotonic_ms()
        failure = None
        try:
            result, redeliver = self._process(item, invocation)
        except Exception as exc:  # a bug in one item must not cost the others theirs
            failure = exc
            result, redeliver = _internal_error(item, exc), True
        self.reporter.item(result, invocation.id, monotonic_ms() - started, failure)
        delivery.results.append(result)
        delivery.retry = delivery.retry or redeliver
        return result["outcome"]

    def _take_sweep_lease(self, invocation: Invocation, summary: SweepSummary) -> str | None:
        ttl = self.settings.claim_ttl
        if invocation.deadline is not None:
            ttl = max(1.0, invocation.deadline - time.monotonic() + 5.0)
        try:
            lease = self._policy.take_lease(SWEEP_LEASE, ttl)
        except StoreUnavailable as exc:
            summary.stopped = "state store unavailable"
            summary.errors.append({"graph": None, "errorCode": "StoreUnavailable"})
            self.reporter.store_problem(str(exc))
            return None
        if lease is None:
            summary.stopped = "sweep in progress"
        return lease

    def _sweep_graphs(
        self,
        client: WorkflowClient | DwrClient,
        request: SweepRequest,
        invocation: Invocation,
        summary: SweepSummary,
        delivery: Delivery,
    ) -> None:
        time_left = time_left_until(invocation.deadline)
        lister = Lister(
            client,
            self.settings.workflow_api,
            summary,
            time_left=time_left,
            deadline=invocation.deadline,
            max_pages=self.settings.sweep_max_pages,
        )
        graphs = request.graphs or (g for g in lister.graphs() if self.settings.graph_allowed(g))
        restored = 0
        try:
            for graph in graphs:
                if not time_left():
                    summary.stopped = "deadline"
                    return
                summary.graphs_scanned += 1
                try:
                    for failure in lister.failures(graph, request.lookback):
                        summary.failures_found += 1
                        self.reporter.failure_found(failure.event_data())
                        if restored >= request.max_restores:
                            summary.waiting += 1
                            continue
                        if not time_left():
                            summary.stopped = "deadline"
                            return
                        outcome = self._handle(failure.item(), invocation, delivery)
                        summary.outcomes[outcome] = summary.outcomes.get(outcome, 0) + 1
                        if outcome == "restored":
                            restored += 1
                            lister.restored()
                except ListingError as exc:
                    summary.errors.append(_listing_error(exc))
            if not time_left():
                summary.stopped = "deadline"
        except ListingError as exc:  # the list of graphs itself
            summary.errors.append(_listing_error(exc))

    def _process(self, item: Item, invocation: Invocation) -> tuple[dict[str, Any], bool]:
        """The item's result, and whether it must be delivered again."""
        base = {
            "eventId": item.event_id,
            "graphName": item.graph_name,
            "executionName": item.execution_name,
            "attempts": 0,
        }
        claim_ttl = None
        if invocation.deadline is not None:
            claim_ttl = max(1.0, invocation.deadline - time.monotonic() + 5.0)
        lookup = _ExecutionLookup(self, item, invocation)
        decision = self._policy.admit(
            item, claim_ttl, dry_run=invocation.dry_run, facts=lookup.facts
        )
        if isinstance(decision, Verdict):
            result = {**base, "outcome": decision.outcome, "reason": decision.reason}
            result.update(decision.fields)
            if decision.detail:
                result["detail"] = decision.detail
        else:
            result = self._restore(
                item, decision, invocation, {**base, "rule": decision.rule}, lookup
            )
        lookup.note_execution_error(result)
        redeliver = result["outcome"] == "retryable_error" or (
            isinstance(decision, Verdict) and decision.redeliver
        )
        return result, redeliver

    def _restore(
        self,
        item: Item,
        ticket: Ticket,
        invocation: Invocation,
        base: dict[str, Any],
        lookup: _ExecutionLookup | None = None,
    ) -> dict[str, Any]:
        client = self._client_for(invocation.credentials)
        if client is None:
            self._policy.settle(ticket, Settlement.RETRY, {})
            return {
                **base,
                "outcome": "retryable_error",
                "errorCode": "NoCredentials",
                "reason": "no credentials: set OBS_ACCESS_KEY_ID and "
                "OBS_SECRET_ACCESS_KEY, or give the function an agency",
            }
        if item.shape == SWEEP:
            # A list answer may be stale: an execution restored a moment ago (by an event, or
            # by an earlier sweep) can still be listed as failed. Ask before restoring.
            answer = lookup.answer() if lookup is not None else None
            state = (
                _state_of(answer, base)
                if answer
                else _execution_state(client, item, invocation, base)
            )
            if state is not None and state != "FAILED":
                reason = f"execution is {state} now: the list answer was stale"
                result = {**base, "outcome": "skipped", "reason": reason}
                self._policy.settle(ticket, Settlement.REFUSED, _record(result))
                return result
        response = client.restoreFailedWorkflowExecution(
            item.execution_name, item.graph_name, deadline=invocation.deadline
        )
        result = {**base, **_response_fields(response)}
        outcome, settlement, reason = self._classify(client, item, response, invocation, result)
        result.update(outcome=outcome, reason=reason)
        if response.status in _CREDENTIAL_REFUSALS:
            result["severity"] = "ERROR"  # nothing restores until an operator acts
        note = self._policy.settle(ticket, settlement, _record(result))
        if note:
            result["reason"] = f"{reason}; {note}" if reason else note
        return result

    def _classify(
        self,
        client: WorkflowClient | DwrClient,
        item: Item,
        response: WorkflowResult,
        invocation: Invocation,
        result: dict[str, Any],
    ) -> tuple[str, Settlement, str]:
        """Map the service's answer to an outcome and what it means for budget and dedupe."""
        if response.ok:
            return "restored", Settlement.CONSUMED, ""
        if response.status == 0:
            if response.maybe_applied:
                return self._after_unanswered_restore(client, item, invocation, result)
            if response.errorCode == DEADLINE_EXCEEDED:
                return (
                    "retryable_error",
                    Settlement.RETRY,
                    "the invocation's deadline passed before the restore was sent",
                )
            return "retryable_error", Settlement.RETRY, f"{self._api} could not be reached"
        if response.retryable:
            return (
                "retryable_error",
                Settlement.RETRY,
                f"{self._api} answered with a transient error",
            )
        if response.status in _CREDENTIAL_REFUSALS:
            # A wrong key, a skewed clock or a missing permission is the operator's to fix; a
            # recorded failure would make the redelivery after the fix a "duplicate".
            return (
                "retryable_error",
                Settlement.RETRY,
                _credential_refusal(self._api, response, invocation),
            )
        if response.status in _AMBIGUOUS_REFUSALS:
            state = _execution_state(client, item, invocation, result)
            if state and state != "FAILED":
                return (
                    "skipped",
                    Settlement.REFUSED,
                    f"execution is {state}, not failed (restored already?)",
                )
        return "failed", Settlement.REFUSED, f"{self._api} refused the restore"

    def _after_unanswered_restore(
        self,
        client: WorkflowClient | DwrClient,
        item: Item,
        invocation: Invocation,
        result: dict[str, Any],
    ) -> tuple[str, Settlement, str]:
        """The restore left but no answer came back: ask the service what happened.

        An execution that is no longer failed was restored by this call, so the outcome is
        ``restored`` and the budget unit is kept. Otherwise nothing can be told apart (never
        applied, or applied and failed again): the unit stays spent and the platform delivers
        again, so a second restore goes through the budget like any other - never blindly.
        """
        state = _execution_state(client, item, invocation, result)
        if state and state != "FAILED":
            reason = f"no answer to the restore, but the execution is {state} now: it took effect"
            return "restored", Settlement.CONSUMED, reason
        seen = f"the execution is still {state}" if state else "its state could not be read"
        return (
            "retryable_error",
            Settlement.UNKNOWN,
            f"no answer after sending and {seen}; the restore may have been applied",
        )

    def _client_for(self, credentials: Credentials | None) -> WorkflowClient | None:
        """The shared client for these credentials; rebuilt only when they change."""
        settings = self.settings
        if credentials is None and settings.access_key_id and settings.secret_access_key:
            credentials = Credentials(
                settings.access_key_id, settings.secret_access_key, settings.security_token
            )
        if credentials is None:
            return None
        with self._lock:
            if self._client is None or credentials != self._client_credentials:
                if self._client is not None:
                    self._client.close()
                self._client = make_client(settings, credentials)
                self._client_credentials = credentials
            return self._client


def _internal_error(item: Item, exc: Exception) -> dict[str, Any]:
    """The result of an item whose processing raised: retryable, so nothing is lost."""
    return {
        "eventId": item.event_id, "graphName": item.graph_name,
        "executionName": item.execution_name, "attempts": 0, "outcome": "retryable_error",
        "errorCode": "InternalError", "errorMessage": type(exc).__name__,
        "reason": "unexpected error while processing this item; see the log line's exception",
    }  # fmt: skip


class _ExecutionLookup:
    """One query of an item's execution, made when first needed and answered from then on.

    The policy asks it why the execution failed (rules with error patterns), and a sweep asks
    it whether a listed failure is still failed before restoring: one call serves both.
    """

    def __init__(self, restorer: Restorer, item: Item, invocation: Invocation) -> None:
        self._restorer = restorer
        self._item = item
        self._invocation = invocation
        self._answer: WorkflowResult | None = None

    def answer(self) -> WorkflowResult | None:
        """The query's answer, or None without credentials (nothing can be asked)."""
        if self._answer is None:
            client = self._restorer._client_for(self._invocation.credentials)
            if client is None:
                return None
            self._answer = client.getWorkflowExecution(
                self._item.execution_name, self._item.graph_name, deadline=self._invocation.deadline
            )
        return self._answer

    def note_execution_error(self, result: dict[str, Any]) -> None:
        """Put why the execution failed into ``result``, if a query made for it said so."""
        if self._answer is not None and "executionError" not in result:
            _state_of(self._answer, result)

    def facts(self) -> FailureFacts:
        """Why the execution failed: the DWR failed nodes' messages; the OBS API gives none."""
        if self._restorer.settings.workflow_api != "dwr":
            return FailureFacts(None)
        answer = self.answer()
        if answer is None:
            return FailureFacts(None, "no credentials to query the execution", "NoCredentials")
        if answer.ok and answer.body is not None:
            return FailureFacts(tuple(answer.body.errorMessages))
        if answer.retryable or answer.status in _CREDENTIAL_REFUSALS:
            return FailureFacts(
                None, f"the query answered {answer.status or 'nothing'}", answer.errorCode
            )
        # A definite refusal (no such execution): nothing to match; the restore says the rest.
        return FailureFacts(())


def _execution_state(
    client: WorkflowClient | DwrClient, item: Item, invocation: Invocation, result: dict[str, Any]
) -> str | None:
    """The execution's current state as the query API reports it, or None if unknown."""
    answer = client.getWorkflowExecution(
        item.execution_name, item.graph_name, deadline=invocation.deadline
    )
    return _state_of(answer, result)


def _state_of(answer: WorkflowResult, result: dict[str, Any]) -> str | None:
    """The state a query answered, or None if unknown.

    When the answer says why the execution failed (DWR's failed nodes), ``result`` carries
    the first reason as ``executionError``, cut short: it is the service's text about the
    user's data, for the operator, and never holds one of our secrets.
    """
    if not answer.ok or answer.body is None:
        return None
    errors = getattr(answer.body, "errorMessages", ())
    if errors:
        result["executionError"] = errors[0][:EXECUTION_ERROR_CHARS]
    state = answer.body.executionInfo.get("execution_state")
    return str(state).upper() if state else None


def _credential_refusal(api: str, response: WorkflowResult, invocation: Invocation) -> str:
    """Why the service refused us, naming what the operator should check."""
    if invocation.credentials is not None:
        where = "the function's agency (or the X-CFF-Security-* keys)"
    else:
        where = "OBS_ACCESS_KEY_ID, OBS_SECRET_ACCESS_KEY and OBS_SECURITY_TOKEN"
    if response.errorCode == "RequestTimeTooSkewed":
        where = "the clock of the function's host"
    return (
        f"{api} refused our credentials ({response.errorCode or response.status}): "
        f"check {where}; "
        "nothing was recorded, so a delivery after the fix restores"
    )


def _listing_error(exc: ListingError) -> dict[str, Any]:
    return {"graph": exc.graph, "status": exc.status, "errorCode": exc.error_code}


def _response_fields(response: WorkflowResult) -> dict[str, Any]:
    body = response.body
    return {
        "status": response.status,
        "requestId": response.requestId,
        "executionUrn": getattr(body, "executionUrn", None),
        "restoredAt": getattr(body, "restoredAt", None),
        "errorCode": response.errorCode,
        "errorMessage": response.errorMessage,
        "attempts": response.attempts,
    }


def _record(result: dict[str, Any]) -> dict[str, Any]:
    """What a redelivery of this item will be answered with."""
    keys = (
        "outcome", "status", "requestId", "executionUrn", "restoredAt", "errorCode",
        "errorMessage", "reason", "rule",
    )  # fmt: skip
    return {k: result.get(k) for k in keys}


def make_client(settings: Settings, credentials: Credentials) -> WorkflowClient | DwrClient:
    """A client for the configured API, with the settings' endpoint, timeouts, retries and TLS.

    Both clients answer the same calls with the same result type, so nothing downstream needs
    to know which API is in use."""
    options: dict[str, Any] = {
        "timeout": (settings.connect_timeout, settings.read_timeout),
        "retry": RetryPolicy(max_attempts=settings.max_attempts),
        "verify": settings.verify,
    }
    if settings.workflow_api == "dwr":
        assert settings.project_id is not None  # load_settings requires it for dwr
        return DwrClient(
            credentials.access_key_id,
            credentials.secret_access_key,
            settings.project_id,
            settings.endpoint,
            credentials.security_token,
            **options,
        )
    return WorkflowClient(
        credentials.access_key_id,
        credentials.secret_access_key,
        credentials.security_token,
        settings.endpoint,
        **options,
    )


def build_restorer(settings: Settings, log_stream: IO[str] | None = None) -> Restorer:
    """Everything a process needs to restore: logging, the state store, the reporter.

    Writes the start-up line with the effective (redacted) settings.
    """
    logger = configure_logging(settings.log_level, log_stream)
    store = open_store_deferred(settings.state_url)
    sink = SinkSender(settings.event_sink, logger) if settings.event_sink else None
    reporter = Reporter(logger, sink)
    reporter.started(settings.redacted(), store.describe)
    restorer = Restorer(settings, store, reporter)
    if sink is not None:
        atexit.register(sink.close)  # queued sink events get a bounded last chance
    return restorer
