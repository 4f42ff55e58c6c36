"""Escalation through SMN: the people who must act are told, once, when the function gives up.

A give-up is an item that ends ``budget_exhausted``, ``failed``, or ``skipped`` because a
rule's ``leave_on`` pattern left it alone: nothing more will restore that execution unless an
operator does. :class:`Escalation` is an observer of the restorer (it sees every result after
its log line) and never publishes there: it only writes the message into the state store's
outbox, so no outcome waits for SMN. :meth:`Escalation.flush` - at the end of every
invocation, where the sink is flushed, and when a process closes - sends what the outbox
holds, in bounded time.

*Once.* A give-up's message lives under its own key family, ``notify:<graph>/<execution>``,
in the store's dedupe records (:meth:`~handler.store.StateStore.claim` /
:meth:`~handler.store.StateStore.finish`): a message already sent is ``done`` there, one being
sent is ``in_progress``, so across redeliveries, other events of the same execution and other
instances there is at most one message per give-up. The record is kept for the budget window:
a give-up after that is a new one (its budget came back and was spent again).

*Never lost.* The outbox is the store's deferred-failure memory under the same key
(:meth:`~handler.store.StateStore.remember_deferred`), and ``finish`` of that key forgets it in
the same atomic step: a message is either sent-and-recorded or still in the outbox, whatever
crashes between. A publish SMN did not take (down, 5xx, a lost answer) puts it back due at
once, for the next invocation - any event or sweep - to send; a lost answer may thus deliver
twice (at least once beats never), and nothing else can.

*Digest.* More than ``RESTORE_NOTIFY_DIGEST`` messages within 10 minutes (counted across
instances with the store's sliding rate log) go out as one digest, because SMN drops email and
SMS beyond 1,000 per account per 10 minutes and an operator reads one message about 300
executions, not 300 messages.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from handler.client.sending import SendOutcome, SendResult
from handler.client.smn import SmnClient
from handler.credentials import Credentials
from handler.invocation import Invocation
from handler.ledger import Ledger
from handler.outage import BreakerEvent
from handler.outcomes import Outcome, Result
from handler.report import Reporter
from handler.settings import Settings
from handler.store import StateStore, StoreUnavailable
from handler.store.base import DONE

__all__ = ["DIGEST_WINDOW", "NOTIFY_PREFIX", "Escalation", "give_up_reason", "notify_key"]

NOTIFY_PREFIX = "notify:"
DIGEST_WINDOW = 600.0  # SMN's email/SMS allowance is counted per 10 minutes
_DIGEST_SUBJECT = "notify-digest"
# Outbox entries read per flush: the store hands back due entries of every kind, longest due
# first, so this is generous; a flush is bounded in time anyway.
_OUTBOX_READ = 500
# Why no error text: OBS gives none, and DWR's is read only when a rule or check queried it.
_UNKNOWN_ERROR = "(not known: the API gives none, or was not asked)"
_SENDING_TTL = 60.0  # how long one flush may hold a message before another may send it
DEFAULT_FLUSH_SECONDS = 5.0

Publisher = Callable[[Credentials], SmnClient]


def iso_utc(seconds: float) -> str:
    """Wall-clock seconds as an ISO 8601 UTC time, to the second (what people read)."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def notify_key(graph: str, execution: str) -> str:
    """The store key of one execution's give-up message (its own family beside the events')."""
    return f"{NOTIFY_PREFIX}{graph}/{execution}"


def give_up_reason(result: Result) -> str | None:
    """Why ``result`` is a give-up an operator must hear of, or None when it is not."""
    if result.forced is not None:
        return None  # an operator's --force: that operator is already looking
    if result.outcome is Outcome.BUDGET_EXHAUSTED:
        return "restore budget exhausted"
    if result.outcome is Outcome.FAILED:
        return "the restore was refused"
    if result.outcome is Outcome.SKIPPED and result.reason.startswith("left alone: leave_on"):
        return "left alone by a leave_on rule"
    return None


class Escalation:
    """Give-up messages: queued by the observer call, sent by :meth:`flush`.

    ``publisher`` makes the SMN client for a set of credentials (the settings' keys, else the
    last invocation's agency keys).
    """

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        reporter: Reporter,
        publisher: Publisher,
        credentials: Credentials | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert settings.notify is not None
        self._settings = settings
        self._digest = settings.notify.digest
        self._store = store
        self._reporter = reporter
        self._publisher = publisher
        self._credentials = credentials
        self._clock = clock
        self._clients: dict[Credentials, SmnClient] = {}
        # Each message's steps go into its execution's ledger (``history``).
        self._ledger = Ledger(store, settings.dedupe_retention, reporter, clock)

    # --- the observer -------------------------------------------------------------------------

    def __call__(self, result: Result, invocation: Invocation) -> None:
        """Queue a give-up's message in the outbox (one store write or two; no network)."""
        if invocation.credentials is not None:
            self._credentials = self._credentials or invocation.credentials
        why = give_up_reason(result)
        if why is None or not result.graph_name or not result.execution_name:
            return
        if invocation.dry_run:
            return
        key = notify_key(result.graph_name, result.execution_name)
        try:
            claim = self._store.claim(key, _SENDING_TTL)
            if not claim.acquired:
                return  # sent already (done), or another instance holds it right now
            message = self._message(result, why)
            self._store.remember_deferred(key, message, self._clock(), self._retention)
            self._store.release(key, claim.token)
        except StoreUnavailable as exc:
            self._log(logging.ERROR, "give-up not queued", result, detail=str(exc))
            return
        self._log(logging.INFO, "give-up queued", result)
        self._ledger.notification(result.graph_name, result.execution_name, "queued", why=why)

    def breaker(self, event: BreakerEvent) -> None:
        """Queue a message that a graph's breaker opened, reopened or closed.

        The store hands each transition to exactly one instance, and the key names the
        transition (graph, kind, when the breaker opened), so a retried call queues nothing
        twice. Sent by :meth:`flush` like a give-up, digested with them past the limit."""
        opened = str(event.fields.get("openedAt") or iso_utc(self._clock()))
        key = f"{NOTIFY_PREFIX}breaker:{quote(event.graph, safe='')}:{event.kind}:{opened}"
        try:
            claim = self._store.claim(key, _SENDING_TTL)
            if not claim.acquired:
                return  # queued (or sent) already
            self._store.remember_deferred(key, _breaker_message(event), self._clock(),
                                          self._retention)  # fmt: skip
            self._store.release(key, claim.token)
        except StoreUnavailable as exc:
            self._reporter.notification(
                logging.ERROR, "breaker message not queued", {"graphName": event.graph,
                                                              "detail": str(exc)}
            )  # fmt: skip

    # --- the sender ---------------------------------------------------------------------------

    def flush(self, seconds: float = DEFAULT_FLUSH_SECONDS) -> int:
        """Send what the outbox holds within ``seconds``; how many messages SMN took."""
        deadline = time.monotonic() + max(0.0, seconds)
        client = self._client()
        if client is None:
            return 0
        try:
            held = self._take_due(deadline)
        except StoreUnavailable as exc:
            self._reporter.notification(
                logging.ERROR, "notifications not sent", {"detail": str(exc)}
            )
            return 0
        singles, digest = [], []
        for entry in held:
            slot = self._slot()
            (singles if slot is not None else digest).append((entry, slot))
        sent = 0
        for entry, slot in singles:
            message = entry[2]
            outcome = self._send(client, [entry], message["subject"], message["text"], deadline)
            if outcome is not SendOutcome.ACCEPTED and slot:
                self._quietly(self._store.return_rate_slot, _DIGEST_SUBJECT, slot)
            sent += outcome is SendOutcome.ACCEPTED
        if digest:
            entries = [entry for entry, _ in digest]
            subject, text = _digest_text([entry[2] for entry in entries])
            sent += self._send(client, entries, subject, text, deadline) is SendOutcome.ACCEPTED
        return sent

    def _take_due(self, deadline: float) -> list[tuple[str, str, dict[str, Any]]]:
        """The due outbox entries this flush now holds: (key, claim token, message)."""
        held = []
        for key, entry in self._store.due_deferred(_OUTBOX_READ):
            if time.monotonic() >= deadline:
                break
            if not key.startswith(NOTIFY_PREFIX) or not _readable(entry):
                continue
            claim = self._store.claim(key, _SENDING_TTL)
            if claim.acquired:
                held.append((key, claim.token, entry))
            elif claim.state == DONE:  # pragma: no cover - finish forgets the entry with it
                continue
        return held

    def _slot(self) -> str | None:
        """A place among the last 10 minutes' single messages, or None: digest it."""
        try:
            slot = self._store.take_rate_slot(_DIGEST_SUBJECT, self._digest, DIGEST_WINDOW)
        except StoreUnavailable:
            return ""  # cannot count: a single message is what the operator needs most
        return slot.token if slot.granted else None

    def _send(
        self,
        client: SmnClient,
        entries: Sequence[tuple[str, str, dict[str, Any]]],
        subject: str,
        text: str,
        deadline: float,
    ) -> SendOutcome:
        """Publish one message for ``entries``; record them sent, or put them back."""
        email = text
        sms = subject
        if time.monotonic() >= deadline:
            result = None
        else:
            try:
                result = client.publish(subject, text, email=email, sms=sms, deadline=deadline)
            except ValueError as exc:  # a message SMN can never take: say so, do not loop
                result = SendResult(SendOutcome.PERMANENT, 0, error_message=str(exc))
        outcome = result.outcome if result is not None else SendOutcome.TRANSIENT
        for key, token, message in entries:
            if outcome is SendOutcome.TRANSIENT:
                self._quietly(self._store.remember_deferred, key, message, self._clock(),
                              self._retention)  # fmt: skip
                self._quietly(self._store.release, key, token)
            else:
                record = {
                    "notified": outcome is SendOutcome.ACCEPTED,
                    "messageId": result.message_id if result is not None else None,
                    "sentAt": iso_utc(self._clock()),
                    "digest": len(entries) > 1,
                    "graphName": message.get("graphName"),
                    "executionName": message.get("executionName"),
                }
                self._quietly(self._store.finish, key, token, record, self._retention)
        self._log_send(outcome, result, entries)
        self._note_sent(outcome, result, entries)
        return outcome

    def _note_sent(
        self,
        outcome: SendOutcome,
        result: SendResult | None,
        entries: Sequence[tuple[str, str, dict[str, Any]]],
    ) -> None:
        """Each give-up's ledger: sent (alone, or folded into a digest of how many), kept
        for the next invocation (SMN did not take it), or refused for good."""
        state = {SendOutcome.ACCEPTED: "sent", SendOutcome.TRANSIENT: "kept"}.get(
            outcome, "refused"
        )
        for _, _, message in entries:
            graph, execution = message.get("graphName"), message.get("executionName")
            if not graph or not execution:
                continue  # a breaker's message: no execution's
            self._ledger.notification(
                graph,
                execution,
                state,
                digest=len(entries) if len(entries) > 1 else None,
                messageId=result.message_id if result is not None else None,
                errorCode=result.error_code if result is not None else None,
            )

    # --- helpers ------------------------------------------------------------------------------

    @property
    def _retention(self) -> float:
        return max(self._settings.budget_window, DIGEST_WINDOW)

    def _client(self) -> SmnClient | None:
        credentials = self._credentials
        if credentials is None:
            return None
        if credentials not in self._clients:
            self._clients[credentials] = self._publisher(credentials)
        return self._clients[credentials]

    def _message(self, result: Result, why: str) -> dict[str, Any]:
        graph, execution = result.graph_name, result.execution_name
        subject = f"[obs-workflow-restore] gave up on {graph}/{execution}: {why}"
        try:
            times = self._store.budget_times(f"{graph}/{execution}", self._settings.budget_window)
            tried = [f"  - restore sent at {iso_utc(at)}" for at in times] or [
                "  - none within the budget window"
            ]
        except StoreUnavailable:  # the message still goes; it says the history is unknown
            tried = ["  - unknown: the state store could not be read"]
        lines = [
            f"The function gave up on execution {execution} of graph {graph}: {why}.",
            "",
            f"Outcome: {result.outcome.value}",
            f"Reason: {result.shown_reason}",
            f"Rule: {result.rule or '(none)'}",
            f"Execution error: {result.execution_error or _UNKNOWN_ERROR}",
        ]
        if result.error_code:
            lines.append(f"Error: {result.error_code} {result.error_message or ''}".rstrip())
        lines += [
            "",
            f"Restores already tried (rule {result.rule or '(none)'}):",
            *tried,
            "",
            "To restore it anyway:",
            f"  obs-workflow-restore restore --graph {graph} --execution {execution} --force",
            "To let the function restore the graph again after a pause:",
            f"  obs-workflow-restore resume {graph}",
        ]
        return {
            "graphName": graph,
            "executionName": execution,
            "outcome": result.outcome.value,
            "why": why,
            "subject": subject,
            "text": "\n".join(lines),
            "queuedAt": self._clock(),
        }

    def _quietly(self, call: Callable[..., Any], *args: Any) -> None:
        try:
            call(*args)
        except StoreUnavailable as exc:  # the claim's TTL hands the message to a later flush
            self._reporter.notification(
                logging.ERROR, "notification state not kept", {"detail": str(exc)}
            )

    def _log(self, level: int, message: str, result: Result, **fields: Any) -> None:
        self._reporter.notification(level, message, {
            "graphName": result.graph_name,
            "executionName": result.execution_name,
            "outcome": result.outcome.value,
            **fields,
        })  # fmt: skip

    def _log_send(
        self,
        outcome: SendOutcome,
        result: SendResult | None,
        entries: Sequence[tuple[str, str, dict[str, Any]]],
    ) -> None:
        executions = [f"{m.get('graphName')}/{m.get('executionName')}" for _, _, m in entries]
        fields: dict[str, Any] = {
            "sendOutcome": outcome.value,
            "executions": executions[:50],
            "digest": len(entries) > 1,
        }
        if result is not None:
            fields.update(
                status=result.status,
                messageId=result.message_id,
                errorCode=result.error_code,
                errorMessage=result.error_message,
            )
        if outcome is SendOutcome.ACCEPTED:
            self._reporter.notification(logging.INFO, "give-up notified", fields)
        elif outcome is SendOutcome.TRANSIENT:
            self._reporter.notification(logging.WARNING, "give-up notification kept", fields)
        else:
            self._reporter.notification(logging.ERROR, "give-up notification refused", fields)


def _breaker_message(event: BreakerEvent) -> dict[str, Any]:
    """The message of one breaker transition: what happened, the evidence, what to do."""
    graph = event.graph
    held = event.kind != "closed"
    subject = f"[obs-workflow-restore] breaker {event.kind} for graph {graph}"
    lines = [event.message, ""]
    lines += [f"{name}: {value}" for name, value in event.fields.items() if name != "refailures"]
    for refailure in event.fields.get("refailures") or ():
        lines.append(f"  - {refailure.get('executionName')} failed again at "
                     f"{refailure.get('failedAt')}")  # fmt: skip
    if held:
        lines += [
            "",
            f"Restores of graph {graph} are held; one canary is tried after each cooldown.",
            "To restore one execution anyway:",
            f"  obs-workflow-restore restore --graph {graph} --execution EXECUTION --force",
            "To see what waits:",
            "  obs-workflow-restore status",
        ]
    return {
        "graphName": graph,
        "executionName": "",
        "outcome": f"breaker {event.kind}",
        "why": f"breaker {event.kind}",
        "subject": subject,
        "text": "\n".join(lines),
    }


def _readable(entry: dict[str, Any]) -> bool:
    return isinstance(entry.get("subject"), str) and isinstance(entry.get("text"), str)


def _digest_text(messages: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """One message for many give-ups: a line each, then each message in full."""
    subject = f"[obs-workflow-restore] gave up on {len(messages)} executions"
    lines = [f"The function gave up on {len(messages)} executions:", ""]
    lines += [
        f"  - {m.get('graphName')}/{m.get('executionName')}: {m.get('why')}" for m in messages
    ]
    lines += ["", "Each in full:"]
    for message in messages:
        lines += ["", "-" * 60, str(message.get("text"))]
    return subject, "\n".join(lines)
