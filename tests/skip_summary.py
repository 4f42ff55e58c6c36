"""The last words of `make test`: which tests did not run, and why, in one line per cause.

pytest lists skips among dozens of short-summary lines, where "32 skipped" is easy to read as
"passed". A run without ``redis-server`` (or without the target CPython) tested less than the
README promises, so it says so plainly. Loaded by tests/conftest.py (and by ``-p`` in the test
of this hook).
"""

from __future__ import annotations

from typing import Any

# (a word every skip reason of the group has, what did not run)
SKIP_GROUPS = (
    ("redis-server", "Redis and concurrency tests"),
    ("CPython", "package tests under FunctionGraph's CPython"),
)


def skip_reason(report: Any) -> str:
    """The reason pytest recorded for a skipped test (``Skipped: `` dropped)."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def skip_lines(reports: list[Any]) -> list[str]:
    """One line for each group of :data:`SKIP_GROUPS` that had a skipped test."""
    reasons = [skip_reason(report) for report in reports]
    lines = []
    for word, what in SKIP_GROUPS:
        matching = [reason for reason in reasons if word in reason]
        if matching:
            lines.append(
                f"NOT TESTED: {len(matching)} {what} were skipped: {matching[0]}"
                " (CI=true makes this a failure)"
            )
    return lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    for line in skip_lines(terminalreporter.stats.get("skipped", [])):
        terminalreporter.write_line(line, yellow=True, bold=True)
