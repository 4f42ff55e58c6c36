"""An operator's pause of a graph (or of every graph), as the store keeps it.

While a dependency is down an operator stops restores without redeploying: ``pause GRAPH|--all
[--for 2h] [--reason TEXT]`` on the command line or ``POST /pause`` on the HTTP function write
one record to the state store, which every instance's admission reads
(:meth:`handler.pipeline.admission.Admission._paused_by_operator`); ``resume`` drops it, and it
expires by itself at its ``until``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from handler.names import InvalidNameError, validate_name
from handler.store import StateStore

ALL_GRAPHS = "*"
HOLD_PAUSED = "paused"  # what holds a paused graph's deferred failure, as remembered
DEFAULT_PAUSE_SECONDS = 3600.0  # a forgotten pause must not stop restores for ever
MAX_PAUSE_SECONDS = 7 * 86400.0
MAX_REASON_CHARACTERS = 500


class PauseError(ValueError):
    """A pause or resume asked with a bad argument: what is wrong, safe to answer."""


def pause(
    store: StateStore,
    graph: str | None,
    *,
    by: str,
    seconds: float = DEFAULT_PAUSE_SECONDS,
    reason: str = "",
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Pause ``graph`` (None: every graph) for ``seconds``; the pause as recorded.

    Raises :class:`PauseError` for a bad argument, before any I/O, and
    :class:`~handler.store.StoreUnavailable`."""
    subject = _subject(graph)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise PauseError("the pause's duration must be a number of seconds")
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_PAUSE_SECONDS):
        raise PauseError(
            f"the pause's duration must be more than 0 and at most {MAX_PAUSE_SECONDS:.0f}s"
        )
    if (
        not isinstance(reason, str)
        or len(reason) > MAX_REASON_CHARACTERS
        or not reason.isprintable()
    ):
        raise PauseError(
            f"the reason must be one line of printable text, at most {MAX_REASON_CHARACTERS}"
            " characters"
        )
    now = clock()
    record = {"by": by[:128], "reason": reason, "at": now}
    store.pause(subject, record, now + seconds)
    return {"graph": subject, **record, "until": now + seconds}


def resume(store: StateStore, graph: str | None) -> bool:
    """End ``graph``'s pause (None: the pause of every graph); whether there was one."""
    return store.resume(_subject(graph))


def _subject(graph: str | None) -> str:
    if graph is None:
        return ALL_GRAPHS
    try:
        return validate_name(graph, "graph")
    except InvalidNameError as exc:
        raise PauseError(str(exc)) from None
