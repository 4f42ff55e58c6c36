"""``policy check`` and ``policy explain``: the restore rules, validated and put to a question.

They read the policy the way the function does (:func:`handler.settings.load_policy`) and
need no OBS or DWR setting, so a policy file can be checked and its decisions seen on any
machine before the function runs with it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from handler.cli.output import EXIT_COULD_NOT_RUN, EXIT_DONE


def add_commands(commands: Any) -> None:
    """Add ``policy check`` and ``policy explain`` to the command line's subparsers."""
    policy = commands.add_parser(
        "policy",
        help="check restore rules and explain what they decide",
        description="Needs no OBS or DWR setting: only the policy and RESTORE_MAX_RESTORES, "
        "RESTORE_BUDGET_WINDOW (the budget of rules that name none).",
    )
    actions = policy.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate a policy file; print the effective rules")
    check.add_argument("file", metavar="FILE", help="a YAML or JSON policy file")
    check.add_argument("--json", action="store_true", help="print the rules as JSON")
    check.set_defaults(run=_policy_check)
    explain = actions.add_parser(
        "explain", help="say which rule decides a failure and what would happen"
    )
    explain.add_argument("--graph", required=True, help="the failed execution's graph")
    explain.add_argument(
        "--error",
        action="append",
        help="the failure's error text (repeat for several failed nodes); "
        "leave out for the OBS API, which gives none",
    )
    explain.add_argument(
        "--restores",
        type=int,
        default=0,
        help="restores of the execution already within the rule's window (default: 0)",
    )
    explain.add_argument("--file", help="a policy file (default: the environment's policy)")
    explain.add_argument("--json", action="store_true", help="print the answer as JSON")
    explain.set_defaults(run=_policy_explain)


def _policy_check(args: argparse.Namespace) -> int:
    from handler.settings import load_policy

    policy = load_policy(file=args.file)
    if args.json:
        print(json.dumps(policy.describe()))
        return EXIT_DONE
    print(f"policy {policy.source}: valid, digest {policy.digest}, {len(policy.rules)} rule(s)")
    for number, rule in enumerate(policy.rules, start=1):
        print(f"{number}. {rule.name}")
        for key, value in _as_written(rule.describe()).items():
            if key != "name":
                print(f"     {key}: {json.dumps(value)}")
    return EXIT_DONE


# The fields of a rule that are durations: shown as a policy file writes them (24h, 2m), not
# as the seconds they mean (--json keeps the seconds, for programs).
_DURATION_FIELDS = frozenset({"window", "first", "interval", "max_interval"})


def _as_written(described: dict[str, Any]) -> dict[str, Any]:
    from handler.durations import duration_text

    return {
        key: _as_written(value)
        if isinstance(value, dict)
        else duration_text(value)
        if key in _DURATION_FIELDS and isinstance(value, (int, float))
        else value
        for key, value in described.items()
    }


def _policy_explain(args: argparse.Namespace) -> int:
    from handler.settings import load_policy

    if args.restores < 0:
        print("error: --restores must be 0 or more", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    policy = load_policy(file=args.file)
    errors = tuple(args.error) if args.error else None
    match = policy.match(args.graph, errors)
    answer: dict[str, Any] = {
        "policy": policy.source,
        "digest": policy.digest,
        "rule": match.rule.name if match.rule else None,
        "pattern": match.pattern,
        "excerpt": match.excerpt,
        "note": match.note or None,
    }
    rule = match.rule
    if rule is None:
        answer["decision"] = "skipped: no rule of the policy matches this failure"
    elif match.leave:
        answer["decision"] = f"skipped: left alone, leave_on pattern {match.pattern!r} matches"
    elif args.restores >= rule.max_restores:
        from handler.durations import duration_text

        answer["decision"] = (
            f"budget_exhausted: {rule.max_restores} restores within "
            f"{duration_text(rule.window)} already"
        )
    else:
        wait = rule.spacing.nominal_delay(args.restores)
        since = "the last restore" if args.restores else "the failure"
        answer["decision"] = f"restore {args.restores + 1} of {rule.max_restores}: " + (
            "at once" if wait <= 0 else f"due {wait:g}s after {since} (deferred until then)"
        )
        answer["waitSeconds"] = wait
        # Seconds before each restore; jitter shortens each by up to its fraction.
        answer["schedule"] = [rule.spacing.nominal_delay(n) for n in range(rule.max_restores)]
        answer["jitter"] = rule.spacing.jitter
    if rule is not None and not match.leave:
        answer["outage"] = _outage_state(args.graph, rule.breaker)
    if args.json:
        print(json.dumps(answer))
        return EXIT_DONE
    for key in ("policy", "digest", "rule", "pattern", "excerpt", "note", "decision"):
        if answer.get(key) is not None:
            print(f"{key:>9}: {answer[key]}")
    if "schedule" in answer:
        jitter = f" (each up to {answer['jitter']:.0%} sooner)" if answer["jitter"] else ""
        schedule = ", ".join(f"{seconds:g}s" for seconds in answer["schedule"])
        print(f"{'schedule':>9}: {schedule}{jitter}")
    if "outage" in answer:
        print(f"{'breaker':>9}: {_breaker_line(answer['outage'])}")
        print(f"{'rate':>9}: {_rate_line(answer['outage'])}")
    return EXIT_DONE


def _outage_state(graph: str, rule_threshold: int | None) -> dict[str, Any]:
    """The graph's breaker and the shared rate as the configured store holds them now
    (:meth:`handler.outage.Outage.state`), the rule's own threshold applied. Only with
    ``RESTORE_STATE_URL`` set: explaining a policy must not create a state file."""
    from handler.outage import Outage
    from handler.settings import (
        SettingsError,
        load_outage_settings,
        load_store_settings,
        state_url_configured,
    )
    from handler.store import StoreUnavailable, open_store

    if not state_url_configured():
        return {"unavailable": "RESTORE_STATE_URL is not set: no store to read the state from"}
    try:
        outage_settings = load_outage_settings()
        store = open_store(load_store_settings().state_url)
    except SettingsError as exc:
        return {"unavailable": str(exc)}
    except StoreUnavailable:
        return {"unavailable": "state store unavailable"}  # its text may name hosts
    try:
        state = Outage(outage_settings, store).state(graph)
    except StoreUnavailable:
        return {"unavailable": "state store unavailable"}
    finally:
        store.close()
    if rule_threshold is not None:
        state["breaker"]["threshold"] = rule_threshold  # 0: the rule turns it off
    return state


def _breaker_line(outage: dict[str, Any]) -> str:
    if "unavailable" in outage:
        return f"state unknown ({outage['unavailable']})"
    breaker = outage["breaker"]
    if breaker["threshold"] == 0:
        return "off for this rule"
    line = f"{breaker['state']}, {breaker['refailures']} re-failure(s) of {breaker['threshold']}"
    if breaker["openedAt"]:
        line += f", open since {breaker['openedAt']}"
    if breaker["nextCanaryAt"]:
        line += f", next canary at {breaker['nextCanaryAt']}"
    if breaker["canaryExecution"]:
        line += f", canary {breaker['canaryExecution']} judged at {breaker['canaryJudgedAt']}"
    if outage["systemicHold"]:
        line += f"; systemic hold: {len(outage['graphsOpen'])} graphs open"
    return line


def _rate_line(outage: dict[str, Any]) -> str:
    if "unavailable" in outage:
        return "state unknown"
    rate = outage["rate"]
    if rate["limit"] is None:
        return "no limit (RESTORE_RATE_LIMIT off)"
    return f"{rate['used']} used of {rate['limit']} (RESTORE_RATE_LIMIT, across instances)"
