"""Restore rules: parsing and validation, matching and precedence, spacing arithmetic."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from handler.intake import Item
from handler.pipeline.admission import Admission, FailureFacts, Ticket
from handler.pipeline.deferred import DeferredFailures
from handler.pipeline.settlement import Settlement, Verdict, settle
from handler.rules import (
    NO_ERROR_TEXT,
    PolicyError,
    Rule,
    Spacing,
    build_policy,
    default_rules,
    excerpt,
)
from handler.settings import Settings, SettingsError, load_settings
from handler.store.memory import MemoryStore
from tests.store.conftest import START, FakeClock

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def policy_of(*rules: dict, max_restores: int = 3, window: float = 86400.0):
    return build_policy(
        {"rules": list(rules)}, source="test", max_restores=max_restores, window=window
    )


def readme_policy() -> dict:
    """The policy the README's Restore policy section shows."""
    section = README[README.index("## Restore policy\n") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1)
    return yaml.safe_load(block)


# --- matching and precedence ----------------------------------------------------------------

GRAPH_PATTERNS = st.sampled_from(["*", "etl-*", "etl-daily", "report-?", "*-daily", "x"])
GRAPHS = st.sampled_from(["etl-daily", "etl-hourly", "report-1", "x", "other-daily", "y"])


@given(st.lists(st.lists(GRAPH_PATTERNS, min_size=1, max_size=3), min_size=1, max_size=6), GRAPHS)
def test_the_first_rule_whose_graphs_match_decides(rule_patterns, graph):
    policy = policy_of(*({"graphs": patterns} for patterns in rule_patterns))
    expected = next(
        (
            f"rule-{i}"
            for i, patterns in enumerate(rule_patterns, start=1)
            if any(fnmatch.fnmatchcase(graph, p) for p in patterns)
        ),
        None,
    )
    match = policy.match(graph, ["any error"])
    assert (match.rule.name if match.rule else None) == expected
    assert match.restore == (expected is not None)


WORDS = st.sampled_from(["throttled", "timeout", "permission denied", "bad parameter", "503"])


@given(st.lists(WORDS, min_size=1, max_size=3), WORDS, WORDS)
def test_leave_on_wins_over_restore_on_and_error_rules_fall_through(errors, restore, leave):
    policy = policy_of(
        {"name": "errors", "restore_on": [restore], "leave_on": [leave]},
        {"name": "fallback", "graphs": ["*"]},
    )
    match = policy.match("g", errors)
    text = " ".join(errors)
    if leave in text:
        assert (match.rule.name, match.leave, match.pattern) == ("errors", True, leave)
        assert leave in match.excerpt
    elif restore in text:
        assert (match.rule.name, match.leave, match.pattern) == ("errors", False, restore)
    else:  # neither pattern: the error rule does not match, the next rule decides
        assert (match.rule.name, match.leave) == ("fallback", False)


def test_patterns_are_case_insensitive_regular_expressions_searched_in_every_node_message():
    policy = policy_of({"restore_on": [r"time[sd]? ?out"]})
    assert policy.match("g", ["node a: ok", "node b: Request TIMED OUT"]).restore
    assert not policy.match("g", ["node b: failed"]).restore


def test_without_error_text_only_graph_rules_apply_and_the_match_says_so():
    policy = policy_of(
        {"name": "throttling", "restore_on": ["throttl"]},
        {"name": "guarded", "leave_on": ["permission"]},
    )
    match = policy.match("g", None)
    assert (match.rule.name, match.restore, match.note) == ("guarded", True, NO_ERROR_TEXT)
    nothing = policy_of({"restore_on": ["throttl"]}).match("g", None)
    assert nothing.rule is None and nothing.note == NO_ERROR_TEXT


def test_the_readme_policy_restores_throttling_and_timeouts_never_permission_errors():
    policy = build_policy(readme_policy(), source="README", max_restores=3, window=86400)
    (rule,) = policy.rules
    assert rule.max_restores == 5
    assert [rule.spacing.nominal_delay(n) for n in range(7)] == [0, 120, 240, 480, 960, 1800, 1800]
    assert policy.match("g", ["Throttling: rate exceeded"]).restore
    assert policy.match("g", ["the call timed out"]).restore
    assert policy.match("g", ["403 Forbidden: timed out waiting for permission"]).leave
    assert policy.match("g", ["division by zero"]).rule is None


def test_an_excerpt_is_short_one_line_and_around_the_match():
    text = "x" * 500 + " Throttling:\n rate exceeded " + "y" * 500
    start = text.index("Throttling")
    piece = excerpt(text, start, start + 10)
    assert "Throttling: rate" in piece and "\n" not in piece and len(piece) <= 122


# --- spacing ----------------------------------------------------------------------------------


@given(
    interval=st.floats(0, 3600),
    backoff=st.floats(1, 10),
    cap=st.none() | st.floats(3600, 86400),
    count=st.integers(1, 200),
)
def test_spacing_grows_by_the_backoff_and_stops_at_the_cap(interval, backoff, cap, count):
    spacing = Spacing(first=5, interval=interval, backoff=backoff, max_interval=cap)
    assert spacing.nominal_delay(0) == 5
    before, delay = spacing.nominal_delay(count), spacing.nominal_delay(count + 1)
    assert delay >= before  # never shrinks
    if cap is not None:
        assert delay <= cap


@given(jitter=st.floats(0, 1), count=st.integers(0, 20), subject=st.text(max_size=20))
def test_jitter_shortens_by_at_most_its_fraction_and_is_the_same_at_every_look(
    jitter, count, subject
):
    spacing = Spacing(first=60, interval=60, backoff=2, max_interval=3600, jitter=jitter)
    nominal = spacing.nominal_delay(count)
    delay = spacing.delay(count, subject)
    assert nominal * (1 - jitter) - 1e-9 <= delay <= nominal
    assert spacing.delay(count, subject) == delay


def test_a_huge_backoff_without_a_cap_is_effectively_never_not_an_overflow():
    assert Spacing(interval=60, backoff=100).nominal_delay(1000) > 365 * 86400


# --- the policy stage with an injected clock --------------------------------------------------


class Harness:
    """Admission over a memory store, both on one fake clock, settled as the restorer
    settles: a verdict's hold is recorded or released, a restore's unit spent."""

    def __init__(self, rules: list[dict], **settings) -> None:
        self.clock = FakeClock()
        self.store = MemoryStore(clock=self.clock)
        policy = policy_of(*rules)
        self.settings = Settings(endpoint="https://obs.example", restore_policy=policy, **settings)
        self.deferred = DeferredFailures(self.store, self.settings.dedupe_retention)
        self.admission = Admission(self.settings, self.store, self.deferred, self.clock)
        self.events = 0

    def admit(self, item: Item, facts: FailureFacts) -> Ticket | Verdict:
        """The door, then the rules and the budget with the facts gathered before."""
        entered = self.admission.enter(item)
        decided = entered if isinstance(entered, Verdict) else self.admission.decide(entered, facts)
        if isinstance(decided, Verdict):
            settle(self.store, decided.hold, decided.settlement, {"outcome": decided.outcome.value})
        return decided

    def spent(self, ticket: Ticket) -> None:
        """The service accepted the ticket's restore."""
        settle(self.store, ticket.hold, Settlement.SPENT, {"outcome": "restored"})

    def event(self, errors=("throttled",), failed_at=None) -> Ticket | Verdict:
        self.events += 1
        item = Item("restore", f"evt-{self.events}", "json", "g", "e", failed_at=failed_at)
        return self.admit(item, FailureFacts(tuple(errors)))

    def restore(self, **kwargs) -> Ticket:
        ticket = self.event(**kwargs)
        assert isinstance(ticket, Ticket), ticket
        self.spent(ticket)
        return ticket


SPACED = {
    "name": "spaced",
    "restore_on": ["throttl"],
    "max_restores": 4,
    "window": "1d",
    "spacing": {"first": "1m", "interval": "2m", "backoff": 2, "max_interval": "5m"},
}


def test_restores_are_spaced_first_interval_backoff_and_cap_on_the_clock():
    h = Harness([SPACED])
    waiting = h.event(failed_at=START)
    assert waiting.outcome == "deferred" and waiting.rule == "spaced"
    assert "due at 2023-11-14T22:14:20Z (in 60s)" in waiting.reason  # START + first
    h.clock.advance(60)
    assert h.restore(failed_at=START).rule == "spaced"  # 1: first after the failure
    for wait in (120, 240, 300):  # 2: interval, 3: times backoff, 4: capped by max_interval
        h.clock.advance(wait - 1)
        early = h.event()
        assert early.outcome == "deferred" and "(in 1s)" in early.reason
        h.clock.advance(1)
        h.restore()
    exhausted = h.event()
    assert exhausted.outcome == "budget_exhausted" and "(rule spaced)" in exhausted.reason


def test_a_first_delay_without_a_failure_time_counts_from_the_event():
    h = Harness([SPACED])
    assert "(in 60s)" in h.event().reason


def test_a_first_delay_counts_from_the_first_sighting_of_the_failure_not_from_each_event():
    """Events every 3 s for one failure, ``first: 2s``, no stop time in them: the second event
    finds the failure seen 3 s ago, so it is due, instead of being deferred again forever."""
    h = Harness([{"name": "patient", "spacing": {"first": "2s"}}])
    assert h.event().outcome == "deferred"  # seen now: due in 2 s
    h.clock.advance(3)
    assert isinstance(h.event(), Ticket)  # another event (its own id) of the same failure


def test_a_deferred_item_records_nothing_so_the_same_identity_is_decided_again_later():
    h = Harness([SPACED])
    item = Item("restore", "sweep:g/e@t", "sweep", "g", "e", failed_at=START)
    facts = FailureFacts(("throttled",))
    assert h.admit(item, facts).outcome == "deferred"
    assert h.store.claim("sweep:g/e@t", 60).acquired  # released, not recorded
    h.store.forget("sweep:g/e@t")
    h.clock.advance(60)
    assert isinstance(h.admit(item, facts), Ticket)


def test_a_deferred_failure_is_handed_back_once_due_as_the_same_item_until_it_is_final():
    h = Harness([SPACED])
    item = Item("restore", "HC.OBS/evt", "cloudevent", "g", "e", source="HC.OBS", failed_at=START)
    facts = FailureFacts(("throttled",))
    assert h.admit(item, facts).outcome == "deferred"  # due at START + 60
    assert h.deferred.due(10) == []
    h.clock.advance(60)
    assert h.deferred.due(10) == [item]
    ticket = h.admit(item, facts)
    assert isinstance(ticket, Ticket)
    assert h.deferred.due(10) == [item]  # in flight: not final yet
    h.spent(ticket)
    assert h.deferred.due(10) == []


def test_a_dry_run_leaves_no_deferred_failure_behind():
    h = Harness([SPACED], dry_run=True)
    assert h.event(failed_at=START).outcome == "deferred"
    h.clock.advance(60)
    assert h.deferred.due(10) == []


def test_left_alone_is_recorded_with_the_pattern_and_an_excerpt_and_no_budget_is_spent():
    h = Harness([{"name": "careful", "restore_on": ["throttl"], "leave_on": ["permission"]}])
    verdict = h.event(errors=("node 3: Permission denied for user x (throttled before)",))
    assert verdict.outcome == "skipped" and verdict.rule == "careful"
    assert "leave_on pattern 'permission' of rule careful" in verdict.reason
    assert "Permission denied for user x" in verdict.reason
    assert h.store.budget_used("g/e", 86400) == 0
    assert h.store.claim("evt-1", 60).record["outcome"] == "skipped"  # a redelivery: duplicate


def test_an_unreadable_error_text_is_retried_not_decided():
    h = Harness([SPACED])
    item = Item("restore", "evt", "json", "g", "e")
    verdict = h.admit(item, FailureFacts(None, "the query answered 503", "DWR.503"))
    assert verdict.outcome == "retryable_error" and verdict.error_code == "DWR.503"
    assert h.store.claim("evt", 60).acquired  # nothing recorded


def test_two_deliveries_reserving_at_once_do_not_both_restore_inside_the_spacing():
    h = Harness([SPACED])
    h.clock.advance(60)
    h.restore(failed_at=START)
    h.clock.advance(120)
    # Another instance reserved between this one's spacing check and its reservation.
    real_reserve = h.store.reserve_budget

    def reserve_after_a_rival(subject, limit, window, **options):
        real_reserve(subject, limit, window, **options)
        return real_reserve(subject, limit, window, **options)

    h.store.reserve_budget = reserve_after_a_rival
    verdict = h.event()
    assert verdict.outcome == "deferred" and "at the same moment" in verdict.reason
    assert h.store.budget_used("g/e", 86400) == 2  # ours refunded, the rival's kept


def test_a_short_window_rule_s_restore_counts_for_a_long_window_rule():
    """The budget is the execution's: rule long allows 2 restores an hour, however many of
    them another rule with a 60 s window made."""
    h = Harness(
        [
            {"name": "short", "restore_on": ["throttl"], "max_restores": 5, "window": "60s"},
            {"name": "long", "max_restores": 2, "window": "1h"},
        ]
    )
    assert h.restore(errors=("broken",)).rule == "long"
    h.clock.advance(600)
    assert h.restore(errors=("throttled",)).rule == "short"
    h.clock.advance(100)  # outside short's window, inside long's
    verdict = h.event(errors=("broken",))
    assert verdict.outcome == "budget_exhausted" and "(rule long)" in verdict.reason


def test_without_a_policy_the_default_rule_keeps_todays_budget():
    policy = Settings(endpoint="https://obs.example", max_restores=2, budget_window=60).rules
    assert policy == default_rules(2, 60) and policy.source == "default"
    (rule,) = policy.rules
    assert (rule.name, rule.max_restores, rule.window) == ("default", 2, 60)
    assert rule.spacing.is_immediate and policy.match("any", None).restore


# --- validation at start-up -------------------------------------------------------------------

BASE_ENV = {"OBS_ENDPOINT": "https://obs.example"}

MISTAKES = [
    ({"rules": []}, "rules: must be a non-empty list"),
    ({"rules": [{}], "version": 2}, "unknown top-level field(s): version"),
    ({"rules": ["x"]}, "rule 1: must be a mapping"),
    ({"rules": [{"name": "a b"}]}, "rule 1.name: must be 1-64 letters"),
    ({"rules": [{"name": "a"}, {"name": "a"}]}, "rule 2 (a).name: is used by an earlier rule"),
    ({"rules": [{"name": "a", "restore_ON": ["x"]}]}, "rule 1 (a).restore_ON: unknown field"),
    ({"rules": [{"graphs": []}]}, "rule 1 (rule-1).graphs: must name at least one pattern"),
    ({"rules": [{"graphs": "etl-*", "leave_on": [3]}]}, "rule 1 (rule-1).leave_on: must be a"),
    ({"rules": [{"restore_on": ["(unclosed"]}]}, "rule 1 (rule-1).restore_on: '(unclosed' is"),
    ({"rules": [{"max_restores": 0}]}, "rule 1 (rule-1).max_restores: must be a whole number"),
    ({"rules": [{"max_restores": True}]}, "rule 1 (rule-1).max_restores: must be a whole"),
    ({"rules": [{"window": "soon"}]}, "rule 1 (rule-1).window: must be a duration"),
    ({"rules": [{"window": "0s"}]}, "rule 1 (rule-1).window: must be at least 1 seconds"),
    ({"rules": [{"spacing": 5}]}, "rule 1 (rule-1).spacing: must be a mapping"),
    ({"rules": [{"spacing": {"delay": 1}}]}, "rule 1 (rule-1).spacing.delay: unknown field"),
    ({"rules": [{"spacing": {"first": -1}}]}, "rule 1 (rule-1).spacing.first: must be at least"),
    ({"rules": [{"spacing": {"backoff": 0.5}}]}, "rule 1 (rule-1).spacing.backoff: must be"),
    (
        {"rules": [{"spacing": {"interval": "10m", "max_interval": "5m"}}]},
        "rule 1 (rule-1).spacing.max_interval: must not be below interval",
    ),
    ({"rules": [{"spacing": {"jitter": 2}}]}, "rule 1 (rule-1).spacing.jitter: must be a fraction"),
]


@pytest.mark.parametrize(("document", "message"), MISTAKES)
def test_every_kind_of_mistake_stops_the_start_naming_the_rule_and_field(
    document, message, tmp_path
):
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(SettingsError) as raised:
        load_settings({**BASE_ENV, "RESTORE_POLICY_FILE": str(path)})
    assert raised.value.variable == "RESTORE_POLICY_FILE"
    assert message in str(raised.value)
    with pytest.raises(SettingsError, match=re.escape(message)) as inline:
        load_settings({**BASE_ENV, "RESTORE_POLICY": json.dumps(document)})
    assert inline.value.variable == "RESTORE_POLICY"


def test_a_policy_that_is_not_json_or_yaml_or_not_readable_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [unclosed\n")
    with pytest.raises(SettingsError, match="RESTORE_POLICY_FILE: neither JSON nor YAML"):
        load_settings({**BASE_ENV, "RESTORE_POLICY_FILE": str(bad)})
    with pytest.raises(SettingsError, match="RESTORE_POLICY: not JSON"):
        load_settings({**BASE_ENV, "RESTORE_POLICY": "rules: []"})  # inline is JSON only
    with pytest.raises(SettingsError, match="RESTORE_POLICY_FILE: cannot read"):
        load_settings({**BASE_ENV, "RESTORE_POLICY_FILE": str(tmp_path / "missing.yaml")})
    with pytest.raises(SettingsError, match="not both"):
        load_settings(
            {**BASE_ENV, "RESTORE_POLICY_FILE": str(bad), "RESTORE_POLICY": '{"rules": [{}]}'}
        )


def test_rules_without_a_budget_take_the_settings_and_the_start_up_view_names_the_source(
    tmp_path,
):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"rules": [{"name": "all"}]}))
    settings = load_settings(
        {
            **BASE_ENV,
            "RESTORE_POLICY_FILE": str(path),
            "RESTORE_MAX_RESTORES": "7",
            "RESTORE_BUDGET_WINDOW": "2h",
        }
    )
    (rule,) = settings.rules.rules
    assert (rule.max_restores, rule.window) == (7, 7200)
    shown = settings.redacted()["policy"]
    assert shown == {
        "source": f"RESTORE_POLICY_FILE={path}",
        "digest": settings.rules.digest,
        "rules": ["all"],
    }
    assert len(shown["digest"]) == 12
    other = load_settings({**BASE_ENV, "RESTORE_POLICY": '{"rules": [{"name": "other"}]}'})
    assert other.rules.digest != settings.rules.digest


def test_a_policy_error_is_a_value_error_with_where_and_problem():
    with pytest.raises(PolicyError) as raised:
        build_policy({"rules": [{"window": "x"}]}, source="t", max_restores=1, window=1)
    assert raised.value.where == "rule 1 (rule-1).window"
    assert isinstance(Rule("r"), Rule)
