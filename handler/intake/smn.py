"""SMN messages, posted to an HTTP(S) subscription or delivered by FunctionGraph's SMN trigger.

Both carry the same message object, so both read it here and give it the same identity,
``smn:<message_id>``: a message that arrives both ways is restored once. A Notification's
``message`` (JSON text) holds the restore request(s); a subscription or unsubscribe
confirmation is only skipped, never confirmed - that is a deliberate operator step - but the
skip reason carries the ``subscribe_url`` so the operator can find it.
"""

from __future__ import annotations

from typing import Any

from handler.intake.identity import hash_id, rejected_value, smn_identity
from handler.intake.items import REJECT, SKIP, SMN, SMN_TRIGGER, Item, ItemCollector
from handler.intake.limits import envelope_array, nested_payload
from handler.intake.messages import kind, loggable, nonempty_str, preview
from handler.intake.plain import read_payload

SMN_NOTIFICATION = "notification"
SMN_CONFIRMATIONS = frozenset({"subscriptionconfirmation", "unsubscribeconfirmation"})
SMN_TYPES = SMN_CONFIRMATIONS | {SMN_NOTIFICATION}


def is_smn_message(value: dict[str, Any]) -> bool:
    """An SMN HTTP message: an SMN ``type`` and at least one key only SMN messages have."""
    message_type = value.get("type")
    return (
        isinstance(message_type, str)
        and message_type.lower() in SMN_TYPES
        and any(key in value for key in ("message_id", "topic_urn", "message"))
    )


def read_smn_trigger(event: dict[str, Any], out: ItemCollector) -> None:
    """FunctionGraph's SMN trigger: ``{"record": [{"event_source": "smn", "smn": {...}}]}``."""
    records = envelope_array(event, "record", "SMN trigger", "SMN trigger event has no records")
    for index, record in enumerate(records):
        problem = _record_problem(index, record)
        if problem is None:
            read_smn(record["smn"], SMN_TRIGGER, out)
        else:
            out.add(rejected_value(record, SMN_TRIGGER, problem))


def _record_problem(index: int, record: object) -> str | None:
    if not isinstance(record, dict):
        return f"record[{index}] is {kind(record)}, not an object"
    source = record.get("event_source")
    if source is not None and not (isinstance(source, str) and source.lower() == SMN):
        return f"record[{index}] has event_source {preview(source)}, not 'smn'"
    if not isinstance(record.get("smn"), dict):
        return f"record[{index}] has no 'smn' object"
    return None


def read_smn(message: dict[str, Any], shape: str, out: ItemCollector) -> None:
    """One SMN message: a Notification carries requests; a confirmation is only skipped."""
    source = loggable(message.get("topic_urn"))
    message_id = message.get("message_id")
    # A message without an id can only be identified by its content.
    base_id = smn_identity(message_id) if nonempty_str(message_id) else hash_id({"smn": message})
    message_type = message.get("type")
    message_type = message_type.lower() if isinstance(message_type, str) else message_type
    if message_type in SMN_CONFIRMATIONS:
        reason = _confirmation_reason(message_type, message)
        out.add(Item(SKIP, base_id, shape, reason=reason, source=source))
    elif message_type is not None and message_type != SMN_NOTIFICATION:
        reason = f"unknown SMN message type {preview(message.get('type'))}"
        out.add(Item(REJECT, base_id, shape, reason=reason, source=source))
    else:
        payload, problem = nested_payload(message.get("message"), "SMN message")
        if problem is None:
            read_payload(payload, base_id, shape, source, "SMN message", out)
        else:
            out.add(Item(REJECT, base_id, shape, reason=problem, source=source))


def _confirmation_reason(message_type: str, message: dict[str, Any]) -> str:
    what = "subscription" if message_type == "subscriptionconfirmation" else "unsubscribe"
    url = message.get("subscribe_url")
    where = f"subscribe_url: {loggable(url, 1024)}" if nonempty_str(url) else "no subscribe_url"
    return f"SMN {what} confirmation, not a restore request; {where}"
