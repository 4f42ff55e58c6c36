"""How results reach the terminal: a column of fields, a table of a delivery's items, the
exit status, and how much of the function's own logging a command shows.

Shared by the commands that print the pipeline's results (restore, replay, sweep), so one
item looks the same - and ends the process the same way - whichever command handled it.
``--json`` output is each command's own ``json.dumps`` of the same document.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from handler.settings import Settings

# The exit status of every command, one rule: scripts and schedulers act on it without
# reading the output.
EXIT_DONE = 0  # every item succeeded or there was nothing to do
EXIT_NOT_DONE = 1  # some item failed or must be retried: someone has to look, or run it again
EXIT_COULD_NOT_RUN = 2  # a flag, a setting, a file or the state store: nothing was decided
# Outcomes that leave nothing to do: the restore happened (or, in a dry run, would), or it
# was not needed now (not failed, already handled, not due yet: the sweep restores it later).
DONE_OUTCOMES = frozenset({"restored", "dry_run", "skipped", "duplicate", "deferred"})


def exit_code(outcomes: Iterable[str], *, incomplete: bool = False) -> int:
    """:data:`EXIT_DONE` when every outcome is done and nothing was left ``incomplete`` (a
    delivery to redeliver, a graph that could not be listed, failures left for the next
    sweep); :data:`EXIT_NOT_DONE` otherwise - ``failed``, ``rejected``, ``budget_exhausted``
    and ``retryable_error`` included, and any outcome this rule does not know."""
    if incomplete or any(outcome not in DONE_OUTCOMES for outcome in outcomes):
        return EXIT_NOT_DONE
    return EXIT_DONE


def quiet_unless_verbose(settings: Settings, verbose: bool) -> Settings:
    """The settings a command builds its pipeline with: the function's own log lines (the
    start-up settings document, one line per item) only with ``-v``. Warnings and errors -
    a refused credential, an exhausted budget - still reach standard error."""
    if verbose or settings.log_level in ("WARNING", "ERROR"):
        return settings
    return replace(settings, log_level="WARNING")


TABLE_COLUMNS = ("outcome", "graphName", "executionName", "status", "attempts", "reason")


def print_fields(result: dict[str, Any], *, as_json: bool) -> None:
    """One result: a JSON line, or one right-aligned ``name: value`` a line."""
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {'' if value is None else value}")


def print_table(document: dict[str, Any], status: int, *, footer: bool = True) -> None:
    """A row per item of a result document; the footer sums the outcomes up."""
    rows = [
        [_cell(result.get(column)) for column in TABLE_COLUMNS] for result in document["results"]
    ]
    widths = [
        max([len(column)] + [len(row[i]) for row in rows]) for i, column in enumerate(TABLE_COLUMNS)
    ]
    print(
        "  ".join(column.ljust(width) for column, width in zip(TABLE_COLUMNS, widths, strict=True))
    )
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    if not footer:
        return
    summary = ", ".join(f"{count} {outcome}" for outcome, count in document["summary"].items())
    error = document.get("error")
    print(f"status {status}: {summary or 'no items'}" + (f" ({error['message']})" if error else ""))


def _cell(value: Any) -> str:
    """A long reason would push every later column off the screen: cut it at 60 characters."""
    text = "" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def execution_subject(subject: str) -> tuple[str, str] | None:
    """``GRAPH/EXECUTION`` as an operator types it, checked by the names' rules; None (with
    the reason on standard error) when it is not one."""
    import sys

    from handler.names import InvalidNameError, validate_name

    graph, slash, execution = subject.partition("/")
    try:
        if not slash:
            raise InvalidNameError("subject", "must be GRAPH/EXECUTION")
        validate_name(graph, "graph")
        validate_name(execution, "execution")
    except InvalidNameError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    return graph, execution
