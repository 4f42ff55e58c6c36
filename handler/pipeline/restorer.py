"""The restorer: each item through policy, client and report, exactly one outcome each.

:class:`Restorer` is built once per process (:func:`build_restorer`); entry points hand it the
items of one delivery (:meth:`Restorer.run`) or a sweep request (:meth:`Restorer.sweep`) and
turn the :class:`~handler.pipeline.delivery.Delivery` it returns into their own answer.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from handler.client import DEADLINE_EXCEEDED, RetrySchedule, WorkflowResult
from handler.credentials import Credentials
from handler.intake import Item
from handler.pipeline import unanswered
from handler.pipeline.answers import (
    AMBIGUOUS_REFUSALS,
    CREDENTIAL_REFUSALS,
    ExecutionLookup,
    credential_refusal,
    execution_state,
    internal_error,
    record_of,
    response_fields,
    state_of,
    stopped_at,
    took_effect,
    unreadable_execution,
)
from handler.pipeline.delivery import Delivery, Invocation
from handler.pipeline.sweeping import run_sweep
from handler.policy import Policy, Settlement, Ticket, Verdict
from handler.report import Reporter, SinkSender, configure_logging, monotonic_ms
from handler.settings import Settings
from handler.store import StateStore, StoreUnavailable, open_store_deferred
from handler.sweep import SWEEP, SweepRequest, SweepSummary

if TYPE_CHECKING:
    from handler.client import DwrClient, WorkflowClient


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
        self.policy = Policy(settings, store, clock)
        self._clock = clock  # wall-clock seconds: when a restore was sent
        self._api = settings.workflow_api.upper()  # "OBS" or "DWR", for reasons
        self._lock = threading.Lock()
        self._client: WorkflowClient | None = None
        self._client_credentials: Credentials | None = None

    def run(self, items: list[Item], invocation: Invocation) -> Delivery:
        """Process every item of one delivery; each ends in exactly one reported outcome."""
        delivery = Delivery([])
        for item in items:
            self.handle(item, invocation, delivery)
        return delivery

    def sweep(self, request: SweepRequest, invocation: Invocation) -> tuple[Delivery, SweepSummary]:
        """Find failures by listing (:mod:`handler.sweep`) and restore them like events.

        One sweep at a time: a lease in the state store makes an overlapping sweep (a slow one
        and the next timer, or instances sharing Redis) end at once, "sweep in progress"
        (:mod:`handler.pipeline.sweeping`).
        """
        return run_sweep(self, request, invocation)

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

    def handle(self, item: Item, invocation: Invocation, delivery: Delivery) -> str:
        """Process and report one item into ``delivery``; return its outcome."""
        started = monotonic_ms()
        failure = None
        try:
            result, redeliver = self._process(item, invocation)
        except Exception as exc:  # a bug in one item must not cost the others theirs
            failure = exc
            result, redeliver = internal_error(item, exc), True
        self.reporter.item(result, invocation.id, monotonic_ms() - started, failure)
        delivery.results.append(result)
        delivery.retry = delivery.retry or redeliver
        return result["outcome"]

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
        lookup = ExecutionLookup(self, item, invocation)
        forced = invocation.forced
        if forced is not None:
            # The operator decided instead of the allowlist and the rules: who and why go into
            # the result, and so into the record and the log line.
            base["forced"] = {"by": forced.by, "reason": forced.reason or None}
            decision = self.policy.admit_forced(item, claim_ttl, dry_run=invocation.dry_run)
        else:
            decision = self.policy.admit(
                item, claim_ttl, dry_run=invocation.dry_run, facts=lookup.facts
            )
        if isinstance(decision, Verdict):
            result = {**base, "outcome": decision.outcome, "reason": decision.reason}
            result.update(decision.fields)
            if decision.detail:
                result["detail"] = decision.detail
        else:
            rule = None if forced is not None else decision.rule
            result = self._restore(item, decision, invocation, {**base, "rule": rule}, lookup)
        if forced is not None:
            note, reason = forced.describe(), result.get("reason")
            result["reason"] = f"{note}; {reason}" if reason else note
            result.setdefault("severity", "WARNING")  # skipped rules are worth a look
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
        lookup: ExecutionLookup,
    ) -> dict[str, Any]:
        client = self.client_for(invocation.credentials)
        if client is None:
            self.policy.settle(ticket, Settlement.RETRY, {})
            return {
                **base,
                "outcome": "retryable_error",
                "errorCode": "NoCredentials",
                "reason": "no credentials: set OBS_ACCESS_KEY_ID and "
                "OBS_SECRET_ACCESS_KEY, or give the function an agency",
            }
        earlier: unanswered.UnansweredRestore | None = None
        if item.shape == SWEEP or ticket.restored_before:
            # Ask before restoring when an earlier restore of this execution may have taken
            # effect: a list answer may be stale, and an earlier attempt may have got no
            # answer at all. A restore that may have been applied is never sent blindly.
            # One query serves this check and the rules' error patterns (the lookup caches it).
            answer = lookup.answer()
            state = state_of(answer, base) if answer is not None else None
            if ticket.restored_before and answer is not None and state is not None:
                # Did this item send a restore before that got no answer? (A memory in the
                # store; see handler.pipeline.unanswered.)
                earlier = unanswered.recall(self.store, item.event_id)
                seen = earlier and took_effect(answer, earlier.sent_at, earlier.stopped_before)
                if seen:
                    result = {
                        **base,
                        "outcome": "restored",
                        "reason": f"this event's earlier restore got no answer, but it took "
                        f"effect: {seen}",
                    }
                    # This delivery's own unit is given back (the lost restore kept its own)
                    # and the outcome recorded: a refund and a record, as for a refusal.
                    self.policy.settle(ticket, Settlement.REFUSED, record_of(result))
                    unanswered.forget(self.store, item.event_id)
                    return result
            if state is not None and state != "FAILED":
                why = "the list answer was stale" if item.shape == SWEEP else "restored already"
                result = {
                    **base,
                    "outcome": "skipped",
                    "reason": f"execution is {state} now: {why}",
                }
                self.policy.settle(ticket, Settlement.REFUSED, record_of(result))
                return result
            if state is None:
                # An answer we could not read says nothing: retry, never restore on a guess.
                problem = unreadable_execution(answer) if answer is not None else "no query"
                question = (
                    "whether the execution is still failed"
                    if item.shape == SWEEP and not ticket.restored_before
                    else "whether an earlier restore took effect"
                )
                result = {
                    **base,
                    "outcome": "retryable_error",
                    "errorCode": answer.errorCode if answer is not None else None,
                    "reason": f"{self._api} did not say {question} ({problem}); nothing sent",
                }
                self.policy.settle(ticket, Settlement.RETRY, {})
                return result
        # What the query said before sending, and when the restore left: an unanswered
        # restore is judged against them (:func:`~handler.pipeline.answers.took_effect`).
        sending = unanswered.UnansweredRestore(self._clock(), stopped_at(lookup.asked()))
        response = client.restoreFailedWorkflowExecution(
            item.execution_name, item.graph_name, deadline=invocation.deadline
        )
        result = {**base, **response_fields(response)}
        outcome, settlement, reason = self._classify(
            client, item, response, invocation, result, sending
        )
        result.update(outcome=outcome, reason=reason)
        if response.status in CREDENTIAL_REFUSALS:
            result["severity"] = "ERROR"  # nothing restores until an operator acts
        if settlement is Settlement.UNKNOWN:
            result["maybeApplied"] = True  # for callers that say so (the command line)
            unanswered.remember(self.store, item.event_id, sending, ticket.retention)
        elif earlier is not None and settlement is not Settlement.RETRY:
            unanswered.forget(self.store, item.event_id)  # a final outcome: no longer needed
        unrecorded = self.policy.settle(ticket, settlement, record_of(result))
        if unrecorded is not None:
            # The store's message names its host or path: the log line gets it, not the caller.
            note = "outcome not recorded, state store unavailable"
            result["reason"] = f"{reason}; {note}" if reason else note
            result["detail"] = str(unrecorded)
        return result

    def _classify(
        self,
        client: WorkflowClient | DwrClient,
        item: Item,
        response: WorkflowResult,
        invocation: Invocation,
        result: dict[str, Any],
        sending: unanswered.UnansweredRestore,
    ) -> tuple[str, Settlement, str]:
        """Map the service's answer to an outcome and what it means for budget and dedupe."""
        if response.ok:
            return "restored", Settlement.CONSUMED, ""
        if response.status == 0:
            if response.maybe_applied:
                return self._after_unanswered_restore(client, item, invocation, result, sending)
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
        if response.status in CREDENTIAL_REFUSALS:
            # A wrong key, a skewed clock or a missing permission is the operator's to fix; a
            # recorded failure would make the redelivery after the fix a "duplicate".
            return (
                "retryable_error",
                Settlement.RETRY,
                credential_refusal(self._api, response, invocation),
            )
        if response.status in AMBIGUOUS_REFUSALS:
            state = execution_state(client, item, invocation, result)
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
        sending: unanswered.UnansweredRestore,
    ) -> tuple[str, Settlement, str]:
        """The restore left but no answer came back: ask the service what happened.

        An execution that is no longer failed was restored by this call, and so was one that
        the service says stopped again after the restore was sent (DWR gives the stop time):
        the outcome is ``restored`` and the budget unit is kept; the new failure is a failure
        of its own, restored under its own identity and unit. Otherwise nothing can be told
        apart (never applied, or applied and failed again where the API gives no stop time):
        the unit stays spent and the platform delivers again, and the redelivery asks again
        before anything is sent - never blindly.
        """
        answer = client.getWorkflowExecution(
            item.execution_name, item.graph_name, deadline=invocation.deadline
        )
        state = state_of(answer, result)
        seen = took_effect(answer, sending.sent_at, sending.stopped_before)
        if seen is not None:
            return (
                "restored",
                Settlement.CONSUMED,
                f"no answer to the restore, but it took effect: {seen}",
            )
        seen = f"the execution is still {state}" if state else "its state could not be read"
        return (
            "retryable_error",
            Settlement.UNKNOWN,
            f"no answer after sending and {seen}; the restore may have been applied",
        )

    def client_for(self, credentials: Credentials | None) -> WorkflowClient | None:
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


def make_client(settings: Settings, credentials: Credentials) -> WorkflowClient | DwrClient:
    """A client for the configured API, with the settings' endpoint, timeouts, retries and TLS.

    Both clients answer the same calls with the same result type, so nothing downstream needs
    to know which API is in use."""
    options: dict[str, Any] = {
        "timeout": (settings.connect_timeout, settings.read_timeout),
        "retry": RetrySchedule(max_attempts=settings.max_attempts),
        "verify": settings.verify,
    }
    # Only the configured API's client is imported: its signer and parsing are read at the
    # first event, the other API's never (handler.client loads names on first use).
    if settings.workflow_api == "dwr":
        from handler.client.dwr import DwrClient

        assert settings.project_id is not None  # load_settings requires it for dwr
        return DwrClient(
            credentials.access_key_id,
            credentials.secret_access_key,
            settings.project_id,
            settings.endpoint,
            credentials.security_token,
            **options,
        )
    from handler.client.obs import WorkflowClient

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
