"""``obs-workflow-restore``: operate the function from a terminal.

Every command reads the same environment variables as the deployed function (see the README's
settings table), so what works here works there:

    obs-workflow-restore restore --graph G --execution E   one restore through the shared client
    obs-workflow-restore replay FILE|-                      a saved delivery through the pipeline
    obs-workflow-restore sweep [--graph G ...] [--lookback 6h] [--dry-run]
                                                            list failed executions, restore them
    obs-workflow-restore serve [--port 8080]                the HTTP function (functions-framework)
    obs-workflow-restore emulator [...]                     the local OBS workflow emulator
    obs-workflow-restore state                              recent dedupe and budget records
    obs-workflow-restore state forget EVENT_ID              drop a recorded outcome or marker
    obs-workflow-restore state reset-budget GRAPH/EXECUTION drop an execution's restore budget
    obs-workflow-restore policy check FILE                  validate restore rules, print them
    obs-workflow-restore policy explain --graph G [--error T]  which rule decides, and how

``--json`` prints machine-readable results on every command that prints results. Exit codes:
0 done, 1 done but the answer was not a success, 2 could not run (a flag, a setting, an
unreadable file, an unreachable state store - said in one line on standard error).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from handler import __version__
from handler.settings import SettingsError, load_settings, load_store_settings
from handler.store import StateStore, StoreUnavailable

MAIN_SOURCE = Path(__file__).resolve().parent / "main.py"
TABLE_COLUMNS = ("outcome", "graphName", "executionName", "status", "attempts", "reason")


def main(argv: list[str] | None = None) -> int:
    """Run one command; the return value is the process exit code."""
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "emulator":
        from handler.devtools.emulator import cli as emulator_cli

        return emulator_cli.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.run(args)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


class _OneLineErrors(argparse.ArgumentParser):
    """Usage mistakes end in one line on standard error and exit 2, like every other error
    here: scripts and schedulers that capture the output get the reason, not a usage page."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(
        prog="obs-workflow-restore",
        description="Restore failed OBS workflow executions; settings come from the environment.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_OneLineErrors
    )

    restore = commands.add_parser("restore", help="restore one failed execution now")
    restore.add_argument("--graph", required=True, help="workflow (graph) name")
    restore.add_argument("--execution", required=True, help="execution name")
    restore.add_argument("--json", action="store_true", help="print the result as JSON")
    restore.add_argument(
        "--dry-run",
        action="store_true",
        help="only query the execution and say whether a restore would be sent "
        "(also when RESTORE_DRY_RUN=true)",
    )
    restore.set_defaults(run=_restore)

    replay = commands.add_parser(
        "replay", help="feed a saved delivery (any accepted shape) through the pipeline"
    )
    replay.add_argument("file", help="a JSON file, or - for standard input")
    replay.add_argument(
        "--content-type",
        default="application/json",
        help="the delivery's Content-Type (default: %(default)s)",
    )
    replay.add_argument("--json", action="store_true", help="print the result document as JSON")
    replay.set_defaults(run=_replay)

    sweep = commands.add_parser(
        "sweep",
        help="list executions, restore the failed ones (one sweep, as the timer runs it)",
        description="One sweep with the function's settings (RESTORE_SWEEP_*); the flags "
        "narrow it for this run. Exit 0 when it ran, 1 when a graph could not be listed, an "
        "item is left to retry or another sweep holds the lease, 2 on a flag or setting error.",
    )
    sweep.add_argument(
        "--graph",
        action="append",
        dest="graphs",
        metavar="G",
        help="a graph to sweep (repeat for more; default: RESTORE_SWEEP_GRAPHS, else every "
        "graph the list API returns that the allowlist admits)",
    )
    sweep.add_argument(
        "--lookback",
        metavar="DURATION",
        help="restore failures that stopped this recently, e.g. 6h "
        "(default: RESTORE_SWEEP_LOOKBACK)",
    )
    sweep.add_argument(
        "--dry-run",
        action="store_true",
        help="list and decide, but send no restore (also when RESTORE_DRY_RUN=true)",
    )
    sweep.add_argument("--json", action="store_true", help="print the sweep document as JSON")
    sweep.set_defaults(run=_sweep)

    serve = commands.add_parser("serve", help="serve the HTTP function with functions-framework")
    serve.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    serve.add_argument("--port", type=int, default=8080, help="default: %(default)s")
    serve.set_defaults(run=_serve)

    commands.add_parser(
        "emulator", help="run the local OBS workflow emulator (see its --help)", add_help=False
    )

    state = commands.add_parser(
        "state",
        help="show recent dedupe and budget records; forget an outcome, reset a budget",
        description="Needs only RESTORE_STATE_URL (and RESTORE_BUDGET_WINDOW).",
    )
    state.add_argument("--limit", type=int, default=20, help="records to show (default: 20)")
    state.add_argument("--json", action="store_true", help="print the records as JSON")
    state.set_defaults(run=_state)
    actions = state.add_subparsers(dest="action", metavar="ACTION")
    forget = actions.add_parser(
        "forget",
        help="drop an event's recorded outcome or in-progress marker, so it can run again",
    )
    forget.add_argument("event_id", metavar="EVENT_ID", help="the key `state` lists")
    forget.add_argument("--json", action="store_true", help="print the result as JSON")
    forget.set_defaults(run=_state_forget)
    reset = actions.add_parser(
        "reset-budget", help="drop the restore budget reservations of one execution"
    )
    reset.add_argument("subject", metavar="GRAPH/EXECUTION")
    reset.add_argument("--json", action="store_true", help="print the result as JSON")
    reset.set_defaults(run=_state_reset_budget)
    _policy_parser(commands)
    return parser


def _restore(args: argparse.Namespace) -> int:
    from handler.client import InvalidNameError
    from handler.credentials import Credentials
    from handler.pipeline import make_client

    settings = load_settings()
    if not (settings.access_key_id and settings.secret_access_key):
        raise SettingsError("OBS_ACCESS_KEY_ID", "credentials are required for restore")
    credentials = Credentials(
        settings.access_key_id, settings.secret_access_key, settings.security_token
    )
    client = make_client(settings, credentials)
    with client:
        try:
            if args.dry_run or settings.dry_run:
                return _restore_dry_run(client, args)
            response = client.restoreFailedWorkflowExecution(args.execution, args.graph)
        except InvalidNameError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    result = {
        "status": response.status,
        "requestId": response.requestId,
        "executionUrn": getattr(response.body, "executionUrn", None),
        "restoredAt": getattr(response.body, "restoredAt", None),
        "errorCode": response.errorCode,
        "errorMessage": response.errorMessage,
        "attempts": response.attempts,
    }
    _print_fields(result, as_json=args.json)
    return 0 if response.ok else 1


def _print_fields(result: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>14}: {'' if value is None else value}")


def _restore_dry_run(client: Any, args: argparse.Namespace) -> int:
    """Ask the service what state the execution is in; a restore is sent only when FAILED."""
    response = client.getWorkflowExecution(args.execution, args.graph)
    info = getattr(response.body, "executionInfo", None) or {}
    state = info.get("execution_state") if response.ok else None
    result = {
        "dryRun": True,
        "status": response.status,
        "requestId": response.requestId,
        "executionState": state,
        "wouldRestore": state == "FAILED",
        "errorCode": response.errorCode,
        "errorMessage": response.errorMessage,
        "attempts": response.attempts,
    }
    _print_fields(result, as_json=args.json)
    return 0 if result["wouldRestore"] else 1


def _replay(args: argparse.Namespace) -> int:
    from handler import intake
    from handler.pipeline import Invocation, build_restorer

    settings = load_settings()
    try:
        body = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:  # missing, a directory, unreadable: one line, not a traceback
        reason = exc.strerror or type(exc).__name__
        print(f"error: cannot read {args.file}: {reason}", file=sys.stderr)
        return 2
    restorer = build_restorer(settings, log_stream=sys.stderr)
    invocation = Invocation()
    try:
        try:
            items = intake.from_http(body, {"Content-Type": args.content_type})
        except intake.IntakeError as exc:
            delivery = restorer.rejected(exc.code, exc.message, exc.status, invocation)
        else:
            delivery = restorer.run(items, invocation)
    finally:
        restorer.close()
    document = delivery.document()
    if args.json:
        print(json.dumps({"status": delivery.status, **document}))
    else:
        _print_table(document, delivery.status)
    return 0 if delivery.status == 200 else 1


def _sweep(args: argparse.Namespace) -> int:
    from handler.intake import IntakeError
    from handler.pipeline import Invocation, build_restorer
    from handler.sweep import SweepRequest

    settings = load_settings()
    if not (settings.access_key_id and settings.secret_access_key):
        # A terminal has no agency: without keys every list call would be refused.
        raise SettingsError("OBS_ACCESS_KEY_ID", "credentials are required for sweep")
    overrides: dict[str, Any] = {}
    if args.graphs:
        overrides["graphs"] = args.graphs
    if args.lookback is not None:
        overrides["lookback"] = args.lookback
    if args.dry_run:
        overrides["dryRun"] = True
    try:
        # The same checks as a timer's user_event, so a flag means what the override means.
        request = SweepRequest.from_settings(settings).overridden(overrides)
    except IntakeError as exc:
        print(f"error: {_flag_message(exc.message)}", file=sys.stderr)
        return 2
    restorer = build_restorer(settings, log_stream=sys.stderr)
    try:
        delivery, summary = restorer.sweep(request, Invocation())
    finally:
        restorer.close()
    if summary.stopped == "state store unavailable":
        print("error: state store unavailable: nothing was swept", file=sys.stderr)
        return 2
    document = {**delivery.document(), "sweep": summary.document()}
    if args.json:
        print(json.dumps(document))
    else:
        _print_sweep(document)
    incomplete = summary.errors or summary.stopped or delivery.retry
    return 1 if incomplete else 0


# How an override's message names its field, and the flag that set it here.
_FLAG_PREFIXES = (("invalid graphs[]:", "invalid --graph:"), ("lookback:", "--lookback:"))


def _flag_message(message: str) -> str:
    """An override's message in the words of the flag that set it (only the leading field
    name: the rest quotes the user's value, which is left as given)."""
    for field, flag in _FLAG_PREFIXES:
        if message.startswith(field):
            return flag + message[len(field) :]
    return message


def _print_sweep(document: dict[str, Any]) -> None:
    """The items the sweep handled (if any), then its summary, one figure a line."""
    if document["results"]:
        _print_table(document, 200, footer=False)
        print()
    sweep = document["sweep"]
    figures = [
        ("graphs scanned", sweep["graphsScanned"]),
        ("pages", sweep["pages"]),
        ("executions listed", sweep["executionsListed"]),
        ("failures found", sweep["failuresFound"]),
        *sorted(sweep["outcomes"].items()),
        ("waiting for next sweep", sweep["waitingForNextSweep"]),
        ("listing errors", len(sweep["errors"])),
        ("duration ms", round(sweep["durationMs"])),
    ]
    if sweep["stopped"]:
        figures.append(("stopped", sweep["stopped"]))
    width = max(len(name) for name, _ in figures)
    for name, value in figures:
        print(f"{name:<{width}}  {value}")
    for error in sweep["errors"]:
        graph = error.get("graph") or "(list of graphs)"
        print(f"error: {graph}: {error.get('status', '')} {error.get('errorCode') or ''}".rstrip())


def _serve(args: argparse.Namespace) -> int:
    load_settings()  # fail here, with the variable's name, rather than inside the server
    command = serve_command(args.host, args.port)
    os.execv(command[0], command)  # noqa: S606 - replaces this process with the server
    return 0  # pragma: no cover


def serve_command(host: str, port: int) -> list[str]:
    """The documented way to serve the HTTP function, with this interpreter's framework."""
    executable = Path(sys.executable).parent / "functions-framework"
    return [str(executable), "--source", str(MAIN_SOURCE), "--target", "restore",
            "--host", host, "--port", str(port)]  # fmt: skip


def _state(args: argparse.Namespace) -> int:
    settings = load_store_settings()  # the store's settings only: no OBS_ENDPOINT needed
    with _opened_store(settings.state_url) as store:
        records = store.recent(args.limit, window=settings.budget_window)
    if args.json:
        print(json.dumps({"store": store.describe, **records}, default=str))
        return 0
    print(f"store: {store.describe}")
    print("dedupe:")
    for record in records["dedupe"]:
        outcome = (record.get("record") or {}).get("outcome", "")
        print(f"  {record['state']:<12} {outcome:<17} {record['key']}")
    print("budget:")
    for record in records["budget"]:
        print(f"  {record['used']:>3} used  {record['subject']}")
    return 0


def _state_forget(args: argparse.Namespace) -> int:
    settings = load_store_settings()
    with _opened_store(settings.state_url) as store:
        forgotten = store.forget(args.event_id)
        describe = store.describe
    if args.json:
        print(json.dumps({"store": describe, "key": args.event_id, "forgotten": forgotten}))
    elif forgotten:
        print(f"forgot {args.event_id}: a redelivery will be handled again")
    else:
        print(f"nothing recorded for {args.event_id}")
    return 0


def _state_reset_budget(args: argparse.Namespace) -> int:
    from handler.names import InvalidNameError, validate_name

    graph, slash, execution = args.subject.partition("/")
    try:
        if not slash:
            raise InvalidNameError("subject", "must be GRAPH/EXECUTION")
        validate_name(graph, "graph")
        validate_name(execution, "execution")
    except InvalidNameError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = load_store_settings()
    with _opened_store(settings.state_url) as store:
        dropped = store.reset_budget(args.subject)
        describe = store.describe
    if args.json:
        print(json.dumps({"store": describe, "subject": args.subject, "dropped": dropped}))
    else:
        print(f"dropped {dropped} budget reservation(s) of {args.subject}")
    return 0


# --- policy: restore rules, checked and explained --------------------------------------------


def _policy_parser(commands: Any) -> None:
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
        return 0
    print(f"policy {policy.source}: valid, digest {policy.digest}, {len(policy.rules)} rule(s)")
    for number, rule in enumerate(policy.rules, start=1):
        print(f"{number}. {rule.name}")
        for key, value in rule.describe().items():
            if key != "name":
                print(f"     {key}: {json.dumps(value)}")
    return 0


def _policy_explain(args: argparse.Namespace) -> int:
    from handler.settings import load_policy

    if args.restores < 0:
        print("error: --restores must be 0 or more", file=sys.stderr)
        return 2
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
        answer["decision"] = (
            f"budget_exhausted: {rule.max_restores} restores within {rule.window:g}s already"
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
    if args.json:
        print(json.dumps(answer))
        return 0
    for key in ("policy", "digest", "rule", "pattern", "excerpt", "note", "decision"):
        if answer.get(key) is not None:
            print(f"{key:>9}: {answer[key]}")
    if "schedule" in answer:
        jitter = f" (each up to {answer['jitter']:.0%} sooner)" if answer["jitter"] else ""
        schedule = ", ".join(f"{seconds:g}s" for seconds in answer["schedule"])
        print(f"{'schedule':>9}: {schedule}{jitter}")
    return 0


@contextlib.contextmanager
def _opened_store(url: str) -> Iterator[StateStore]:
    from handler.store import open_store

    store = open_store(url)
    try:
        yield store
    finally:
        store.close()


def _print_table(document: dict[str, Any], status: int, *, footer: bool = True) -> None:
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
    text = "" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


if __name__ == "__main__":
    sys.exit(main())
