"""Quiet listings: a graph whose last listing found no failure is listed again only at its
next slot, at most ``interval`` later, instead of by every sweep.

Most sweeps run over healthy graphs, and listing one costs at least one call whatever it
holds (OBS has no state filter, DWR no call without a graph), so a sweep that lists every
graph costs calls in proportion to the graphs, not to what failed. Here a graph listed in
full without a failure in the lookback is marked quiet in the state store until its next
slot; a graph with a failure is listed by every sweep, as is one whose listing failed or
was cut short. The cost of a sweep is then the graphs with failures, plus the quiet graphs
whose slot came (``graphs x timer / interval`` on average), plus the list of graphs.

Why nothing inside the lookback is missed: every listing reads the whole lookback, and a
quiet mark ends at most ``interval`` after the sweep that set it. A failure that appears in
the list at ``a`` and stopped at ``t`` is found by the first sweep that lists its graph at
or after ``a`` with the service answering: a graph listed after ``a`` found it then (a
sweep within the lookback), and one not listed since ``a`` is due from ``a + interval`` at
the latest, so any sweep in ``[a + interval, t + lookback]`` that gets an answer finds it.
The interval is at most half the lookback (:func:`interval_for`): the other half is what
outages, late sweeps and list answers that lag may take (tests/test_sweep_quiet.py checks
it over random schedules).

Slots are spread by the graph's name (:func:`next_slot`), so quiet graphs come due a few at a
time rather than all in the sweep after the first. A dry run changes no state: it lists
every graph and marks none.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from handler.report import Reporter
from handler.store import StateStore, StoreUnavailable


def interval_for(quiet_interval: float, lookback: float) -> float:
    """The interval a sweep marks quiet graphs with: the setting, capped at half the
    lookback (a request may override the lookback with a shorter one). 0: off."""
    return max(0.0, min(quiet_interval, lookback / 2))


def next_slot(graph: str, now: float, interval: float) -> float:
    """The graph's next slot after ``now``: its slots are ``interval`` apart at a phase its
    name gives, so graphs marked together come due at different sweeps, and a graph listed
    at each of its slots is listed once per interval. Never more than ``interval`` away."""
    phase = zlib.crc32(graph.encode("utf-8")) / 2**32 * interval
    return now + (phase - now) % interval


class QuietListings:
    """The quiet marks of one store; :meth:`for_sweep` reads them once per sweep."""

    def __init__(self, store: StateStore, reporter: Reporter, clock: Callable[[], float]) -> None:
        self._store = store
        self._reporter = reporter
        self._clock = clock

    def for_sweep(self, interval: float) -> SweepMarks | None:
        """One sweep's view: the graphs it may skip, and the marks it leaves. None (every
        graph listed) when ``interval`` is 0 or the marks cannot be read: a store that does
        not answer costs calls, never a failure."""
        if interval <= 0:
            return None
        try:
            quiet = self._store.quiet_until()
        except StoreUnavailable as exc:
            self._reporter.store_problem(str(exc))
            return None
        return SweepMarks(self, quiet, self._clock(), interval)

    def _save(self, marks: dict[str, float]) -> None:
        if not marks:
            return
        try:
            self._store.set_quiet_until(marks)
        except StoreUnavailable as exc:  # unmarked graphs are listed again: only calls lost
            self._reporter.store_problem(str(exc))


class SweepMarks:
    """What one sweep knows of quiet graphs, and the marks it sets as it lists.

    ``started`` is when the sweep started, before any listing: a mark counts from it, so a
    listing read later in the sweep only shortens the time its graph stays quiet."""

    def __init__(
        self, owner: QuietListings, quiet: dict[str, float], started: float, interval: float
    ) -> None:
        self._owner = owner
        self._quiet = quiet
        self._started = started
        self._interval = interval
        self._marks: dict[str, float] = {}

    def skips(self, graph: str) -> bool:
        """Whether this sweep may leave ``graph`` unlisted: its mark has not come yet."""
        return self._quiet.get(graph, 0.0) > self._started

    def listed(self, graph: str, *, found_failures: bool) -> None:
        """``graph`` was listed in full, through the lookback. Without a failure it is quiet
        until its next slot; with one it is listed again by the next sweep."""
        if found_failures:
            return
        self._marks[graph] = next_slot(graph, self._started, self._interval)

    def save(self) -> None:
        """Leave this sweep's marks in the store (one write)."""
        self._owner._save(self._marks)
