"""``restore`` (one execution, through the same admission as an event) and ``replay`` (a
saved delivery, through the whole pipeline as the function would handle it).

Both answer the question an operator asks after a failure - "would this restore work now?" -
with the function's own settings, so a success here means the same call works there. An
operator's restore is an item like any event's: the allowlist, the restore rules, the budget
and the recorded outcome all apply (its identity is ``cli:<graph>:<execution>:<time>``), so
the command line is no back door around the loop limit. ``--force`` skips the allowlist and
the rules for an operator who has decided, never the budget or the record, and says who did.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from handler.cli.output import (
    EXIT_COULD_NOT_RUN,
    EXIT_DONE,
    exit_code,
    print_fields,
    print_table,
    quiet_unless_verbose,
)
from handler.intake.identity import cli_identity
from handler.outcomes import Outcome
from handler.settings import SettingsError, load_settings

MAX_REASON_CHARS = 200  # an operator's --reason, kept in the record and every log line
DEADLINE_MARGIN_SECONDS = 1.0  # as the function: finish before the in-progress marker expires


def add_commands(commands: Any) -> None:
    """Add ``restore`` and ``replay`` to the command line's subparsers."""
    restore = commands.add_parser(
        "restore",
        help="restore one failed execution now, through the function's rules",
        description="One restore through the same admission as an event: the allowlist, the "
        "restore rules, the budget and the recorded outcome. Exit 0 when restored or nothing "
        "was left to do, 1 when it failed or must be retried (refused by the budget, deferred, "
        "no answer), 2 when it could not run.",
    )
    restore.add_argument("--graph", required=True, help="workflow (graph) name")
    restore.add_argument("--execution", required=True, help="execution name")
    restore.add_argument("--json", action="store_true", help="print the result as JSON")
    restore.add_argument(
        "--dry-run",
        action="store_true",
        help="say what the function would decide and query the execution's state, but send "
        "no restore and record nothing (also when RESTORE_DRY_RUN=true)",
    )
    restore.add_argument(
        "--force",
        action="store_true",
        help="skip the allowlist and the restore rules (never the budget): the result, the "
        "record and the log line say who forced it",
    )
    restore.add_argument(
        "--reason", metavar="TEXT", help="why the restore is forced (with --force; logged)"
    )
    restore.set_defaults(run=_restore)

    replay = commands.add_parser(
        "replay", help="feed a saved delivery (any accepted shape) through the pipeline"
    )
    replay.add_argument(
        "file", help="a saved delivery: the body a sender POSTed, or - for standard input"
    )
    replay.add_argument(
        "--content-type",
        default="application/json",
        help="the delivery's Content-Type, e.g. application/cloudevents-batch+json "
        "(default: %(default)s)",
    )
    replay.add_argument("--json", action="store_true", help="print the result document as JSON")
    replay.set_defaults(run=_replay)


def _restore(args: argparse.Namespace) -> int:
    from handler.intake import Item
    from handler.intake.items import RESTORE
    from handler.invocation import Forced, Invocation
    from handler.names import InvalidNameError, validate_name
    from handler.runtime import build_runtime

    settings = load_settings()
    if not (settings.access_key_id and settings.secret_access_key):
        raise SettingsError("OBS_ACCESS_KEY_ID", "credentials are required for restore")
    try:
        graph = validate_name(args.graph, "graphName")
        execution = validate_name(args.execution, "executionName")
    except InvalidNameError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    problem = _reason_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    dry_run = args.dry_run or settings.dry_run
    forced = Forced(_operator(), (args.reason or "").strip()) if args.force else None
    item = Item(RESTORE, _identity(graph, execution), "cli", graph, execution)
    invocation = Invocation(
        deadline=time.monotonic() + max(0.5, settings.claim_ttl - DEADLINE_MARGIN_SECONDS),
        dry_run=dry_run,
        forced=forced,
    )
    runtime = build_runtime(quiet_unless_verbose(settings, args.verbose), log_stream=sys.stderr)
    try:
        answer = runtime.run([item], invocation)
        (result,) = answer.results
        if result.error_code == "StoreUnavailable":
            print("error: state store unavailable: nothing was called", file=sys.stderr)
            return EXIT_COULD_NOT_RUN
        document = {**result.answer(), "forced": forced.document() if forced else None}
        if dry_run:
            # A dry run leaves nothing behind: markers were released, and a decision the
            # admission records (an exhausted budget) is dropped again under this run's
            # identity.
            runtime.store.forget(item.event_id)
            document["reason"] = document["reason"].replace("RESTORE_DRY_RUN is on", "dry run")
            document.update(_would_restore(runtime, item, document))
    finally:
        runtime.close()
    if result.maybe_applied:
        document["maybeApplied"] = True
        document["hint"] = (
            "may have been applied, check with `obs-workflow-restore restore --graph "
            f"{graph} --execution {execution} --dry-run`"
        )
    _print_restore(document, graph, execution, as_json=args.json)
    if dry_run and document["wouldRestore"]:
        return EXIT_DONE
    if dry_run and result.outcome is Outcome.DRY_RUN:  # admitted, but the state says no
        return exit_code(["skipped" if document["executionState"] else "retryable_error"])
    # A duplicate still in flight elsewhere (answer.retry) is not done yet.
    return exit_code([result.outcome], incomplete=answer.retry)


def _reason_problem(args: argparse.Namespace) -> str | None:
    """Why ``--reason`` cannot be used, or None. It goes into records and log lines: one
    short line of printable text, and only with --force, where it means something."""
    if args.reason is None:
        return None
    if not args.force:
        return "--reason goes with --force (it says why the rules were skipped)"
    if len(args.reason) > MAX_REASON_CHARS or not args.reason.isprintable():
        return f"--reason must be one line of printable text, at most {MAX_REASON_CHARS} chars"
    return None


def _operator() -> str:
    """Who is forcing: the OS user running the command (never a secret, always something)."""
    try:
        return getpass.getuser() or "unknown"
    except (OSError, KeyError, ImportError):  # no login name and no passwd entry (containers)
        return "unknown"


def _identity(graph: str, execution: str) -> str:
    """The operator's restore is its own request: one identity per run of the command, so a
    second run is judged afresh (by the budget, and by a query when a restore came before)."""
    moment = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return cli_identity(graph, execution, moment.replace("+00:00", "Z"))


def _would_restore(runtime: Any, item: Any, document: dict[str, Any]) -> dict[str, Any]:
    """A dry run's answer: the execution's state now (a query, no restore) and whether the
    function would send a restore - admitted, and the execution failed, which the service
    requires."""
    from handler.pipeline.classify import execution_error, state_of, unreadable_execution

    client = runtime.clients.get(None)
    answer = client.getWorkflowExecution(item.execution_name, item.graph_name)
    state = state_of(answer)
    admitted = document["outcome"] == Outcome.DRY_RUN
    fields: dict[str, Any] = {
        "dryRun": True,
        "executionState": state,
        "wouldRestore": admitted and state == "FAILED",
        "executionError": execution_error(answer) or document["executionError"],
    }
    if admitted and state != "FAILED":
        seen = f"the execution is {state}" if state else unreadable_execution(answer)
        fields["reason"] = f"{document['reason']}; but no restore would be sent: {seen}"
    return fields


def _print_restore(document: dict[str, Any], graph: str, execution: str, *, as_json: bool) -> None:
    """A headline (what happened, which rule decided), then the fields; or one JSON line."""
    if as_json:
        print(json.dumps(document))
        return
    if document.get("maybeApplied"):
        headline = f"{graph}/{execution}: {document['hint']}"
    else:
        outcome = document["outcome"]
        if document.get("dryRun"):
            outcome = f"dry run, {'would' if document['wouldRestore'] else 'would not'} restore"
        if document.get("forced"):
            outcome += f" (forced by {document['forced']['by']})"
        elif document.get("rule"):
            outcome += f" (rule {document['rule']})"
        headline = f"{graph}/{execution}: {outcome}"
    print(headline)
    fields = dict(document)
    fields.pop("hint", None)
    if fields.get("forced"):
        forced = fields["forced"]
        fields["forced"] = forced["by"] + (f": {forced['reason']}" if forced["reason"] else "")
    print_fields(fields, as_json=False)


def _replay(args: argparse.Namespace) -> int:
    from handler import intake
    from handler.invocation import Invocation
    from handler.runtime import build_runtime

    settings = load_settings()
    try:
        body = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:  # missing, a directory, unreadable: one line, not a traceback
        reason = exc.strerror or type(exc).__name__
        print(f"error: cannot read {args.file}: {reason}", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    runtime = build_runtime(quiet_unless_verbose(settings, args.verbose), log_stream=sys.stderr)
    invocation = Invocation()
    try:
        try:
            items = intake.from_http(body, {"Content-Type": args.content_type})
        except intake.IntakeError as exc:
            answer = runtime.rejected(exc.code, exc.message, exc.status, invocation)
        else:
            answer = runtime.run(items, invocation)
    finally:
        runtime.close()
    document = answer.document()
    if args.json:
        print(json.dumps({"status": answer.status, **document}))
    else:
        print_table(document, answer.status)
    outcomes = [result["outcome"] for result in document["results"]]
    return exit_code(outcomes, incomplete=answer.retry or not outcomes)
