"""The sweep's lease: one sweep at a time, held in the state store for as long as it runs.

A slow sweep and the next timer, or instances sharing Redis, must never sweep side by side:
each sweep takes the lease first, and one that finds it held ends at once, "sweep in
progress". The lease lasts as long as the sweep: sized to the invocation's deadline when it
has one, else (the command line) renewed in the background every third of its TTL, so it can
outlast ``RESTORE_CLAIM_TTL`` without a second sweep starting beside it. A lease that could
not be renewed (taken over, or the store away past its expiry) is ``lost``: the sweep stops
at its next step.
"""

from __future__ import annotations

import contextlib
import threading
import time

from handler.report import Reporter
from handler.store import StateStore, StoreUnavailable

LEASE_KEY = "sweep:lease"  # the state-store key one sweep at a time holds
# A lease held without a deadline is renewed this often, as a fraction of its TTL: two
# renewals may fail (the store briefly away) before it could expire.
RENEW_FRACTION = 1 / 3


class SweepLease:
    """Takes the sweep's lease in one store; :meth:`take` answers a :class:`HeldLease`."""

    def __init__(self, store: StateStore, reporter: Reporter) -> None:
        self._store = store
        self._reporter = reporter

    def take(self, ttl: float, *, renew: bool) -> HeldLease | None:
        """The lease for ``ttl`` seconds (renewed while held if ``renew``), or None while
        another sweep holds it. Raises :class:`StoreUnavailable`: without the store no lease
        can be promised."""
        claim = self._store.claim(LEASE_KEY, ttl)
        if not claim.acquired:
            return None
        return HeldLease(self._store, self._reporter, claim.token, ttl, renew=renew)


class HeldLease:
    """A lease this sweep holds; :meth:`release` ends it. ``lost`` is set when a renewal is
    refused (someone else holds the lease now) or the store could not be reached before it
    would have expired."""

    def __init__(
        self, store: StateStore, reporter: Reporter, token: str, ttl: float, *, renew: bool
    ) -> None:
        self.token = token
        self.lost = threading.Event()
        self._store = store
        self._reporter = reporter
        self._ttl = ttl
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        if renew:
            self._thread = threading.Thread(target=self._keep, name="sweep-lease", daemon=True)
            self._thread.start()

    def release(self) -> None:
        """Stop renewing and give the lease back (if the store is down, it expires)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self._ttl)
        with contextlib.suppress(StoreUnavailable):
            self._store.release(LEASE_KEY, self.token)

    def _keep(self) -> None:
        held_until = time.monotonic() + self._ttl
        while not self._stopping.wait(self._ttl * RENEW_FRACTION):
            asked = time.monotonic()
            try:
                renewed = self._store.renew(LEASE_KEY, self.token, self._ttl)
            except StoreUnavailable as exc:
                if time.monotonic() >= held_until:
                    self._reporter.store_problem(str(exc))
                    self.lost.set()
                    return
                continue
            if not renewed:
                self.lost.set()
                return
            held_until = asked + self._ttl
