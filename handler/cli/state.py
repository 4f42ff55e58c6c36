"""``state``, ``state forget`` and ``state reset-budget``: what the state store remembers, and
the two ways an operator lets something run again.

They need only the store's settings (RESTORE_STATE_URL, RESTORE_BUDGET_WINDOW), so they work
where no workflow API is configured - on the machine that only holds the store's address.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any, TypeVar

from handler.cli.output import EXIT_COULD_NOT_RUN, EXIT_DONE, execution_subject
from handler.durations import duration_text
from handler.settings import load_store_settings
from handler.store import StateStore

T = TypeVar("T")

MAX_LIMIT = 1000  # records `state` shows: a screenful is 20, a script's look-back a thousand


def _limit(text: str) -> int:
    """``--limit``: how many records, 1 to :data:`MAX_LIMIT` (a store asked for more, or for
    a number SQLite cannot hold, would scan everything or fail)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number 1-{MAX_LIMIT}, got {text[:30]!r}"
        ) from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be 1-{MAX_LIMIT}, got {text[:30]}")
    return value


def _key(text: str) -> str:
    """``EVENT_ID``: a key as `state` lists it; an empty one names no record at all."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty: give the key `state` lists")
    return text


def add_commands(commands: Any) -> None:
    """Add ``state`` and its actions to the command line's subparsers."""
    state = commands.add_parser(
        "state",
        help="show recent dedupe and budget records; forget an outcome, reset a budget",
        description="Needs only RESTORE_STATE_URL (and RESTORE_BUDGET_WINDOW).",
    )
    state.add_argument(
        "--limit", type=_limit, default=20, help=f"records to show, 1-{MAX_LIMIT} (default: 20)"
    )
    state.add_argument("--json", action="store_true", help="print the records as JSON")
    state.set_defaults(run=_state)
    actions = state.add_subparsers(dest="action", metavar="ACTION")
    forget = actions.add_parser(
        "forget",
        help="drop an event's recorded outcome or in-progress marker, so it can run again",
    )
    forget.add_argument("event_id", metavar="EVENT_ID", type=_key, help="the key `state` lists")
    forget.add_argument("--json", action="store_true", help="print the result as JSON")
    forget.set_defaults(run=_state_forget)
    reset = actions.add_parser(
        "reset-budget", help="drop the restore budget reservations of one execution"
    )
    reset.add_argument("subject", metavar="GRAPH/EXECUTION")
    reset.add_argument("--json", action="store_true", help="print the result as JSON")
    reset.set_defaults(run=_state_reset_budget)


def _state(args: argparse.Namespace) -> int:
    settings = load_store_settings()  # the store's settings only: no OBS_ENDPOINT needed
    with _opened_store(settings.state_url) as store:
        records = store.recent(args.limit, window=settings.budget_window)
    if args.json:
        print(json.dumps({"store": store.describe, **records}, default=str))
        return EXIT_DONE
    print(f"store: {store.describe}")
    print("dedupe (newest first; a redelivery of KEY is answered from it until UNTIL):")
    for record in records["dedupe"]:
        fields = record.get("record") or {}
        outcome = fields.get("outcome", "")
        when = f"restored {_time(fields['restoredAt'])}  " if fields.get("restoredAt") else ""
        print(
            f"  {record['state']:<12} {outcome:<17} {_execution(record['key'], fields):<40} "
            f"{when}until {_time(record.get('expires_at'))}  {record['key']}"
        )
    window = duration_text(settings.budget_window)
    print(f"budget (restores within RESTORE_BUDGET_WINDOW, {window}):")
    for record in records["budget"]:
        last = _time(record.get("last_at"))
        print(f"  {record['used']:>3} used  {record['subject']:<40} last {last}")
    return EXIT_DONE


def _execution(key: str, record: dict[str, Any]) -> str:
    """GRAPH/EXECUTION of a dedupe record: recorded with it, or read from its execution URN
    or its key (a sweep's identity names both); ``-`` for an older record without them."""
    if record.get("graphName") and record.get("executionName"):
        return f"{record['graphName']}/{record['executionName']}"
    urn = str(record.get("executionUrn") or "").split(":")
    if "execution" in urn and len(urn) > urn.index("execution") + 2:
        at = urn.index("execution")
        return f"{urn[at + 1]}/{urn[at + 2]}"
    if key.startswith("sweep:") and "@" in key:
        return key.removeprefix("sweep:").rsplit("@", 1)[0]
    return "-"


def _time(value: Any) -> str:
    """A store time (epoch seconds) or a service's ISO text, as UTC to the second."""
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value) if value else "-"


def _state_forget(args: argparse.Namespace) -> int:
    forgotten, describe = _in_store(lambda store: store.forget(args.event_id))
    if args.json:
        print(json.dumps({"store": describe, "key": args.event_id, "forgotten": forgotten}))
    elif forgotten:
        print(f"forgot {args.event_id}: a redelivery will be handled again")
    else:
        print(f"nothing recorded for {args.event_id}")
    return EXIT_DONE


def _state_reset_budget(args: argparse.Namespace) -> int:

    if execution_subject(args.subject) is None:
        return EXIT_COULD_NOT_RUN
    dropped, describe = _in_store(lambda store: store.reset_budget(args.subject))
    if args.json:
        print(json.dumps({"store": describe, "subject": args.subject, "dropped": dropped}))
    else:
        print(f"dropped {dropped} budget reservation(s) of {args.subject}")
    return EXIT_DONE


def _in_store(change: Callable[[StateStore], T]) -> tuple[T, str]:
    """Apply one change to the configured store; returns its answer and the store's name."""
    settings = load_store_settings()
    with _opened_store(settings.state_url) as store:
        return change(store), store.describe


@contextlib.contextmanager
def _opened_store(url: str) -> Iterator[StateStore]:
    from handler.store import open_store

    store = open_store(url)
    try:
        yield store
    finally:
        store.close()
