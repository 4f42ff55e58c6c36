"""One call of an entry point (:class:`Invocation`); an operator's ``--force`` (:class:`Forced`).

Standard library only: entry points build an Invocation before the pipeline (and ``requests``)
is loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from handler.credentials import Credentials


def random_id() -> str:
    """A random (version 4) UUID in its usual text form, as ``str(uuid.uuid4())`` writes it.

    Built from ``os.urandom`` directly: the ``uuid`` module imports ``platform`` (Python 3.10
    and 3.11), together ≈2 ms of every cold start, for one id per invocation.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class Forced(NamedTuple):
    """An operator's ``restore --force``: who forced it (the OS user) and why (their words).

    Both go into the result, the record and the log line: a restore that skipped the rules
    must say who decided instead of them.
    """

    by: str
    reason: str = ""

    def describe(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        return f"forced by {self.by} (restore --force, allowlist and rules skipped){why}"

    def document(self) -> dict[str, Any]:
        return {"by": self.by, "reason": self.reason or None}


@dataclass(frozen=True)
class Invocation:
    """One call of an entry point: its id for log correlation, deadline and credentials."""

    id: str = field(default_factory=random_id)
    deadline: float | None = None  # time.monotonic() seconds
    credentials: Credentials | None = None  # overrides the settings' (FunctionGraph agency)
    dry_run: bool = False  # this invocation only: everything but the restore call
    forced: Forced | None = None  # an operator's --force (the command line only)
