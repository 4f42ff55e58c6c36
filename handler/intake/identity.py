"""The identity rules: ``Item.event_id``, what the pipeline deduplicates on.

It must be the same for the same request however often and in whatever envelope it arrives
(the package docstring lists the forms). Envelopes build their ``"<source>/<id>"`` or
``"smn:<message_id>"`` identities with :func:`safe_id`; a request without an id of its own is
identified by :func:`hash_id` of its normalised content.
"""

from __future__ import annotations

import hashlib
import json

from handler.intake.items import REJECT, Item

MAX_ID_CHARS = 512


def hash_id(normalised: object) -> str:
    """``sha256:`` + hex digest of the canonical JSON of a normalised value.

    Sorted keys, compact separators and ASCII escapes make the text - and so the identity -
    the same in every process and whatever key order or envelope the value came in.
    """
    text = json.dumps(
        normalised, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_opaque
    )
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()


def _opaque(value: object) -> str:
    return f"<{type(value).__name__}>"


def safe_id(identity: str) -> str:
    """Keep an identity as is when it is a short printable ASCII string, else hash it.

    The ``id:`` prefix inside the hash keeps these apart from the canonical-JSON hashes.
    """
    if len(identity) <= MAX_ID_CHARS and identity.isascii() and identity.isprintable():
        return identity
    digest = hashlib.sha256(("id:" + identity).encode("utf-8", "surrogatepass")).hexdigest()
    return "sha256:" + digest


def rejected_value(value: object, shape: str, reason: str) -> Item:
    """A reject for a value without an identity of its own: identified by what was received."""
    return Item(REJECT, hash_id({"rejected": value}), shape, reason=reason)
