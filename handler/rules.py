"""Restore rules: which failures are worth restoring, how often, and how far apart.

A policy is an ordered list of rules (``RESTORE_POLICY_FILE`` in YAML or JSON, or inline
``RESTORE_POLICY`` JSON); the first rule that matches a failure decides it. A rule matches a
failure when its ``graphs`` patterns match the graph and - if it names error patterns - one of
its ``restore_on`` or ``leave_on`` patterns is found in the failure's error text. A failure a
``leave_on`` pattern matches is left alone (``leave_on`` wins over ``restore_on`` in the same
rule); otherwise the rule's budget (``max_restores`` within ``window``) and ``spacing``
(``first``, ``interval``, ``backoff``, ``max_interval``, ``jitter``) decide when it is
restored. Without a policy, one rule with ``RESTORE_MAX_RESTORES`` and
``RESTORE_BUDGET_WINDOW`` restores every failure at once, as before rules existed.

Only the DWR API says why an execution failed (its failed nodes' ``error_message``). With the
OBS API there is no error text: rules with ``restore_on`` patterns cannot match, and the
result's reason says so.

This module parses, validates and evaluates; it reads no environment (that is
:mod:`handler.settings`'s job) and no store (that is :mod:`handler.pipeline.admission`'s).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from handler.durations import duration_seconds

RULE_FIELDS = frozenset(
    {"name", "graphs", "restore_on", "leave_on", "max_restores", "window", "spacing", "breaker"}
)
SPACING_FIELDS = frozenset({"first", "interval", "backoff", "max_interval", "jitter"})
MAX_RULES = 100
MAX_PATTERNS = 50
NEVER_SECONDS = 10 * 365 * 86400.0  # a backoff without a cap that outgrows any window
EXCERPT_CHARS = 120  # how much of an error text a result quotes
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class PolicyError(ValueError):
    """A policy document is invalid; ``where`` names the rule and field (``rule 2 (x).window``)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}" if where else problem)
        self.where = where
        self.problem = problem


class Spacing(NamedTuple):
    """When the next restore of one execution may happen, counted from the previous one.

    The first restore (none within the window yet) waits ``first`` seconds after the failure;
    restore number ``n + 1`` waits ``interval * backoff ** (n - 1)`` seconds (at most
    ``max_interval``) after restore ``n``. ``jitter`` (0 to 1) shortens each wait by up to that
    fraction, by an amount fixed per execution and restore number, so many executions that
    failed together spread out while one execution's due time never moves between looks.
    """

    first: float = 0.0
    interval: float = 0.0
    backoff: float = 1.0
    max_interval: float | None = None
    jitter: float = 0.0

    def delay(self, restores_before: int, subject: str) -> float:
        """Seconds between the reference time and the next restore of ``subject``, given
        ``restores_before`` restores within the window (the reference is the failure for 0,
        else the last restore); jitter applied."""
        seconds = self.nominal_delay(restores_before)
        if self.jitter and seconds:
            seconds *= 1.0 - self.jitter * _unit_fraction(f"{subject}#{restores_before}")
        return seconds

    def nominal_delay(self, restores_before: int) -> float:
        """:meth:`delay` before jitter shortens it."""
        if restores_before <= 0:
            return self.first
        try:  # backoff ** exponent overflows for absurd counts; the cap makes that moot
            seconds = float(self.interval) * float(self.backoff) ** (restores_before - 1)
        except OverflowError:
            seconds = math.inf
        if self.max_interval is not None:
            seconds = min(seconds, self.max_interval)
        return min(seconds, NEVER_SECONDS)

    @property
    def is_immediate(self) -> bool:
        return self.first == 0 and self.interval == 0

    def describe(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "interval": self.interval,
            "backoff": self.backoff,
            "max_interval": self.max_interval,
            "jitter": self.jitter,
        }


class Rule(NamedTuple):
    """One rule of a policy; see the module docstring."""

    name: str
    graphs: tuple[str, ...] = ("*",)
    restore_on: tuple[str, ...] = ()
    leave_on: tuple[str, ...] = ()
    max_restores: int = 3
    window: float = 86400.0
    spacing: Spacing = Spacing()
    # The rule's own breaker threshold (handler.outage): None - RESTORE_BREAKER_THRESHOLD;
    # 0 - off: its failures neither count towards a breaker nor are held by one.
    breaker: int | None = None

    @property
    def needs_error_text(self) -> bool:
        return bool(self.restore_on or self.leave_on)

    def graph_matches(self, graph: str) -> bool:
        return any(fnmatch.fnmatchcase(graph, pattern) for pattern in self.graphs)

    def describe(self) -> dict[str, Any]:
        """The rule as ``policy check`` prints it: every field, defaults filled in."""
        described = {
            "name": self.name,
            "graphs": list(self.graphs),
            "restore_on": list(self.restore_on),
            "leave_on": list(self.leave_on),
            "max_restores": self.max_restores,
            "window": self.window,
            "spacing": self.spacing.describe(),
        }
        if self.breaker is not None:  # only when set: a policy without one keeps its digest
            described["breaker"] = "off" if self.breaker == 0 else self.breaker
        return described


class Match(NamedTuple):
    """Which rule decided a failure, and whether it said restore or leave alone."""

    rule: Rule | None  # None: no rule matches (the failure is left alone)
    leave: bool = False
    pattern: str | None = None  # the restore_on / leave_on pattern that matched
    excerpt: str | None = None  # the part of the error text around the match
    note: str = ""  # e.g. that there was no error text to match

    @property
    def restore(self) -> bool:
        return self.rule is not None and not self.leave


class RuleSet(NamedTuple):
    """The rule set: an ordered, validated list of rules (a restore policy, parsed), with
    where it came from and a digest of it."""

    rules: tuple[Rule, ...]
    source: str  # "RESTORE_POLICY_FILE=<path>", "RESTORE_POLICY" or "default"
    digest: str  # sha256 of the canonical rules (first 12 hex digits), for the start-up line

    @property
    def needs_error_text(self) -> bool:
        return any(rule.needs_error_text for rule in self.rules)

    @property
    def needs_stop_time(self) -> bool:
        """Some rule's ``first`` delay counts from when the failure stopped."""
        return any(rule.spacing.first > 0 for rule in self.rules)

    def match(self, graph: str, errors: Sequence[str] | None) -> Match:
        """The first rule that matches ``graph`` and ``errors`` (the failure's error texts;
        None when the API gives none)."""
        for rule in self.rules:
            if not rule.graph_matches(graph):
                continue
            if not rule.needs_error_text:
                return Match(rule)
            if errors is None:
                if rule.restore_on:
                    continue  # no text to match: only graph rules apply
                return Match(rule, note=NO_ERROR_TEXT)
            found = _search(rule.leave_on, errors)
            if found is not None:
                return Match(rule, leave=True, pattern=found[0], excerpt=found[1])
            if not rule.restore_on:
                return Match(rule)
            found = _search(rule.restore_on, errors)
            if found is not None:
                return Match(rule, pattern=found[0], excerpt=found[1])
        note = NO_ERROR_TEXT if errors is None and self.needs_error_text else ""
        return Match(None, note=note)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "digest": self.digest,
            "rules": [rule.describe() for rule in self.rules],
        }

    def summary(self) -> dict[str, Any]:
        """What the start-up line shows: where the rules came from, their digest and names."""
        return {
            "source": self.source,
            "digest": self.digest,
            "rules": [rule.name for rule in self.rules],
        }


NO_ERROR_TEXT = "no error text (the OBS API gives none): only graph rules apply"
DEFAULT_RULE_NAME = "default"


def default_rules(max_restores: int, window: float) -> RuleSet:
    """Today's behaviour as one rule: every graph, every failure, restored at once."""
    rule = Rule(DEFAULT_RULE_NAME, ("*",), (), (), max_restores, window, Spacing())
    return RuleSet((rule,), "default", _digest((rule,)))


def parse_policy_text(
    text: str, *, source: str, yaml_allowed: bool, max_restores: int, window: float
) -> RuleSet:
    """Parse and validate a policy document; raises :class:`PolicyError`.

    ``max_restores`` and ``window`` are what a rule that does not name them gets
    (``RESTORE_MAX_RESTORES``, ``RESTORE_BUDGET_WINDOW``).
    """
    document = _load(text, yaml_allowed)
    return build_policy(document, source=source, max_restores=max_restores, window=window)


def build_policy(document: Any, *, source: str, max_restores: int, window: float) -> RuleSet:
    """Validate a parsed policy document (``{"rules": [...]}``); raises :class:`PolicyError`."""
    if not isinstance(document, dict):
        raise PolicyError("", 'must be a mapping with a "rules" list')
    unknown = sorted(set(document) - {"rules"})
    if unknown:
        raise PolicyError("", f"unknown top-level field(s): {', '.join(map(str, unknown))}")
    entries = document.get("rules")
    if not isinstance(entries, list) or not entries:
        raise PolicyError("rules", "must be a non-empty list of rules")
    if len(entries) > MAX_RULES:
        raise PolicyError("rules", f"at most {MAX_RULES} rules")
    rules: list[Rule] = []
    for index, entry in enumerate(entries, start=1):
        rule = _rule(entry, index, max_restores, window)
        if any(existing.name == rule.name for existing in rules):
            raise PolicyError(_where(index, rule.name, "name"), "is used by an earlier rule")
        rules.append(rule)
    return RuleSet(tuple(rules), source, _digest(tuple(rules)))


# --- parsing ------------------------------------------------------------------------------


def _load(text: str, yaml_allowed: bool) -> Any:
    stripped = text.strip()
    if not stripped:
        raise PolicyError("", "is empty")
    try:
        return json.loads(stripped)
    except ValueError as exc:
        json_problem = f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if not yaml_allowed:
        raise PolicyError("", json_problem)
    import yaml

    try:
        return yaml.safe_load(stripped)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise PolicyError("", f"neither JSON nor YAML{at}: {getattr(exc, 'problem', '')}") from None


def _rule(entry: Any, index: int, max_restores: int, window: float) -> Rule:
    if not isinstance(entry, dict):
        raise PolicyError(_where(index, None, ""), "must be a mapping")
    name = entry.get("name", f"rule-{index}")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise PolicyError(
            _where(index, None, "name"),
            "must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit",
        )
    unknown = sorted(str(key) for key in set(entry) - RULE_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(RULE_FIELDS))
        raise PolicyError(_where(index, name, unknown[0]), f"unknown field (known: {allowed})")

    def where(field_name: str) -> str:
        return _where(index, name, field_name)

    graphs = _patterns(entry.get("graphs", ["*"]), where("graphs"), regex=False)
    if not graphs:
        raise PolicyError(where("graphs"), "must name at least one pattern")
    restore_on = _patterns(entry.get("restore_on", []), where("restore_on"), regex=True)
    leave_on = _patterns(entry.get("leave_on", []), where("leave_on"), regex=True)
    limit = entry.get("max_restores", max_restores)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise PolicyError(where("max_restores"), f"must be a whole number 1-1000, got {limit!r}")
    seconds = _seconds(entry.get("window", window), where("window"), minimum=1)
    spacing = _spacing(entry.get("spacing", {}), where)
    breaker = _breaker(entry.get("breaker"), where("breaker"))
    return Rule(name, graphs, restore_on, leave_on, limit, seconds, spacing, breaker)


def _breaker(value: Any, where: str) -> int | None:
    """A rule's breaker threshold: a whole number 1-1000, or ``off`` (0): a graph whose
    failures are independent (each its own input) should not be held for its neighbours'."""
    if value is None:
        return None
    if value is False or (isinstance(value, str) and value.strip().lower() == "off"):
        return 0  # YAML reads a bare `off` as false
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise PolicyError(where, f"must be a whole number 1-1000 or off, got {value!r}")
    return value


def _spacing(value: Any, where: Any) -> Spacing:
    if not isinstance(value, dict):
        raise PolicyError(where("spacing"), "must be a mapping")
    unknown = sorted(str(key) for key in set(value) - SPACING_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(SPACING_FIELDS))
        raise PolicyError(where(f"spacing.{unknown[0]}"), f"unknown field (known: {allowed})")
    first = _seconds(value.get("first", 0), where("spacing.first"), minimum=0)
    interval = _seconds(value.get("interval", 0), where("spacing.interval"), minimum=0)
    backoff = value.get("backoff", 1)
    if (
        isinstance(backoff, bool)
        or not isinstance(backoff, (int, float))
        or not math.isfinite(backoff)
        or not 1 <= backoff <= 100
    ):
        raise PolicyError(where("spacing.backoff"), f"must be a number 1-100, got {backoff!r}")
    max_interval = None
    if value.get("max_interval") is not None:
        max_interval = _seconds(value["max_interval"], where("spacing.max_interval"), minimum=0)
        if max_interval < interval:
            raise PolicyError(where("spacing.max_interval"), "must not be below interval")
    jitter = value.get("jitter", 0)
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter <= 1:
        raise PolicyError(where("spacing.jitter"), f"must be a fraction 0-1, got {jitter!r}")
    return Spacing(first, interval, float(backoff), max_interval, float(jitter))


def _patterns(value: Any, where: str, *, regex: bool) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise PolicyError(where, "must be a list of non-empty strings")
    if len(value) > MAX_PATTERNS:
        raise PolicyError(where, f"at most {MAX_PATTERNS} patterns")
    if regex:
        for pattern in value:
            try:
                re.compile(pattern, re.IGNORECASE)
            except re.error as exc:
                problem = f"{pattern!r} is not a regular expression: {exc}"
                raise PolicyError(where, problem) from None
    return tuple(value)


def _seconds(value: Any, where: str, *, minimum: float) -> float:
    """Seconds from a number or a duration like ``30s``, ``5m``, ``24h``, ``7d``."""
    if isinstance(value, bool):
        raise PolicyError(where, f"must be a duration like 30s, 5m or 24h, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise PolicyError(where, "must be finite")
    elif isinstance(value, str) and (parsed := duration_seconds(value)) is not None:
        seconds = parsed
    else:
        raise PolicyError(where, f"must be a duration like 30s, 5m or 24h, got {value!r}")
    if seconds < minimum:
        raise PolicyError(where, f"must be at least {minimum:g} seconds")
    return seconds


def _where(index: int, name: str | None, field_name: str) -> str:
    rule = f"rule {index}" + (f" ({name})" if name else "")
    return f"{rule}.{field_name}" if field_name else rule


# --- evaluation ---------------------------------------------------------------------------


def _search(patterns: Sequence[str], errors: Sequence[str]) -> tuple[str, str] | None:
    """The first pattern found in any error text, and an excerpt around where it was found."""
    for pattern in patterns:
        compiled = re.compile(pattern, re.IGNORECASE)
        for text in errors:
            found = compiled.search(text)
            if found is not None:
                return pattern, excerpt(text, found.start(), found.end())
    return None


def excerpt(text: str, start: int = 0, end: int = 0) -> str:
    """At most :data:`EXCERPT_CHARS` of ``text`` around ``start:end``, on one line."""
    flat = " ".join(text.split())
    if len(flat) <= EXCERPT_CHARS:
        return flat
    # Positions shift when whitespace collapses; centre on the match in the original instead.
    middle = (start + end) // 2
    begin = max(0, min(middle - EXCERPT_CHARS // 2, len(text) - EXCERPT_CHARS))
    piece = " ".join(text[begin : begin + EXCERPT_CHARS].split())
    return ("…" if begin else "") + piece + ("…" if begin + EXCERPT_CHARS < len(text) else "")


def _unit_fraction(key: str) -> float:
    """A fraction in [0, 1) fixed by ``key``: jitter that is the same at every look."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _digest(rules: tuple[Rule, ...]) -> str:
    canonical = json.dumps([rule.describe() for rule in rules], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
