"""A closed-loop HTTP load generator for loopback, bounded in requests and in time.

``concurrency`` threads each keep one keep-alive connection (``http.client``: the least
client-side work Python offers, so the generator takes as little CPU from the servers as it
can) and send the next body as soon as the previous answer is read. A run stops at whichever
comes first: ``duration`` seconds, or the last of the pre-built bodies (the request cap; every
body is a different failure event, so none is a duplicate). A request in flight at the
deadline is finished and counted.

The generator runs on the same machine as the servers and takes CPU from them; it is the same
generator with the same settings for both sides.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from common import LOOPBACK, median, percentile

REQUEST_TIMEOUT = 30.0
JOIN_GRACE = REQUEST_TIMEOUT + 5.0
MAX_ERROR_SAMPLES = 5

# (HTTP status, body) -> whether the answer is the success we asked for
Check = Callable[[int, bytes], bool]


@dataclass
class LoadResult:
    """What one run did: counts, wall time and the latency of every answered request."""

    concurrency: int
    duration_limit: float
    request_cap: int
    sent: int = 0
    ok: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    @property
    def hit_cap(self) -> bool:
        return self.sent >= self.request_cap

    def summary(self) -> dict[str, float | int | bool]:
        return {
            "concurrency": self.concurrency,
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed, 4),
            "rps": self.ok / self.elapsed if self.elapsed else 0.0,
            "p50_ms": median(self.latencies_ms),
            "p99_ms": percentile(self.latencies_ms, 99),
            "hit_request_cap": self.hit_cap,
        }


def run_load(
    port: int,
    bodies: Sequence[bytes],
    headers: dict[str, str],
    check: Check,
    concurrency: int,
    duration: float,
) -> LoadResult:
    """POST each body once to ``http://127.0.0.1:port/`` with ``concurrency`` workers."""
    result = LoadResult(concurrency, duration, len(bodies))
    tickets = itertools.count()  # next() on a count is atomic in CPython: no lock needed
    lock = threading.Lock()
    start_line = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def worker() -> None:
        latencies, errors, samples, sent, ok = [], 0, [], 0, 0
        connection = http.client.HTTPConnection(LOOPBACK, port, timeout=REQUEST_TIMEOUT)
        start_line.wait()
        while time.monotonic() < deadline[0]:
            index = next(tickets)
            if index >= len(bodies):
                break
            sent += 1
            began = time.perf_counter()
            try:
                connection.request("POST", "/", body=bodies[index], headers=headers)
                answer = connection.getresponse()
                status, data = answer.status, answer.read()
            except (OSError, http.client.HTTPException) as exc:
                errors += 1
                samples.append(f"{type(exc).__name__}: {exc}"[:200])
                connection.close()
                connection = http.client.HTTPConnection(LOOPBACK, port, timeout=REQUEST_TIMEOUT)
                continue
            latencies.append((time.perf_counter() - began) * 1000.0)
            if check(status, data):
                ok += 1
            else:
                errors += 1
                samples.append(f"HTTP {status}: {data[:160]!r}")
        connection.close()
        with lock:
            result.sent += sent
            result.ok += ok
            result.errors += errors
            result.latencies_ms.extend(latencies)
            room = MAX_ERROR_SAMPLES - len(result.error_samples)
            result.error_samples.extend(samples[: max(room, 0)])

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    began = time.monotonic()
    deadline[0] = began + duration
    start_line.wait()
    for thread in threads:
        thread.join(timeout=duration + JOIN_GRACE)
    result.elapsed = time.monotonic() - began
    return result
