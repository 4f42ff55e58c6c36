"""``restore`` (one execution, straight through the shared client) and ``replay`` (a saved
delivery, through the whole pipeline as the function would handle it).

Both answer the question an operator asks after a failure - "would this restore work now?" -
with the function's own settings, so a success here means the same call works there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from handler.cli.output import (
    EXIT_COULD_NOT_RUN,
    exit_code,
    print_fields,
    print_table,
    quiet_unless_verbose,
)
from handler.settings import SettingsError, load_settings


def add_commands(commands: Any) -> None:
    """Add ``restore`` and ``replay`` to the command line's subparsers."""
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
            return EXIT_COULD_NOT_RUN
    result = {
        "status": response.status,
        "requestId": response.requestId,
        "executionUrn": getattr(response.body, "executionUrn", None),
        "restoredAt": getattr(response.body, "restoredAt", None),
        "errorCode": response.errorCode,
        "errorMessage": response.errorMessage,
        "attempts": response.attempts,
    }
    print_fields(result, as_json=args.json)
    return exit_code(["restored" if response.ok else "failed"])


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
    print_fields(result, as_json=args.json)
    if not response.ok:
        return exit_code(["failed"])  # the question could not be answered
    return exit_code(["dry_run" if result["wouldRestore"] else "skipped"])


def _replay(args: argparse.Namespace) -> int:
    from handler import intake
    from handler.pipeline import Invocation, build_restorer

    settings = load_settings()
    try:
        body = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:  # missing, a directory, unreadable: one line, not a traceback
        reason = exc.strerror or type(exc).__name__
        print(f"error: cannot read {args.file}: {reason}", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    restorer = build_restorer(quiet_unless_verbose(settings, args.verbose), log_stream=sys.stderr)
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
        print_table(document, delivery.status)
    outcomes = [result["outcome"] for result in document["results"]]
    return exit_code(outcomes, incomplete=delivery.retry or not outcomes)
