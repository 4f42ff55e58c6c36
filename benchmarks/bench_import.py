"""Import time: ``import handler.main`` against ``from obs import WorkflowClient``, and our
DWR client against the official ``huaweicloudsdkdwr`` one.

This is what a FunctionGraph cold start pays before its first event, beyond the interpreter
itself. Each measurement is a fresh interpreter that times only the import statement;
ours and the SDK's alternate, one warm-up each comes first (so bytecode caches are written
before anything is timed), and the median is reported. ``handler.main`` reads and validates
its settings at import, so it runs with the function's full environment.

One ``python -X importtime`` run per side names the modules that cost the most.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Any

from common import PYTHON, ROOT, function_env, median, sdk_env
from report import Measure, Row

TIMED = "import time; began = time.perf_counter(); {statement}; print(time.perf_counter() - began)"
RUN_TIMEOUT = 60.0
TOP_MODULES = 8


@dataclass(frozen=True)
class Comparison:
    name: str
    ours: str
    sdk: str
    limit: float | None


COMPARISONS = (
    Comparison("event", "import handler.main", "from obs import WorkflowClient", 0.6),
    Comparison(
        "dwr",
        "from handler.client import DwrClient",
        "from huaweicloudsdkdwr.v3 import DwrClient",
        0.5,
    ),
)


@dataclass(frozen=True)
class Settings:
    runs: int  # timed imports per statement


def run(settings: Settings, obs_url: str, state_dir: str) -> tuple[list[Row], dict[str, Any]]:
    """Every statement of every comparison once per run, in an order rotating between runs."""
    envs = {"ours": function_env(obs_url, state_dir), "sdk": sdk_env(obs_url)}
    jobs = [(c.name, side, getattr(c, side)) for c in COMPARISONS for side in ("ours", "sdk")]
    for _, side, statement in jobs:  # warm-up: compile and cache bytecode outside the timing
        _timed_import(statement, envs[side])
    seconds: dict[str, list[float]] = {f"{name} {side}": [] for name, side, _ in jobs}
    for index in range(settings.runs):
        shift = index % len(jobs)
        for name, side, statement in jobs[shift:] + jobs[:shift]:
            seconds[f"{name} {side}"].append(_timed_import(statement, envs[side]))
    rows, medians = [], {}
    for comparison in COMPARISONS:
        ours = median(seconds[f"{comparison.name} ours"]) * 1000
        sdk = median(seconds[f"{comparison.name} sdk"]) * 1000
        medians[comparison.name] = {"ours": ours, "sdk": sdk}
        metric = f"import time: `{comparison.ours}` vs `{comparison.sdk}`"
        rows.append(Row("import", metric, "ms", Measure(ours, sdk, comparison.limit), wire=False))
    raw = {
        "runs": settings.runs,
        "seconds": seconds,
        "median_ms": medians,
        "top_modules_cumulative_us": {
            f"{c.name} {side}": _import_profile(getattr(c, side), envs[side])
            for c in COMPARISONS
            for side in ("ours", "sdk")
        },
    }
    return rows, raw


def _timed_import(statement: str, env: dict[str, str]) -> float:
    """Seconds a fresh interpreter spends on ``statement`` alone."""
    done = subprocess.run(
        [PYTHON, "-c", TIMED.format(statement=statement)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def _import_profile(statement: str, env: dict[str, str]) -> list[tuple[str, int]]:
    """The costliest modules under the statement's root import, by cumulative microseconds.

    ``python -X importtime`` lists each module after the modules it imported, indented by
    depth; the statement's subtree is the run of deeper lines just before its root's line
    (interpreter start-up imports such as ``site`` come earlier and are left out).
    """
    done = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", statement],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=True,
    )
    lines = []  # (depth, name, cumulative microseconds)
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split(":", 1)[1].split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        lines.append((depth, name.strip(), int(cumulative)))
    root = statement.split()[1]  # "import handler.main" / "from obs import ..."
    root = root.split(".")[0] if not any(n == root for _, n, _ in lines) else root
    end = max(i for i, (depth, name, _) in enumerate(lines) if depth == 0 and name == root)
    start = end
    while start > 0 and lines[start - 1][0] > 0:
        start -= 1
    subtree = sorted(lines[start : end + 1], key=lambda line: line[2], reverse=True)
    return [(name, cumulative) for _, name, cumulative in subtree[:TOP_MODULES]]
