"""The restorer: each item down the stages, exactly one outcome each.

Per item, in this order, each stage called once and returning here:

1. **admit** - :meth:`Admission.enter <handler.pipeline.admission.Admission.enter>` (the
   door: allowlist, dedupe claim, sweep grace), then - with the facts a query gave, when the
   rules need them - :meth:`Admission.decide <handler.pipeline.admission.Admission.decide>`
   (rules, spacing, budget);
2. **act** - the client: the query (made once, shared by the rules and the look before
   sending), the restore, the query that checks an unclear answer;
3. **classify** - :mod:`handler.pipeline.classify` turns the answers into a verdict;
4. **settle** - :func:`~handler.pipeline.settlement.settle` keeps or gives back what the item
   held in the store;
5. **report** - the frozen :class:`~handler.outcomes.Result`, built once, goes to the
   reporter (the log line, the sink event), then to every observer.

Observers (``observers=``) are the place for what happens after an outcome - notifications,
metrics: each is called with every item's result and invocation, after its line is written;
one that raises is logged and costs no other item anything. The execution's ledger
(``ledger=``) is written in the settle stage's store step - one write for both - and, when
that step wrote nothing (nothing held, or the store failed), as the first observer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from handler.client import WorkflowApi, WorkflowResult
from handler.intake import Item
from handler.intake.items import RESTORE
from handler.invocation import Invocation
from handler.ledger import Ledger
from handler.outcomes import Answer, Outcome, Result
from handler.pipeline import classify, unanswered
from handler.pipeline.admission import NO_FACTS, Admission, FailureFacts, Ticket
from handler.pipeline.clients import Clients
from handler.pipeline.deferred import Deferral
from handler.pipeline.settlement import Settlement, Verdict, settle, settles
from handler.report import Reporter, monotonic_ms
from handler.store import StateStore
from handler.sweep import SWEEP

Observer = Callable[[Result, Invocation], None]
NO_CREDENTIALS = (
    "no credentials: set OBS_ACCESS_KEY_ID and OBS_SECRET_ACCESS_KEY, or give the function "
    "an agency"
)


class _Query:
    """The one query of an item's execution, made when first needed and answered from then
    on: the rules' facts and the look before restoring share it."""

    def __init__(self, client: WorkflowApi | None, item: Item, deadline: float | None) -> None:
        self.client = client
        self._item = item
        self._deadline = deadline
        self.answer: WorkflowResult | None = None

    def ask(self) -> WorkflowResult | None:
        """The query's answer (None without a client: nothing can be asked)."""
        if self.answer is None and self.client is not None:
            self.answer = self.client.getWorkflowExecution(
                self._item.execution_name, self._item.graph_name, deadline=self._deadline
            )
        return self.answer


class Restorer:
    """Runs items through the stages; safe to share between threads."""

    def __init__(
        self,
        admission: Admission,
        clients: Clients,
        store: StateStore,
        reporter: Reporter,
        *,
        api: str,
        clock: Callable[[], float] = time.time,
        observers: Sequence[Observer] = (),
        ledger: Ledger | None = None,
    ) -> None:
        self._admission = admission
        self._clients = clients
        self._store = store
        self._reporter = reporter
        self._api = api  # "OBS" or "DWR", for reasons
        self._clock = clock  # wall-clock seconds: when a restore was sent
        self._observers = tuple(observers)
        self._ledger = ledger

    def run(self, items: Sequence[Item], invocation: Invocation) -> Answer:
        """Every item of one delivery; each ends in exactly one reported outcome."""
        return Answer(tuple(self.handle(item, invocation) for item in items))

    def handle(self, item: Item, invocation: Invocation) -> Result:
        """One item, reported; its result."""
        started = monotonic_ms()
        failure = None
        ledgered = False
        try:
            result, ledgered = self._process(item, invocation)
        except Exception as exc:  # a bug in one item must not cost the others theirs
            failure = exc
            result = Result.internal_error(item, exc)
        self._reporter.item(result, invocation.id, monotonic_ms() - started, failure)
        observers = self._observers
        if self._ledger is not None and not ledgered:
            observers = (self._ledger, *observers)
        for observe in observers:
            try:
                observe(result, invocation)
            except Exception as exc:  # an observer's bug is logged, never the item's
                self._reporter.crashed(exc)
        return result

    def _process(self, item: Item, invocation: Invocation) -> tuple[Result, bool]:
        """The item's Result, and whether its ledger entries were written with its settlement."""
        claim_ttl = None
        if invocation.deadline is not None:
            claim_ttl = max(1.0, invocation.deadline - time.monotonic() + 5.0)
        forced = invocation.forced
        entered = self._admission.enter(item, claim_ttl, forced=forced is not None)
        if isinstance(entered, Verdict):
            return self._conclude(item, entered, invocation)
        client = self._clients.get(invocation.credentials)
        query = _Query(client, item, invocation.deadline)
        if forced is not None:
            decided = self._admission.decide_forced(entered, dry_run=invocation.dry_run)
        else:
            facts = NO_FACTS
            if self._clients.gives_error_text and self._admission.needs_facts(entered):
                facts = self._facts(query)
            decided = self._admission.decide(entered, facts, dry_run=invocation.dry_run)
        if isinstance(decided, Verdict):
            return self._conclude(item, decided, invocation, query)
        return self._restore(item, decided, invocation, query)

    def still_deferred(
        self, graph: str, standing: Sequence[tuple[Item, float, Deferral]], invocation: Invocation
    ) -> list[Result]:
        """Failures of ``graph`` a sweep found still deferred by a hold that still stands
        (``(item, due_at, deferral)``, see :meth:`Sweeper._answer_standing
        <handler.pipeline.sweeper.Sweeper._answer_standing>`): each answered ``deferred`` as
        its deferral said, without deciding it again - nothing is claimed, sent or written,
        its memory keeps its due time - and given to the observers (the ledger writes
        nothing for an outcome that stands). One log line for them all: thousands of held
        failures at every sweep would otherwise be thousands of lines saying again what
        their first ones said."""
        results = []
        for item, _, deferral in standing:
            verdict = Verdict(
                Outcome.DEFERRED,
                Settlement.RELEASED,
                deferral.reason,
                rule=deferral.rule,
                error_code=deferral.error_code,
            )
            result = self._result(item, verdict, invocation, None, None, None, None)._replace(
                standing=True
            )
            results.append(result)
            for observe in self._observers:
                try:
                    observe(result, invocation)
                except Exception as exc:  # an observer's bug is logged, never the item's
                    self._reporter.crashed(exc)
        due = [due_at for _, due_at, _ in standing]
        if results:
            self._reporter.still_deferred(graph, results, min(due), max(due), invocation.id)
        return results

    @staticmethod
    def _facts(query: _Query) -> FailureFacts:
        """Why (and when) the execution failed, from its query."""
        answer = query.ask()
        if answer is None:
            return FailureFacts(None, "no credentials to query the execution", "NoCredentials")
        return classify.failure_facts(answer)

    def _restore(
        self, item: Item, ticket: Ticket, invocation: Invocation, query: _Query
    ) -> tuple[Result, bool]:
        client = query.client
        if client is None:
            verdict = Verdict(
                Outcome.RETRYABLE_ERROR,
                Settlement.RELEASED,
                NO_CREDENTIALS,
                error_code="NoCredentials",
            )
            return self._conclude(item, verdict, invocation, query, ticket)
        earlier: unanswered.UnansweredRestore | None = None
        if item.shape == SWEEP or ticket.restored_before:
            # Ask before restoring when an earlier restore of this execution may have taken
            # effect: a list answer may be stale, and an earlier attempt may have got no
            # answer at all. A restore that may have been applied is never sent blindly.
            answer = query.ask()
            assert answer is not None  # a client was there to ask
            if ticket.restored_before and classify.state_of(answer) is not None:
                # Did this item send a restore before that got no answer? (A memory in the
                # store; see handler.pipeline.unanswered.)
                earlier = unanswered.recall(self._store, item.event_id)
            stop = classify.before_restore(
                answer,
                api=self._api,
                listed=item.shape == SWEEP,
                restored_before=ticket.restored_before,
                earlier=earlier,
            )
            if stop is not None:
                return self._conclude(item, stop, invocation, query, ticket, earlier=earlier)
        # What the query said before sending, and when the restore left: an unanswered
        # restore is judged against them (classify.took_effect).
        sending = unanswered.UnansweredRestore(self._clock(), classify.stopped_at(query.answer))
        response = client.restoreFailedWorkflowExecution(
            item.execution_name, item.graph_name, deadline=invocation.deadline
        )
        check = None
        if classify.needs_check(response):
            check = client.getWorkflowExecution(
                item.execution_name, item.graph_name, deadline=invocation.deadline
            )
        verdict = classify.after_restore(
            response, check, sending, api=self._api, agency=invocation.credentials is not None
        )
        if verdict.settlement is Settlement.UNKNOWN:
            unanswered.remember(self._store, item.event_id, sending, ticket.hold.retention)
        return self._conclude(
            item, verdict, invocation, query, ticket, response=response, check=check,
            earlier=earlier,
        )  # fmt: skip

    def _conclude(
        self,
        item: Item,
        verdict: Verdict,
        invocation: Invocation,
        query: _Query | None = None,
        ticket: Ticket | None = None,
        *,
        response: WorkflowResult | None = None,
        check: WorkflowResult | None = None,
        earlier: unanswered.UnansweredRestore | None = None,
    ) -> tuple[Result, bool]:
        """Build the item's one Result and settle what it held, with its ledger entries;
        whether they were written (else the ledger observer writes them)."""
        result = self._result(item, verdict, invocation, query, ticket, response, check)
        if earlier is not None and verdict.settlement in (Settlement.SPENT, Settlement.RECORDED):
            unanswered.forget(self._store, item.event_id)  # a final outcome: no longer needed
        hold = ticket.hold if ticket is not None else verdict.hold
        if ticket is not None and verdict.settlement in (Settlement.RECORDED, Settlement.RELEASED):
            # Not sent, refused, or a transient error: the unit is refunded, and so are the
            # rate slot and the canary (only restores the service accepted count).
            self._admission.give_back(ticket)
        batch, ledgered = None, False
        if self._ledger is not None and settles(hold, verdict.settlement):
            try:
                batch = self._ledger.batch(result, invocation)
            except Exception as exc:  # the ledger's bug must not keep the item unsettled
                self._reporter.crashed(exc)
                ledgered = True  # logged once: as an observer it would only fail again
        problem = settle(self._store, hold, verdict.settlement, result.record(), batch)
        if problem is not None and batch is not None:
            # The ledger never costs the outcome anything: a step that failed with the
            # entries (a disk too full for them, say) is tried once more without them, and
            # the ledger then writes them as an observer, or logs that it could not.
            batch = None
            problem = settle(self._store, hold, verdict.settlement, result.record())
        if problem is None:
            return result, ledgered or batch is not None
        if ticket is not None:
            # The restore happened (or not) whatever the store says: the outcome stands and
            # says it was not recorded; the store's message names its host or path, so the
            # log line gets it, not the caller.
            return result.unrecorded(str(problem)), ledgered
        if verdict.settlement is Settlement.RECORDED:
            # Nothing was called: an outcome that cannot be recorded is decided again by a
            # redelivery rather than lost.
            down = Verdict(
                Outcome.RETRYABLE_ERROR,
                reason="state store unavailable, nothing called",
                error_code="StoreUnavailable",
                detail=str(problem),
            )
            return self._result(item, down, invocation, query, None, None, None), ledgered
        return result, ledgered  # a marker that could not be released expires after its TTL

    def _result(
        self,
        item: Item,
        verdict: Verdict,
        invocation: Invocation,
        query: _Query | None,
        ticket: Ticket | None,
        response: WorkflowResult | None,
        check: WorkflowResult | None,
    ) -> Result:
        """The one place a Result is built: the item, its verdict, the service's answers."""
        forced = invocation.forced
        rule = verdict.rule if ticket is None else ticket.rule
        execution_error = classify.execution_error(check, query.answer if query else None)
        failed_at = item.failed_at
        if failed_at is None and query is not None:
            failed_at = classify.stopped_at(query.answer)
        if verdict.recorded is not None:
            return Result.duplicate(
                item, verdict.recorded, verdict.reason, forced=forced, detail=verdict.detail,
                execution_error=execution_error, redeliver=verdict.redeliver,
            )  # fmt: skip
        body = response.body if response is not None else None
        return Result(
            item.event_id,
            item.graph_name,
            item.execution_name,
            verdict.outcome,
            verdict.reason,
            rule=rule,
            status=response.status if response is not None else None,
            request_id=response.requestId if response is not None else None,
            execution_urn=getattr(body, "executionUrn", None),
            restored_at=getattr(body, "restoredAt", None),
            error_code=response.errorCode if response is not None else verdict.error_code,
            error_message=response.errorMessage if response is not None else None,
            attempts=response.attempts if response is not None else 0,
            execution_error=execution_error,
            forced=forced,
            severity=verdict.severity,
            redeliver=verdict.redeliver,
            maybe_applied=verdict.maybe_applied,
            detail=verdict.detail,
            failed_at=failed_at,
            door=_door(item),
        )


def _door(item: Item) -> str | None:
    """How a restore item came in, for the ledger: a sweep's listing, the command line, or an
    event (any envelope); None for a request that is no failure to restore."""
    if item.verdict != RESTORE:
        return None
    if item.shape == SWEEP:
        return "sweep"
    return "cli" if item.shape == "cli" else "event"
