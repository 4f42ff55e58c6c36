"""Intake: turn one delivery, in whatever envelope it came, into one decision per request.

Failure events reach the function in many shapes - CloudEvents (structured, binary, batch),
Huawei EventGrid's ``{"events": [...]}`` envelope, SMN HTTP(S) messages, FunctionGraph's SMN
trigger and API Gateway events, or a bare ``{"graphName", "executionName"}`` - and the rest of
the function should not care which. The intake reads them all and answers with a list of
:class:`Item`, exactly one per request the delivery carries, each saying what to do with it:
``restore``, ``skip`` (readable, but nothing to do) or ``reject`` (this request is unusable).

In any envelope a request may also be what either query API answers: the OBS
``execution_info`` object, or the DWR v3 answer ``{"workflow_urn", "execution_id",
"status"}`` (``workflow_urn`` names the graph - DWR documents
``urn:fss:<region>:<project>:workflow:<package>:<graph>:<version>``, a graph URN is read too -
and ``execution_id`` the execution's name). It restores when its state is a failure (OBS
``FAILED``, DWR ``fail``) and is skipped in any other state (``running``, ``success``,
``timeout``, ``cancel``, ...).

Two levels of failure, so one bad request never costs its neighbours their restore:

* :class:`IntakeError` - the *delivery* cannot be read at all (too large, not UTF-8, not JSON,
  too deep, empty, too many items, wrong media type). The caller answers 4xx; retrying the
  same bytes cannot help.
* ``Item(verdict="reject")`` - one request inside a readable delivery is bad (a malformed URN,
  an invalid name, a number where an object belongs). Its neighbours are still read.

Limits are checked before the work they protect (size before decoding, depth straight after
parsing, item count while collecting), and a message never echoes more than a short
``ascii()`` preview of the input, so every reason is safe to log and to return to a caller.

Identity (``Item.event_id``) is what the pipeline deduplicates on, so it must be the same for
the same request however often and in whatever envelope it arrives, and never the same for
two requests. Every identity is ``<family>:<part>...`` with percent-encoded parts, built by
:mod:`handler.intake.identity` (which says why), so no sender can forge another family's
identity or make two different pairs of parts meet:

* a CloudEvent is ``ce:<source>:<id>`` (the pair the CloudEvents spec makes unique);
* an SMN message is ``smn:<message_id>`` - the same whether it came by HTTP or by trigger;
* a plain request may name itself with ``"eventId"``: ``request:<eventId>``, deduplicated
  like a CloudEvent id;
* when one event or message carries an array of requests, element *i* gets ``#<i>`` appended;
* anything else is ``sha256:`` + the SHA-256 of the canonical JSON (sorted keys, compact,
  ASCII) of the request *normalised*: ``{"execution": E, "graph": G}`` for a restore (so
  ``graphName``/``graph_name``/URN spellings of one request coincide), the same plus
  ``"state"`` for a skip, and ``{"rejected": <the value as received>}`` for a reject. The
  shapes never overlap, so a rejected value cannot borrow a restore's identity. Such an
  item has ``identified_by_content`` set: the same content later may be a new failure of the
  same execution, so the policy remembers it only briefly.

An identity longer than 512 characters is replaced by a hash of itself within its family
(``ce:sha256=<hex>``), so it stays a safe store key and log field.

The package, one module per concern (envelope modules after powertools' ``data_classes``):

* ``dispatch`` - the entry points :func:`from_http`, :func:`from_event`,
  :func:`from_cloudevent`, which envelope a delivery is, and
  :func:`check_cloudevent_request` (what the CloudEvent target's framework must not parse);
* ``cloud_events``, ``eventgrid``, ``smn`` (HTTP messages and the FunctionGraph trigger),
  ``apigateway`` - one per envelope family;
* ``plain`` - the restore request every envelope finally carries: names, URNs (OBS and
  DWR spellings), states;
* ``items`` (what the intake answers with), ``identity``, ``limits`` (bytes to checked JSON)
  and ``messages`` (how input is quoted) - shared by all of the above.

What it may import: the standard library and :mod:`handler.names`, nothing of a later stage
(admission, client, report). Import cost matters at cold start, so the ``cloudevents`` SDK is
imported inside the functions that read CloudEvents, on first use.
"""

from handler.intake.dispatch import (
    check_cloudevent_request,
    from_cloudevent,
    from_event,
    from_http,
)
from handler.intake.items import MAX_ITEMS, IntakeError, Item
from handler.intake.limits import MAX_BODY_BYTES, MAX_DEPTH

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "MAX_ITEMS",
    "IntakeError",
    "Item",
    "check_cloudevent_request",
    "from_cloudevent",
    "from_event",
    "from_http",
]
