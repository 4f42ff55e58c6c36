"""``pause GRAPH|--all [--for 2h] [--reason TEXT]`` and ``resume GRAPH|--all``: stop restores
while a dependency is down, without a redeploy; ``status [--json]``: what the store says now.

A pause is one record in the state store (:mod:`handler.pipeline.pauses`), so it needs only
RESTORE_STATE_URL and holds for every instance at once. While it holds, that graph's failures
end ``deferred`` (the reason names who paused, why and until when) and are remembered; the
first sweep after the pause ends - ``resume``, or its expiry - restores them.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import datetime, timezone
from typing import Any

from handler.cli.output import EXIT_COULD_NOT_RUN, EXIT_DONE, execution_subject
from handler.cli.state import _in_store
from handler.durations import duration_seconds, duration_text
from handler.pipeline.pauses import DEFAULT_PAUSE_SECONDS, PauseError, pause, resume


def add_commands(commands: Any) -> None:
    """Add ``pause`` and ``resume`` to the command line's subparsers."""
    paused = commands.add_parser(
        "pause",
        help="stop restores of a graph (or of every graph) for a while",
        description="Needs only RESTORE_STATE_URL. The pause expires by itself.",
    )
    _target(paused)
    paused.add_argument(
        "--for",
        dest="duration",
        type=_duration,
        default=DEFAULT_PAUSE_SECONDS,
        help=f"how long, e.g. 30m, 2h (default: {duration_text(DEFAULT_PAUSE_SECONDS)})",
    )
    paused.add_argument("--reason", default="", help="why: shown in every deferred item")
    paused.add_argument("--json", action="store_true", help="print the pause as JSON")
    paused.set_defaults(run=_pause)
    resumed = commands.add_parser(
        "resume",
        help="let restores of a graph (or of every graph) go on; the sweep restores what waited",
    )
    _target(resumed)
    resumed.add_argument("--json", action="store_true", help="print the answer as JSON")
    resumed.set_defaults(run=_resume)
    status = commands.add_parser(
        "status",
        help="per graph: paused or breaker state, restores in the last hour and day, given up, "
        "what waits; the last sweep",
        description="Needs only RESTORE_STATE_URL.",
    )
    status.add_argument("--json", action="store_true", help="print the document as JSON")
    status.set_defaults(run=_status)
    history = commands.add_parser(
        "history",
        help="one execution's ledger: each failure seen, each restore, each give-up message",
        description="Needs only RESTORE_STATE_URL (and RESTORE_BUDGET_WINDOW).",
    )
    history.add_argument("subject", metavar="GRAPH/EXECUTION")
    history.add_argument("--json", action="store_true", help="print the document as JSON")
    history.set_defaults(run=_history)


def _target(command: argparse.ArgumentParser) -> None:
    target = command.add_mutually_exclusive_group(required=True)
    target.add_argument("graph", nargs="?", help="the graph's name")
    target.add_argument("--all", action="store_true", help="every graph")


def _duration(text: str) -> float:
    seconds = duration_seconds(text)
    if seconds is None or seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a duration such as 30m or 2h, got {text[:30]!r}")
    return seconds


def _pause(args: argparse.Namespace) -> int:
    graph = None if args.all else args.graph
    try:
        paused, describe = _in_store(
            lambda store: pause(
                store, graph, by=_operator(), seconds=args.duration, reason=args.reason
            )
        )
    except PauseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    if args.json:
        print(json.dumps({"store": describe, "pause": paused}))
    else:
        scope = "every graph" if graph is None else f"graph {graph}"
        print(f"paused {scope} until {_iso(paused['until'])}: resume with `resume "
              f"{graph or '--all'}`")  # fmt: skip
    return EXIT_DONE


def _resume(args: argparse.Namespace) -> int:
    graph = None if args.all else args.graph
    try:
        ended, describe = _in_store(lambda store: resume(store, graph))
    except PauseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_COULD_NOT_RUN
    scope = "every graph" if graph is None else f"graph {graph}"
    if args.json:
        print(json.dumps({"store": describe, "graph": graph or "*", "resumed": ended}))
    elif ended:
        print(f"resumed {scope}: the next sweep restores what waited")
    else:
        print(f"{scope} was not paused")
    return EXIT_DONE


def _status(args: argparse.Namespace) -> int:
    from handler.status import status_document

    document, _ = _in_store(status_document)
    if args.json:
        print(json.dumps(document))
        return EXIT_DONE
    everything = document["allPaused"]
    if everything:
        print(f"every graph paused by {everything.get('by')} until {_iso(everything['until'])}: "
              f"{everything.get('reason') or 'no reason given'}")  # fmt: skip
    columns = ("graph", "state", "restored 1h", "restored 1d", "gave up", "deferred", "messages",
               "last sweep")  # fmt: skip
    rows = [columns]
    for name, graph in document["graphs"].items():
        rows.append((name, _graph_state(graph, everything), str(graph["restoredLastHour"]),
                     str(graph["restoredLastDay"]),
                     str(graph["gaveUp"]), str(graph["deferredWaiting"]),
                     str(graph["notificationsWaiting"]),
                     _graph_sweep(graph["lastSweep"])))  # fmt: skip
    not_kept = document.get("notKept") or []
    if not_kept:
        print(_not_kept_line(not_kept))
    if "last_sweep" in not_kept:
        print("last sweep: none kept in this state file")
    else:
        print(_last_sweep_line(document["lastSweep"]))
    if len(rows) == 1:
        print(f"nothing recorded in {document['store']}")
        return EXIT_DONE
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return EXIT_DONE


def _history(args: argparse.Namespace) -> int:
    from handler.settings import load_store_settings
    from handler.status import history_document

    named = execution_subject(args.subject)
    if named is None:
        return EXIT_COULD_NOT_RUN
    graph, execution = named
    window = load_store_settings().budget_window
    document, _ = _in_store(lambda store: history_document(store, graph, execution, window))
    if args.json:
        print(json.dumps(document))
        return EXIT_DONE
    print(f"{graph}/{execution}")
    for entry in document["entries"]:
        print(f"  {history_line(entry)}")
    if document.get("notKept"):
        print(f"  no ledger kept in this state file {_NOT_KEPT_WHY}")
    elif not document["entries"]:
        print("  nothing in its ledger (kept for RESTORE_DEDUPE_RETENTION)")
    restores = ", ".join(_iso(at) for at in document["restoresSentAt"]) or "none"
    print(f"  restores its budget holds (RESTORE_BUDGET_WINDOW): {restores}")
    return EXIT_DONE


def history_line(entry: dict[str, Any]) -> str:
    """One ledger entry as one line: its time (UTC), what it was, then its facts."""
    kind = entry.get("kind")
    facts: list[str] = []
    if kind == "failure":
        what = f"failure seen    via {entry.get('door')}"
        facts += [f"stopped {entry.get('stoppedAt') or 'not known'}", f"id {entry.get('eventId')}"]
        if entry.get("executionError"):
            facts.append(f"error: {entry['executionError']}")
    elif kind in ("restore", "decision"):
        label = "restore sent" if kind == "restore" else "not restored"
        what = f"{label:<15} {entry.get('outcome')}"
        facts.append(f"rule {entry.get('rule') or '-'}")
        for name, shown in (("requestId", "request"), ("status", "status"),
                            ("errorCode", "error"), ("forcedBy", "forced by")):  # fmt: skip
            if entry.get(name) not in (None, ""):
                facts.append(f"{shown} {entry[name]}")
        if entry.get("reason"):
            facts.append(f"- {entry['reason']}")
    elif kind == "notification":
        what = f"{'message':<15} {entry.get('state')}"
        if entry.get("digest"):
            facts.append(f"in a digest of {entry['digest']}")
        for name, shown in (("why", "-"), ("messageId", "message id"), ("errorCode", "error")):
            if entry.get(name):
                facts.append(f"{shown} {entry[name]}")
    else:  # written by a later version: shown, not lost
        what = str(kind)
        facts.append(json.dumps({k: v for k, v in entry.items() if k not in ("at", "kind")}))
    return "  ".join([str(entry.get("at") or "-"), what, *facts])


def _last_sweep_line(sweep: dict[str, Any] | None) -> str:
    """The newest sweep in one line: when it finished, how long it took, what it found."""
    if not sweep:
        return "last sweep: none recorded"
    outcomes = _outcomes(sweep.get("outcomes") or {})
    parts = [
        f"last sweep: finished {sweep.get('finishedAt')}",
        f"took {_took(float(sweep.get('durationMs') or 0))}",
        f"{sweep.get('graphsScanned')} graph(s)",
        f"{sweep.get('failuresFound')} failure(s) found",
        outcomes or "nothing handled",
    ]
    if sweep.get("waitingForNextSweep"):
        parts.append(f"{sweep['waitingForNextSweep']} left for the next sweep")
    if sweep.get("errors"):
        parts.append(f"{len(sweep['errors']) + sweep.get('errorsLeftOff', 0)} error(s)")
    if sweep.get("stopped"):
        parts.append(f"stopped: {sweep['stopped']}")
    return ", ".join(parts)


def _graph_state(graph: dict[str, Any], everything: dict[str, Any] | None) -> str:
    """What holds a graph's restores: its own pause or the pause of every graph, and its
    breaker when not closed - both, when both hold (resuming alone would not let it go)."""
    held = []
    if graph["paused"]:
        held.append(f"paused until {_iso(graph['paused']['until'])}")
    elif everything:
        held.append("paused (every graph)")
    if graph["breaker"] != "closed":
        held.append(f"breaker {graph['breaker']}")
    return ", ".join(held) or "ok"


# Why a store keeps no records of a kind (handler.store.RecordsNotKept): there are none.
_NOT_KEPT_WHY = (
    "(an earlier version made it and it is open read-only; the function adds what is missing "
    "when it next opens the file)"
)


def _not_kept_line(kinds: list[str]) -> str:
    return f"not kept in this state file: {', '.join(kinds)} {_NOT_KEPT_WHY}"


def _graph_sweep(part: dict[str, Any] | None) -> str:
    """A graph's part of the last sweep, e.g. ``2 found, 1 deferred, 1 restored, 1 error(s)``;
    ``-`` when the sweep did not list it, found nothing in it and handled none of its items."""
    if not part:
        return "-"
    words = [] if part.get("failuresFound") is None else [f"{part['failuresFound']} found"]
    words += [_outcomes(part.get("outcomes") or {})] if part.get("outcomes") else []
    words += [f"{part['errors']} error(s)"] if part.get("errors") else []
    return ", ".join(words) or "-"


def _took(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _outcomes(counts: dict[str, int]) -> str:
    """``{"restored": 2, "failed": 1}`` as ``1 failed, 2 restored``."""
    return ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))


def _operator() -> str:
    try:
        return f"{getpass.getuser()} (command line)"
    except Exception:  # no user name in a container: still say where it came from
        return "an operator (command line)"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
