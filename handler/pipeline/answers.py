"""Reading the service's answers: outcomes' fields, what is recorded, what a query said.

Kept apart from :mod:`handler.pipeline.restorer` so the restore flow reads as a sequence of
decisions; everything here turns a :class:`~handler.client.WorkflowResult` into result fields.
"""

from __future__ import annotations

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
        if answer.ok and answer.body is not None:
            return FailureFacts(tuple(answer.body.errorMessages))
        if answer.retryable or answer.status in CREDENTIAL_REFUSALS:
            return FailureFacts(
                None, f"the query answered {answer.status or 'nothing'}", answer.errorCode
            )
        # A definite refusal (no such execution): nothing to match; the restore says the rest.
        return FailureFacts(())


def execution_state(
    client: WorkflowClient | DwrClient, item: Item, invocation: Invocation, result: dict[str, Any]
) -> str | None:
    """The execution's current state as the query API reports it, or None if unknown."""
    answer = client.getWorkflowExecution(
        item.execution_name, item.graph_name, deadline=invocation.deadline
    )
    return state_of(answer, result)


def state_of(answer: WorkflowResult, result: dict[str, Any]) -> str | None:
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
    """What a redelivery of this item will be answered with (and ``state`` shows)."""
    keys = (
        "outcome", "status", "requestId", "executionUrn", "restoredAt", "errorCode",
        "errorMessage", "reason", "rule", "graphName", "executionName",
    )  # fmt: skip
    return {k: result.get(k) for k in keys}
