"""Rows of the results table, and the table itself as plain text and as Markdown.

A row compares one number of ours with the same number of the baseline (the official SDK, or
the naive SDK function) from the same run; only the ratio is held to a target, because
absolute times depend on the machine. A row that depends on the wire has two measurements:
over TLS (the headline: real endpoints are HTTPS only) and over plain HTTP (the second
column); either may carry its own target.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

HEADER = ("metric", "ours", "SDK / naive", "ratio (TLS)", "ratio (plain)", "target", "result")


@dataclass
class Measure:
    """One comparison: ours and the baseline, and the bound ``limit`` on ours ÷ baseline."""

    ours: float
    baseline: float
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

    def miss(self) -> str | None:
        if self.passed is not False or self.limit is None:
            return None
        if math.isnan(self.ratio):
            return "no valid measurement (errors, or restores not confirmed; see the JSON)"
        off = abs(self.ratio / self.limit - 1)
        how = "over" if self.at_most else "short of"
        return f"{self.ratio:.2f}x, {off:.0%} {how} the target {self.target}"


@dataclass
class Row:
    """One compared metric: ``main`` (over TLS when the wire matters) and optionally ``plain``.

    ``ours`` and ``SDK / naive`` show the main measurement's numbers; ``plain`` shows its ratio.
    """

    section: str
    metric: str
    unit: str
    main: Measure
    plain: Measure | None = None
    wire: bool = True  # False: the metric does not depend on TLS (import time, memory)

    def measures(self) -> list[tuple[str, Measure]]:
        pairs = [("TLS" if self.wire else "", self.main)]
        if self.plain is not None:
            pairs.append(("plain", self.plain))
        return pairs

    @property
    def passed(self) -> bool | None:
        verdicts = [m.passed for _, m in self.measures() if m.passed is not None]
        return None if not verdicts else all(verdicts)

    @property
    def result(self) -> str:
        return {None: "info", True: "PASS", False: "FAIL"}[self.passed]

    @property
    def target(self) -> str:
        parts = [(name, m.target) for name, m in self.measures() if m.limit is not None]
        if not parts:
            return "-"
        if len(parts) == 1 and not parts[0][0]:
            return parts[0][1]
        return "; ".join(f"{name} {target}" for name, target in parts)

    def misses(self) -> list[str]:
        """Each failed measurement of this row, with how far it is from its target."""
        return [
            f"{self.metric}{f' ({name})' if name else ''}: {miss}"
            for name, measure in self.measures()
            if (miss := measure.miss())
        ]

    def cells(self) -> tuple[str, ...]:
        plain = "-" if self.plain is None else _ratio(self.plain.ratio)
        main_ratio = _ratio(self.main.ratio)
        return (
            self.metric,
            _value(self.main.ours, self.unit),
            _value(self.main.baseline, self.unit),
            main_ratio if self.wire else f"{main_ratio} (no wire)",
            plain,
            self.target,
            self.result,
        )

    def to_json(self) -> dict[str, object]:
        document = asdict(self)
        document.update(target=self.target, result=self.result)
        for name, measure in (("main", self.main), ("plain", self.plain)):
            if measure is not None:
                document[name].update(ratio=measure.ratio, passed=measure.passed)
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
        "|" + "|".join(["---", "---:", "---:", "---:", "---:", "---", "---"]) + "|",
    ]
    lines.extend("| " + " | ".join(row.cells()) + " |" for row in rows)
    return "\n".join(lines)


def _ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def _value(number: float, unit: str) -> str:
    if math.isnan(number):
        return "-"
    if unit in ("req/s", "calls"):
        return f"{number:,.0f} {unit}"
    if unit == "MiB":
        return f"{number:,.1f} {unit}"
    if unit == "ms" and number >= 100:
        return f"{number:,.0f} {unit}"
    return f"{number:,.2f} {unit}" if unit else f"{number:,.2f}"
