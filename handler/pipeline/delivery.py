"""What one call of an entry point is (:class:`Invocation`) and what it answers (:class:`Delivery`).

Standard library only: entry points build an Invocation before the pipeline (and ``requests``)
is loaded.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from handler.credentials import Credentials
from handler.report import RESULT_FIELDS


@dataclass(frozen=True)
class Forced:
    """An operator's ``restore --force``: who forced it (the OS user) and why (their words).

    Both go into the result, the record and the log line: a restore that skipped the rules
    must say who decided instead of them.
    """

    by: str
    reason: str = ""

    def describe(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        return f"forced by {self.by} (restore --force, allowlist and rules skipped){why}"


@dataclass(frozen=True)
class Invocation:
    """One call of an entry point: its id for log correlation, deadline and credentials."""

    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    deadline: float | None = None  # time.monotonic() seconds
    credentials: Credentials | None = None  # overrides the settings' (FunctionGraph agency)
    dry_run: bool = False  # this invocation only: everything but the restore call
    forced: Forced | None = None  # an operator's --force (the command line only)


@dataclass
class Delivery:
    """The answer to one delivery: per-item results, a summary and the status to report."""

    results: list[dict[str, Any]]
    retry: bool = False  # some item is not final: the platform should deliver again
    error: dict[str, str] | None = None
    error_status: int | None = None

    @property
    def summary(self) -> dict[str, int]:
        return dict(Counter(result["outcome"] for result in self.results))

    @property
    def status(self) -> int:
        if self.error_status is not None:
            return self.error_status
        if self.retry:
            return 503
        if self.results and all(result["outcome"] == "rejected" for result in self.results):
            return 400
        return 200

    def document(self) -> dict[str, Any]:
        """The JSON answer of every entry point."""
        document: dict[str, Any] = {
            "results": [{k: result.get(k) for k in RESULT_FIELDS} for result in self.results],
            "summary": self.summary,
        }
        if self.error:
            document["error"] = self.error
        return document
