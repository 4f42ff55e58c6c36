"""Where messages and metrics go: SMN topic URNs, Cloud Eye namespaces, regional endpoints.

Kept outside :mod:`handler.client` so settings can check them at start-up without importing
``requests`` (the FunctionGraph event path imports settings on every cold start). The rules
are the services' own, as their API references and the official SDKs' models state them; a
value that breaks one raises :class:`ValueError` with a message that never echoes more than a
short, printable preview of the input.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from handler.names import validate_name

__all__ = [
    "DEFAULT_METRICS_NAMESPACE",
    "TopicUrn",
    "ces_endpoint",
    "parse_topic_urn",
    "smn_endpoint",
    "validate_namespace",
    "validate_region",
]

DEFAULT_METRICS_NAMESPACE = "WORKFLOW.restore"
# Huawei Cloud region ids: cn-north-4, ap-southeast-1, eu-west-101, ae-ad-1, tr-central-201.
_REGION = re.compile(r"[a-z]{2}-[a-z]+-[0-9]{1,3}")
# SMN topic names: 1-255 letters, digits, "-" and "_", starting with a letter or digit.
_TOPIC = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,254}")
# Cloud Eye: "service.item", each part a letter then letters, digits or "_"; 3-32 in all.
_NAMESPACE = re.compile(r"[A-Za-z][A-Za-z0-9_]*\.[A-Za-z][A-Za-z0-9_]*")
NAMESPACE_LENGTH = (3, 32)
# The services' own namespaces (SYS.ECS, AGT.ECS, SRE.…): Cloud Eye refuses custom data there.
_RESERVED_SERVICES = frozenset({"SYS", "AGT", "SRE"})


class TopicUrn(NamedTuple):
    """An SMN topic, ``urn:smn:<region>:<project_id>:<topic>``; ``str()`` is the URN."""

    region: str
    project_id: str
    topic: str

    def __str__(self) -> str:
        return f"urn:smn:{self.region}:{self.project_id}:{self.topic}"


def parse_topic_urn(value: object) -> TopicUrn:
    """The parts of a topic URN, each checked: a region id, a project id, a topic name.

    The project id goes into the publish path and a signed header, and the region decides the
    default endpoint, so a URN that is merely "some text with colons" is refused here rather
    than becoming a 404 from SMN at the worst moment (a give-up nobody hears about).
    """
    if not isinstance(value, str):
        raise ValueError(f"topic URN must be text, not {type(value).__name__}")
    parts = value.strip().split(":")
    if len(parts) != 5 or parts[0] != "urn" or parts[1] != "smn":
        raise ValueError(
            f"topic URN {_preview(value)} must be urn:smn:<region>:<project_id>:<topic>"
        )
    _, _, region, project_id, topic = parts
    validate_region(region, "topic URN region")
    validate_name(project_id, "topic URN project id")
    if _TOPIC.fullmatch(topic) is None:
        raise ValueError(
            f"topic URN topic name {_preview(topic)} must be 1-255 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return TopicUrn(region, project_id, topic)


def validate_region(value: object, what: str = "region") -> str:
    """``value`` when it is shaped like a Huawei Cloud region id (``cn-north-4``)."""
    if not isinstance(value, str) or _REGION.fullmatch(value) is None:
        shown = _preview(value) if isinstance(value, str) else type(value).__name__
        raise ValueError(f"{what} {shown} is not a region id like cn-north-4")
    return value


def smn_endpoint(region: str) -> str:
    """SMN's regional endpoint."""
    return f"https://smn.{validate_region(region)}.myhuaweicloud.com"


def ces_endpoint(region: str) -> str:
    """Cloud Eye's regional endpoint."""
    return f"https://ces.{validate_region(region)}.myhuaweicloud.com"


def validate_namespace(value: object) -> str:
    """``value`` when Cloud Eye takes it as a custom metric namespace (``service.item``)."""
    if not isinstance(value, str):
        raise ValueError(f"metric namespace must be text, not {type(value).__name__}")
    low, high = NAMESPACE_LENGTH
    if not low <= len(value) <= high or _NAMESPACE.fullmatch(value) is None:
        raise ValueError(
            f"metric namespace {_preview(value)} must be service.item: {low}-{high} characters, "
            "each part a letter followed by letters, digits or '_'"
        )
    if value.split(".", 1)[0].upper() in _RESERVED_SERVICES:
        raise ValueError(
            f"metric namespace {_preview(value)} is a Huawei Cloud service's own "
            f"({', '.join(sorted(_RESERVED_SERVICES))}): choose another service part"
        )
    return value


def _preview(value: str) -> str:
    shown = value if len(value) <= 60 else value[:60] + "..."
    return ascii(shown)
