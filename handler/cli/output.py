"""How results reach the terminal: a column of fields, or a table of a delivery's items.

Shared by the commands that print the pipeline's results (restore, replay, sweep), so one
item looks the same whichever command handled it. ``--json`` output is each command's own
``json.dumps`` of the same document.
"""

from __future__ import annotations

import json
from typing import Any

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
