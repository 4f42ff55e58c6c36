"""What every benchmark module shares: paths, loopback credentials, environments, statistics.

One place for these, so that ours and the baseline are always started with the same settings
and every number is summarised the same way.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
PYTHON = sys.executable
FUNCTIONS_FRAMEWORK = str(Path(sys.executable).parent / "functions-framework")
OUR_SOURCE = "handler/main.py"
NAIVE_SOURCE = "benchmarks/naive_function.py"
FLOOR_SOURCE = "benchmarks/floor_function.py"

LOOPBACK = "127.0.0.1"
ACCESS_KEY, SECRET_KEY = "BENCHACCESSKEY", "bench-secret-key"
AUTH_TOKEN = "bench-auth-token"  # a loopback-only value
PROJECT_ID = "0123456789abcdef0123456789abcdef"  # the DWR emulator's project

# Both servers get exactly these gunicorn settings (functions-framework reads them from the
# environment); THREADS is functions-framework's own default, written out so it is recorded.
WORKERS = 1
THREADS = (os.cpu_count() or 1) * 4

# Variables a developer's shell may carry that would change what is measured: function and
# framework settings, proxies (every request here must go straight to loopback), and
# PYTHONDONTWRITEBYTECODE (a deployed package has its bytecode compiled; without caches every
# import would measure the compiler).
_DROPPED_PREFIXES = ("OBS_", "DWR_", "RESTORE_", "FUNCTION_", "GUNICORN_", "HUAWEICLOUD_")
_DROPPED = {
    "AccessKeyID", "SecretAccessKey", "K_SINK", "WORKFLOW_API", "REQUESTS_CA_BUNDLE",
    "SSL_CERT_FILE", "CURL_CA_BUNDLE", "LOG_LEVEL", "WORKERS", "THREADS", "PORT",
    "HOST", "DEBUG", "CLOUD_RUN_TIMEOUT_SECONDS", "http_proxy", "https_proxy", "all_proxy",
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "PYTHONDONTWRITEBYTECODE",
}  # fmt: skip


def clean_environ() -> dict[str, str]:
    """This process's environment without anything that configures the function or a proxy."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in _DROPPED and not name.startswith(_DROPPED_PREFIXES)
    }
    env["NO_PROXY"] = env["no_proxy"] = f"{LOOPBACK},localhost"
    return env


def function_env(
    url: str, state_dir: str | Path, ca_bundle: str | None = None, api: str = "obs"
) -> dict[str, str]:
    """The environment our function runs with: dedupe and budget on SQLite, INFO logging.

    ``RESTORE_MAX_RESTORES`` is raised so the budget is checked on every restore but never
    blocks one (every request also names a different execution); the restore rate is off, as
    on the naive function: at its default (60/m) every run past its first minute's restores
    would measure deferrals (the storm section measures the rate). ``ca_bundle`` is the
    emulator's certificate when it serves HTTPS: verified, as against a real endpoint.
    """
    env = clean_environ()
    env.update(
        OBS_ACCESS_KEY_ID=ACCESS_KEY,
        OBS_SECRET_ACCESS_KEY=SECRET_KEY,
        RESTORE_AUTH_TOKEN=AUTH_TOKEN,
        RESTORE_STATE_URL=f"sqlite:///{Path(state_dir).resolve() / 'state.db'}",
        RESTORE_MAX_RESTORES="1000",
        # Every sweep lists every graph, as the benchmarks were built to measure; the quiet
        # listings are measured against it by bench_sweep_cost, which turns them on.
        RESTORE_SWEEP_QUIET_INTERVAL="0",
        RESTORE_RATE_LIMIT="off",
        LOG_LEVEL="INFO",
    )
    if api == "dwr":
        env.update(WORKFLOW_API="dwr", DWR_ENDPOINT=url, DWR_PROJECT_ID=PROJECT_ID)
    else:
        env["OBS_ENDPOINT"] = url
    if ca_bundle:
        env["OBS_CA_BUNDLE"] = ca_bundle
    return env


def sdk_env(url: str, ca_bundle: str | None = None) -> dict[str, str]:
    """The environment of the baseline: the endpoint, the keys, and the CA to verify with."""
    env = clean_environ()
    env.update(OBS_ENDPOINT=url, OBS_ACCESS_KEY_ID=ACCESS_KEY, OBS_SECRET_ACCESS_KEY=SECRET_KEY)
    if ca_bundle:
        env["OBS_CA_BUNDLE"] = ca_bundle
    return env


def server_env(env: dict[str, str]) -> dict[str, str]:
    """Add the gunicorn settings both functions-framework servers share."""
    return {**env, "WORKERS": str(WORKERS), "THREADS": str(THREADS)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100): always one of the measured values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def ratio(ours: float, baseline: float) -> float:
    return ours / baseline if baseline else math.nan
