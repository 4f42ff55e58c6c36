"""The identity rules: ``Item.event_id``, what the pipeline deduplicates on.

It must be the same for the same request however often and in whatever envelope it arrives
(the package docstring lists the forms), and two different requests must never share one:
a shared identity makes the second a ``duplicate`` of the first, and nothing restores it.

So every identity is ``<family>:<part>[:<part>...]``, built only here:

* the **family** says who made it - ``ce`` (a CloudEvent's source and id), ``smn`` (an SMN
  message id), ``request`` (a plain request's own ``eventId``), ``sha256`` (a request
  without an id, by its content), ``sweep`` (a failure a sweep listed) and ``cli`` (an
  operator's command). It is chosen by the code that reads the delivery, never by the
  delivery, so no sender can write into another family: a CloudEvent whose source is
  ``sweep:etl`` is ``ce:sweep%3Aetl:…``, never a sweep's identity;
* every **part** is percent-encoded (RFC 3986: only ``A-Z a-z 0-9 - . _ ~`` stay as they
  are, everything else - ``:``, ``/``, ``#``, ``@``, ``%``, non-ASCII - becomes ``%XX`` of its
  UTF-8 bytes), so no part contains the separator: CloudEvent source ``orders/eu`` with id
  ``7`` is ``ce:orders%2Feu:7`` and source ``orders`` with id ``eu/7`` is ``ce:orders:eu%2F7``.

Percent-encoding rather than length prefixes (``ce:9:orders/eu:1:7``): the usual ids (an SMN
message id, a ticket number, ``HC.OBS``) come out unchanged and readable in log lines and in
``state`` listings, where an operator copies them into ``state forget``; every identity is
printable ASCII (a safe store key and log field); and the encoding is reversible, so the
parts can always be told apart.

Three suffixes never occur inside a part, so they cannot be forged either: ``#<i>`` for
element *i* of an event carrying an array of requests, ``@<graph>/<execution>`` for an id
that was reused for another execution (:func:`reused_identity`), and ``sha256=<hex>`` as the
whole part list of an identity longer than :data:`MAX_ID_CHARS` (a hash of it, in its family).
The store's own keys (the sweep's ``sweep:lease``) have a shape no item identity has: a sweep
identity always has three parts.
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import quote

from handler.intake.items import REJECT, Item

MAX_ID_CHARS = 512

CLOUDEVENT_FAMILY = "ce"
SMN_FAMILY = "smn"
REQUEST_FAMILY = "request"
CONTENT_FAMILY = "sha256"
SWEEP_FAMILY = "sweep"
CLI_FAMILY = "cli"


def cloudevent_identity(source: str, event_id: str) -> str:
    """A CloudEvent: its ``source`` and ``id``, the pair the CloudEvents spec makes unique."""
    return _identity(CLOUDEVENT_FAMILY, source, event_id)


def smn_identity(message_id: str) -> str:
    """An SMN message, the same whether it came by an HTTP subscription or the trigger."""
    return _identity(SMN_FAMILY, message_id)


def request_identity(own_id: str) -> str:
    """A plain request that names itself with ``eventId``."""
    return _identity(REQUEST_FAMILY, own_id)


def sweep_identity(graph: str, execution: str, stopped_at: str) -> str:
    """A failure a sweep listed: the execution and when it stopped (a new failure of the
    same execution stops later, so it is a new identity with its own budget unit)."""
    return _identity(SWEEP_FAMILY, graph, execution, stopped_at)


def cli_identity(*parts: str) -> str:
    """What an operator's command acts on, in its own family so no event can pre-empt it."""
    return _identity(CLI_FAMILY, *parts)


def element_identity(base: str, index: int) -> str:
    """Element ``index`` of an event (or message) whose payload is an array of requests."""
    return _bounded(base.partition(":")[0], f"{base}#{index}")


def reused_identity(identity: str, graph: str, execution: str) -> str:
    """The key of ``identity`` used again for another execution than the one recorded.

    Senders reuse ids by mistake (a ticket number for two runs, a counter that restarted);
    the second request is still a real failure, so it is handled under this key of its own
    instead of being answered with the first one's outcome.
    """
    suffix = f"@{quote(graph, safe='')}/{quote(execution, safe='')}"
    return _bounded(identity.partition(":")[0], identity + suffix)


def hash_id(normalised: object) -> str:
    """``sha256:`` + hex digest of the canonical JSON of a normalised value.

    Sorted keys, compact separators and ASCII escapes make the text - and so the identity -
    the same in every process and whatever key order or envelope the value came in.
    """
    text = json.dumps(
        normalised, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_opaque
    )
    return f"{CONTENT_FAMILY}:" + hashlib.sha256(text.encode("ascii")).hexdigest()


def _opaque(value: object) -> str:
    return f"<{type(value).__name__}>"


def _identity(family: str, *parts: str) -> str:
    encoded = ":".join(_encode(part) for part in parts)
    return _bounded(family, f"{family}:{encoded}")


def _encode(part: str) -> str:
    # surrogatepass: JSON can carry a lone surrogate ("\ud800"); it must encode, not raise.
    return quote(part.encode("utf-8", "surrogatepass"), safe="")


def _bounded(family: str, identity: str) -> str:
    """``identity`` itself, or - when longer than a store key and log field should be - a
    hash of it that stays in its family (``sha256=`` never occurs in an encoded part)."""
    if len(identity) <= MAX_ID_CHARS:
        return identity
    return f"{family}:sha256=" + hashlib.sha256(identity.encode("ascii")).hexdigest()


def rejected_value(value: object, shape: str, reason: str) -> Item:
    """A reject for a value without an identity of its own: identified by what was received."""
    return Item(REJECT, hash_id({"rejected": value}), shape, reason=reason)
