"""``sweep``: one sweep now, as the timer runs it - list executions, restore the failed ones.

The flags are the timer event's overrides under other names, checked by the same
:class:`~handler.sweep.SweepRequest`, so a flag means here what the override means there.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from handler.cli.output import (
    EXIT_COULD_NOT_RUN,
    exit_code,
    print_table,
    quiet_unless_verbose,
)
from handler.settings import SettingsError, load_settings


def add_commands(commands: Any) -> None:
    """Add ``sweep`` to the command line's subparsers."""
    sweep = commands.add_parser(
        "sweep",
        help="list executions, restore the failed ones (one sweep, as the timer runs it)",
        description="One sweep with the function's settings (RESTORE_SWEEP_*); the flags "
        "narrow it for this run. Exit 0 when every failure found was restored or needed "
        "nothing, 1 when one failed or must be retried (a graph could not be listed, failures "
        "wait for the next sweep, another sweep holds the lease), 2 when it could not run.",
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


def _sweep(args: argparse.Namespace) -> int:
    from handler.intake import IntakeError
    from handler.invocation import Invocation
    from handler.runtime import build_runtime
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
        return EXIT_COULD_NOT_RUN
    runtime = build_runtime(quiet_unless_verbose(settings, args.verbose), log_stream=sys.stderr)
    try:
        answer, summary = runtime.sweep(request, Invocation())
    finally:
        runtime.close()
    if summary.store_unavailable:
        print("error: state store unavailable: nothing was swept", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    document = {**answer.document(), "sweep": summary.document()}
    if args.json:
        print(json.dumps(document))
    else:
        _print_sweep(document)
    incomplete = bool(summary.errors or summary.stopped or summary.waiting or answer.retry)
    return exit_code(summary.outcomes, incomplete=incomplete)


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
        print_table(document, 200, footer=False)
        print()
    sweep = document["sweep"]
    figures = [
        ("graphs scanned", sweep["graphsScanned"]),
        ("pages", sweep["pages"]),
        ("executions listed", sweep["executionsListed"]),
        ("failures found", sweep["failuresFound"]),
        *sorted(sweep["outcomes"].items()),
        ("waiting for next sweep", sweep["waitingForNextSweep"]),
        ("listing errors", len(sweep["errors"]) + sweep.get("errorsLeftOff", 0)),
        ("duration ms", round(sweep["durationMs"])),
    ]
    if sweep["stopped"]:
        figures.append(("stopped", sweep["stopped"]))
    width = max(len(name) for name, _ in figures)
    for name, value in figures:
        print(f"{name:<{width}}  {value}")
    for error in sweep["errors"]:
        where = error.get("graph") or "(list of graphs)"
        if error.get("execution"):
            where += f"/{error['execution']}"
        said = (error.get("status"), error.get("errorCode"), error.get("message"))
        print(f"error: {where}: " + " ".join(str(part) for part in said if part is not None))
