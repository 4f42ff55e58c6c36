"""Classification: the one place that maps what the workflow API answered to an outcome.

Pure functions of the service's answers (:class:`~handler.client.WorkflowResult`) - no call,
no store - each answering a :class:`~handler.pipeline.settlement.Verdict` (an outcome, what
it means for the budget unit and the marker, and why) or a fact the rules need:

* :func:`failure_facts` - what a query says of why and when an execution failed (the rules'
  error text and stop time); an answer that cannot be read is a problem, never "no text";
* :func:`before_restore` - what a query made before sending says: still failed (go ahead),
  not failed any more (restored already, or a stale list), an earlier unanswered restore
  that took effect, or nothing readable (retry, never restore on a guess);
* :func:`needs_check` and :func:`after_restore` - the restore's answer, with the query that
  checks an ambiguous one: accepted, refused for good, transient, our credentials refused, or
  no answer after sending (then only the query can tell whether it was applied);
* :func:`execution_error` - why the execution failed, as the result shows it.

The client reports what happened on the wire (``status``, ``retryable``, ``maybe_applied``);
what that means for the item is decided here and nowhere else.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from handler.client import DEADLINE_EXCEEDED, WorkflowResult
from handler.outcomes import Outcome
from handler.pipeline.admission import FailureFacts
from handler.pipeline.settlement import Settlement, Verdict
from handler.pipeline.unanswered import UnansweredRestore

# 4xx answers that may mean "this execution is not failed (any more)": checked with a query.
AMBIGUOUS_REFUSALS = frozenset({400, 409, 412, 422})
# Answers that refuse the caller, not the request: keys, token, clock or permissions.
CREDENTIAL_REFUSALS = frozenset({401, 403})
EXECUTION_ERROR_CHARS = 300  # of the service's failure text kept in a result


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


def state_of(answer: WorkflowResult | None) -> str | None:
    """The state a query answered (OBS terms), or None if unknown or not asked."""
    if answer is None or unreadable_execution(answer) is not None:
        return None
    state = answer.body.executionInfo.get("execution_state")
    return str(state).upper() if state else None


def stopped_at(answer: WorkflowResult | None) -> float | None:
    """When a readable execution last stopped, if the API says (DWR; the OBS query does not)."""
    if answer is None or unreadable_execution(answer) is not None:
        return None
    return getattr(answer.body, "stoppedAt", None)


def execution_error(*answers: WorkflowResult | None) -> str | None:
    """Why the execution failed, from the first of ``answers`` (queries, latest first) that
    says so - DWR's failed nodes; OBS never does - cut short: it is the service's text about
    the user's data, for the operator, and never holds one of our secrets."""
    for answer in answers:
        if answer is None or unreadable_execution(answer) is not None:
            continue
        errors = getattr(answer.body, "errorMessages", ())
        if errors:
            return errors[0][:EXECUTION_ERROR_CHARS]
    return None


def failure_facts(answer: WorkflowResult) -> FailureFacts:
    """What a query says of why (and when) the execution failed, for the rules."""
    problem = unreadable_execution(answer)
    if problem is None:
        body = answer.body
        return FailureFacts(tuple(body.errorMessages), stopped_at=body.stoppedAt)
    # Whatever the answer was - a refusal, a redirect, a 200 whose body is cut off or is a
    # portal's HTML page - it did not say why the execution failed. Taking it as "no error
    # text" would record "no rule matches" for a failure a rule restores: retry.
    return FailureFacts(None, problem, answer.errorCode or "UnreadableAnswer")


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
    state = state_of(answer)
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


def before_restore(
    answer: WorkflowResult,
    *,
    api: str,
    listed: bool,
    restored_before: bool,
    earlier: UnansweredRestore | None,
) -> Verdict | None:
    """What the query made before sending says; None: the execution is failed, go ahead.

    It is made when an earlier restore of this execution may have taken effect (``listed``:
    the item came from a list answer, which may be stale; ``restored_before``: a restore came
    within the rule's window, and may have got no answer - ``earlier`` is when this very
    item's own unanswered restore was sent, if it had one). A restore that may have been
    applied is never sent blindly.
    """
    state = state_of(answer)
    if state is None:
        # An answer we could not read says nothing: retry, never restore on a guess.
        question = (
            "whether the execution is still failed"
            if listed and not restored_before
            else "whether an earlier restore took effect"
        )
        return Verdict(
            Outcome.RETRYABLE_ERROR,
            Settlement.RELEASED,
            f"{api} did not say {question} ({unreadable_execution(answer)}); nothing sent",
            error_code=answer.errorCode,
        )
    seen = earlier and took_effect(answer, earlier.sent_at, earlier.stopped_before)
    if seen:
        # This delivery's own unit is given back (the lost restore kept its own) and the
        # outcome recorded.
        return Verdict(
            Outcome.RESTORED,
            Settlement.RECORDED,
            f"this event's earlier restore got no answer, but it took effect: {seen}",
        )
    if state != "FAILED":
        why = "the list answer was stale" if listed else "restored already"
        return Verdict(Outcome.SKIPPED, Settlement.RECORDED, f"execution is {state} now: {why}")
    return None


def needs_check(response: WorkflowResult) -> bool:
    """Whether the restore's answer says too little without a query of the execution: no
    answer after sending (was it applied?), or a refusal that may mean "not failed"."""
    if response.status == 0:
        return response.maybe_applied
    return response.status in AMBIGUOUS_REFUSALS


def after_restore(
    response: WorkflowResult,
    check: WorkflowResult | None,
    sending: UnansweredRestore,
    *,
    api: str,
    agency: bool,
) -> Verdict:
    """The restore's answer (and the query that checks it, see :func:`needs_check`) as an
    outcome and what it means for the budget and the marker. ``agency``: the credentials
    came from the invocation (the function's agency), not the settings."""
    if response.ok:
        return Verdict(Outcome.RESTORED, Settlement.SPENT)
    if response.status == 0:
        if response.maybe_applied:
            return _unanswered(check, sending)
        if response.errorCode == DEADLINE_EXCEEDED:
            return Verdict(
                Outcome.RETRYABLE_ERROR,
                Settlement.RELEASED,
                "the invocation's deadline passed before the restore was sent",
            )
        return Verdict(Outcome.RETRYABLE_ERROR, Settlement.RELEASED, f"{api} could not be reached")
    if response.retryable:
        return Verdict(
            Outcome.RETRYABLE_ERROR,
            Settlement.RELEASED,
            f"{api} answered with a transient error",
        )
    if response.status in CREDENTIAL_REFUSALS:
        # A wrong key, a skewed clock or a missing permission is the operator's to fix (the
        # line is an ERROR); a recorded failure would make the redelivery after the fix a
        # "duplicate".
        return Verdict(
            Outcome.RETRYABLE_ERROR,
            Settlement.RELEASED,
            credential_refusal(api, response, agency=agency),
            severity=logging.ERROR,
        )
    if response.status in AMBIGUOUS_REFUSALS:
        state = state_of(check)
        if state and state != "FAILED":
            return Verdict(
                Outcome.SKIPPED,
                Settlement.RECORDED,
                f"execution is {state}, not failed (restored already?)",
            )
    return Verdict(Outcome.FAILED, Settlement.RECORDED, f"{api} refused the restore")


def _unanswered(check: WorkflowResult | None, sending: UnansweredRestore) -> Verdict:
    """The restore left but no answer came back; ``check`` is what the service says now.

    An execution that is no longer failed was restored by this call, and so was one that
    the service says stopped again after the restore was sent (DWR gives the stop time):
    the outcome is ``restored`` and the budget unit is kept; the new failure is a failure
    of its own, restored under its own identity and unit. Otherwise nothing can be told
    apart (never applied, or applied and failed again where the API gives no stop time):
    the unit stays spent and the platform delivers again, and the redelivery asks again
    before anything is sent - never blindly.
    """
    seen = took_effect(check, sending.sent_at, sending.stopped_before) if check else None
    if seen is not None:
        return Verdict(
            Outcome.RESTORED,
            Settlement.SPENT,
            f"no answer to the restore, but it took effect: {seen}",
        )
    state = state_of(check)
    seen = f"the execution is still {state}" if state else "its state could not be read"
    return Verdict(
        Outcome.RETRYABLE_ERROR,
        Settlement.UNKNOWN,
        f"no answer after sending and {seen}; the restore may have been applied",
        maybe_applied=True,
    )


def credential_refusal(api: str, response: WorkflowResult, *, agency: bool) -> str:
    """Why the service refused us, naming what the operator should check."""
    if agency:
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


def iso_ms(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
