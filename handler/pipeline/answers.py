"""Reading the service's answers: outcomes' fields, what is recorded, what a query said.

Kept apart from :mod:`handler.pipeline.restorer` so the restore flow reads as a sequence of
decisions; everything here turns a :class:`~handler.client.WorkflowResult` into result fields.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from handler.client import WorkflowResult
from handler.intake import Item
from handler.pipeline.delivery import Invocation
from handler.policy import FailureFacts

if TYPE_CHECKING:
    from handler.client import DwrClient, WorkflowClient
    from handler.pipeline.restorer import Restorer

# 4xx answers that may mean "this execution is not failed (any more)": checked with a query.
AMBIGUOUS_REFUSALS = frozenset({400, 409, 412, 422})
# Answers that refuse the caller, not the request: keys, token, clock or permissions.
CREDENTIAL_REFUSALS = frozenset({401, 403})
EXECUTION_ERROR_CHARS = 300  # of the service's failure text kept in a result


def internal_error(item: Item, exc: Exception) -> dict[str, Any]:
    """The result of an item whose processing raised: retryable, so nothing is lost."""
    return {
        "eventId": item.event_id, "graphName": item.graph_name,
        "executionName": item.execution_name, "attempts": 0, "outcome": "retryable_error",
        "errorCode": "InternalError", "errorMessage": type(exc).__name__,
        "reason": "unexpected error while processing this item; see the log line's exception",
    }  # fmt: skip


class ExecutionLookup:
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
            client = self._restorer.client_for(self._invocation.credentials)
            if client is None:
                return None
            self._answer = client.getWorkflowExecution(
                self._item.execution_name, self._item.graph_name, deadline=self._invocation.deadline
            )
        return self._answer

    def asked(self) -> WorkflowResult | None:
        """The answer if the query was made already; never asks."""
        return self._answer

    def note_execution_error(self, result: dict[str, Any]) -> None:
        """Put why the execution failed into ``result``, if a query made for it said so."""
        if self._answer is not None and "executionError" not in result:
            state_of(self._answer, result)

    def facts(self) -> FailureFacts:
        """Why the execution failed: the DWR failed nodes' messages; the OBS API gives none."""
        if self._restorer.settings.workflow_api != "dwr":
            return FailureFacts(None)
        answer = self.answer()
        if answer is None:
            return FailureFacts(None, "no credentials to query the execution", "NoCredentials")
        problem = unreadable_execution(answer)
        if problem is None:
            body = answer.body
            return FailureFacts(tuple(body.errorMessages), stopped_at=body.stoppedAt)
        # Whatever the answer was - a refusal, a redirect, a 200 whose body is cut off or is
        # a portal's HTML page - it did not say why the execution failed. Taking it as "no
        # error text" would record "no rule matches" for a failure a rule restores: retry.
        return FailureFacts(None, problem, answer.errorCode or "UnreadableAnswer")


def execution_state(
    client: WorkflowClient | DwrClient, item: Item, invocation: Invocation, result: dict[str, Any]
) -> str | None:
    """The execution's current state as the query API reports it, or None if unknown."""
    answer = client.getWorkflowExecution(
        item.execution_name, item.graph_name, deadline=invocation.deadline
    )
    return state_of(answer, result)


def unreadable_execution(answer: WorkflowResult) -> str | None:
    """Why a query's answer is not a readable execution, or None when it is one.

    Readable means: a 2xx whose body was parsed into the execution, with its state. Anything
    else - no answer, a refusal, a redirect (never followed), a 200 whose body was cut off,
    was not JSON or carried no state - says nothing about the execution, so no decision
    (rules, "still failed?") may be taken from it.
    """
    if answer.ok:
        info = getattr(answer.body, "executionInfo", None)
        if isinstance(info, dict) and info.get("execution_state"):
            return None
        detail = answer.errorMessage or "the body carried no execution state"
        return f"the query answered {answer.status} but not with a readable execution ({detail})"
    if answer.status == 0:
        return f"the query got no answer ({answer.errorCode or 'no connection'})"
    if 300 <= answer.status < 400:
        return f"the query was answered with a redirect ({answer.status}), not followed"
    return f"the query answered {answer.status} ({answer.errorCode or 'no error code'})"


def state_of(answer: WorkflowResult, result: dict[str, Any]) -> str | None:
    """The state a query answered, or None if unknown (:func:`unreadable_execution`).

    When the answer says why the execution failed (DWR's failed nodes), ``result`` carries
    the first reason as ``executionError``, cut short: it is the service's text about the
    user's data, for the operator, and never holds one of our secrets.
    """
    if unreadable_execution(answer) is not None:
        return None
    errors = getattr(answer.body, "errorMessages", ())
    if errors:
        result["executionError"] = errors[0][:EXECUTION_ERROR_CHARS]
    state = answer.body.executionInfo.get("execution_state")
    return str(state).upper() if state else None


def stopped_at(answer: WorkflowResult | None) -> float | None:
    """When a readable execution last stopped, if the API says (DWR; the OBS query does not)."""
    if answer is None or unreadable_execution(answer) is not None:
        return None
    return getattr(answer.body, "stoppedAt", None)


def took_effect(
    answer: WorkflowResult, sent_at: float, stopped_before: float | None = None
) -> str | None:
    """Why ``answer`` shows that a restore sent at ``sent_at`` (wall-clock seconds) was
    applied, or None when it cannot tell.

    An execution that is not failed any more was restored. A failed one was restored and
    failed again only if the service says when it stopped (DWR does) and that is after the
    restore was sent - and after the stop time the query showed before sending, when there
    was one: that comparison is between two of the service's own times, so a clock
    difference between it and us cannot make the old failure look new. The OBS query gives
    no stop time: there a failed execution may be one the restore never reached, so this
    says nothing and the caller stays careful.
    """
    state = state_of(answer, {})
    if state is None:
        return None
    if state != "FAILED":
        return f"the execution is {state} now"
    stopped = stopped_at(answer)
    if stopped is None or stopped <= sent_at:
        return None
    if stopped_before is not None and stopped <= stopped_before:
        return None
    return (
        f"the execution failed again at {iso_ms(stopped)}, after the restore was sent at "
        f"{iso_ms(sent_at)} - a new failure, restored under its own identity (its own event "
        "or the next sweep)"
    )


def iso_ms(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def credential_refusal(api: str, response: WorkflowResult, invocation: Invocation) -> str:
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


def response_fields(response: WorkflowResult) -> dict[str, Any]:
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


def record_of(result: dict[str, Any]) -> dict[str, Any]:
    """What a redelivery of this item will be answered with (and ``state`` shows), which
    execution it was for (an id reused for another execution must not be answered with it:
    see the policy), and who forced it, if anyone."""
    keys = (
        "outcome", "status", "requestId", "executionUrn", "restoredAt", "errorCode",
        "errorMessage", "reason", "rule", "graphName", "executionName",
    )  # fmt: skip
    record = {k: result.get(k) for k in keys}
    if result.get("forced"):
        record["forced"] = result["forced"]
    return record
