"""Rows of the results table, and the table itself as plain text and as Markdown.

A row compares one number of ours with the same number of the baseline (the official SDK, or
the naive SDK function) from the same run; only the ratio is held to a target, because
absolute times depend on the machine.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

HEADER = ("metric", "ours", "SDK / naive", "ratio", "target", "result")


@dataclass
class Row:
    """One compared metric. ``limit`` bounds ``ratio`` from above (``at_most``) or below."""

    section: str
    metric: str
    ours: float
    baseline: float
    unit: str
    limit: float | None = None
    at_most: bool = True
    ratio_override: float | None = None  # e.g. a median of per-round ratios

    @property
    def ratio(self) -> float:
        if self.ratio_override is not None:
            return self.ratio_override
        return self.ours / self.baseline if self.baseline else math.nan

    @property
    def target(self) -> str:
        if self.limit is None:
            return "-"
        return f"{'≤' if self.at_most else '≥'} {self.limit:.2f}x"

    @property
    def passed(self) -> bool | None:
        if self.limit is None:
            return None
        if math.isnan(self.ratio):
            return False
        return self.ratio <= self.limit if self.at_most else self.ratio >= self.limit

    @property
    def result(self) -> str:
        return {None: "info", True: "PASS", False: "FAIL"}[self.passed]

    def miss(self) -> str | None:
        """How far a failed row is from its target, in words; None when it holds."""
        if self.passed is not False or self.limit is None:
            return None
        if math.isnan(self.ratio):
            return "no valid measurement (errors, or restores not confirmed; see the JSON)"
        off = abs(self.ratio / self.limit - 1)
        how = "over" if self.at_most else "short of"
        return f"{self.ratio:.2f}x, {off:.0%} {how} the target {self.target}"

    def cells(self) -> tuple[str, ...]:
        return (
            self.metric,
            _value(self.ours, self.unit),
            _value(self.baseline, self.unit),
            "-" if math.isnan(self.ratio) else f"{self.ratio:.2f}x",
            self.target,
            self.result,
        )

    def to_json(self) -> dict[str, object]:
        document = asdict(self)
        document.update(ratio=self.ratio, target=self.target, result=self.result)
        return document


def text_table(rows: list[Row]) -> str:
    """A fixed-width table for the terminal."""
    lines = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    rendered = []
    for number, line in enumerate(lines):
        rendered.append(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        )
        if number == 0:
            rendered.append("  ".join("-" * width for width in widths))
    return "\n".join(rendered)


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join(["---", "---:", "---:", "---:", "---", "---"]) + "|",
    ]
    lines.extend("| " + " | ".join(row.cells()) + " |" for row in rows)
    return "\n".join(lines)


def _value(number: float, unit: str) -> str:
    if math.isnan(number):
        return "-"
    if unit == "req/s":
        return f"{number:,.0f} {unit}"
    if unit == "MiB":
        return f"{number:,.1f} {unit}"
    if unit == "ms" and number >= 100:
        return f"{number:,.0f} {unit}"
    return f"{number:,.2f} {unit}" if unit else f"{number:,.2f}"
