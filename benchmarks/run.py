"""``make bench``: every benchmark side by side, in one run, on loopback emulators.

    python benchmarks/run.py            # the full suite (~20 minutes); writes RESULTS.md and
                                        # the README's Performance table
    python benchmarks/run.py --quick    # a ~1 minute smoke run; writes results/quick.json only
    python benchmarks/run.py --only sweep_obs --only http
                                        # chosen sections at full size, while iterating;
                                        # writes results/only.json only

Real endpoints are HTTPS only, so TLS is the headline: every figure that touches the wire is
measured against an emulator serving HTTPS with a throwaway certificate (every client
verifies it) and, as the second column, against one serving plain HTTP - both in the same
run, interleaved. Sections, each ours against the official SDK (``esdk-obs-python``,
``huaweicloudsdkdwr``) or a naive function built on it:

1. import time (:mod:`bench_import`) and cold start (:mod:`bench_cold`);
2. per-restore client cost, OBS and DWR (:mod:`bench_client`);
3. the sweep against the SDK's list loop (:mod:`bench_sweep`);
4. HTTP throughput and latency, and peak memory (:mod:`bench_http`);
5. time to recovery, from a failure to its accepted restore, through an event and through
   the timer sweep (:mod:`bench_recovery`; baselines: the naive SDK function, the timer's
   floor);
6. what a timer sweep costs over quiet graphs (:mod:`bench_sweep_cost`; the baseline for the
   coming optimisation: the same sweep without it);
7. a storm of failures across graphs, healthy and with a broken downstream (:mod:`bench_storm`;
   the baseline: the same storm without the restore rate and the breaker).

Prints a table (metric | ours | SDK / naive | ratio TLS | ratio plain | target | result),
writes every raw number to ``benchmarks/results/latest.json`` and, for a full run, the table
with the machine it ran on to ``benchmarks/RESULTS.md`` and into README.md's Performance
section. Everything listens on and talks to 127.0.0.1 only; every loop is bounded in requests
and in time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import bench_client
import bench_cold
import bench_http
import bench_import
import bench_recovery
import bench_storm
import bench_sweep
import bench_sweep_cost
from common import ACCESS_KEY, BENCH_DIR, ROOT, SECRET_KEY, THREADS, WORKERS, clean_environ
from emulator_process import EmulatorProcess
from report import Row, markdown_table, text_table
from tls import make_certificate

RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
README = ROOT / "README.md"
# The README's Performance table sits between these lines; only that part is rewritten.
README_BEGIN = "<!-- bench:begin (written by make bench) -->"
README_END = "<!-- bench:end -->"
TIME_BUDGET_SECONDS = 1800.0
# The sections in the order they run; `--only` picks some of them.
SECTIONS = (
    "import", "cold_start", "client_obs", "client_dwr", "sweep_obs", "sweep_dwr", "http",
    "recovery", "sweep_cost", "storm",
)  # fmt: skip


@dataclass(frozen=True)
class Profile:
    name: str
    imports: bench_import.Settings
    cold: bench_cold.Settings
    client: bench_client.Settings
    sweep: bench_sweep.Settings
    http: bench_http.Settings
    recovery: bench_recovery.Settings
    sweep_cost: bench_sweep_cost.Settings
    storm: bench_storm.Settings


# 5,000 failures across 50 graphs, as the issue asks. A sweep answers a held graph's failures
# already deferred from one store read (and, once the rate is full, those the rate deferred
# before) instead of admitting each again: a broken-storm sweep of 5,000 held failures takes
# ≈0.5-0.9 s (it took ≈4 s for 1,000 before). Measured at a load average of 3-5 on 2 shared
# cores, the section takes ≈380 s: ours healthy ≈97 s (the first sweep admits 4,900 new
# failures, ≈17 s; then 50 sweeps of 100 restores and the rest answered), ours broken ≈132 s
# (3-4 sweeps re-decide every failure at ≈12-17 s each - the rate's first deferrals, the
# breakers opening, each canary round - the others ≈0.5-0.9 s), baseline healthy ≈29 s and
# baseline broken ≈110 s (15,000 restores at the cap, 500 a sweep for 30 sweeps, each a query
# and a restore over loopback HTTP to the in-process emulator).
STORM_FULL = bench_storm.Settings(graphs=50, failures=5000, rate="100/s", broken_seconds=60)
FULL = Profile(
    "full",
    bench_import.Settings(runs=15),
    bench_cold.Settings(functiongraph_runs=9, http_runs=3),
    bench_client.Settings(rounds=20, calls_per_round=100, warmup_calls=100),
    bench_sweep.Settings(graphs=20, executions_per_graph=500, rounds=7),
    bench_http.Settings(
        concurrencies=(1, 8),
        repetitions=3,
        duration=6.0,
        request_cap=12_000,
        warmup_requests=300,
    ),
    # T = 2 s stands for the template's 10 minutes (1:300); 12 timed ticks = 24 s, both APIs'
    # timer loops at once. 71 failures: a prime, so the spread phases differ in every interval.
    bench_recovery.Settings(
        event_samples=150, timer_interval=2.0, timer_ticks=12, timer_failures=71, timer_graphs=10
    ),
    # A sweep every 2 s stands for the 1-minute timer and a quiet interval of 20 s for the
    # default 10 minutes (1:30): 10 rounds of 2 sweeps are two intervals of each variant.
    bench_sweep_cost.Settings(
        graph_counts=(10, 100, 1000),
        rounds=10,
        optimised_env=(("RESTORE_SWEEP_QUIET_INTERVAL", "20s"),),
        pace=2.0,
    ),
    STORM_FULL,
)
QUICK = Profile(
    "quick",
    bench_import.Settings(runs=3),
    bench_cold.Settings(functiongraph_runs=2, http_runs=1),
    bench_client.Settings(rounds=4, calls_per_round=50, warmup_calls=20),
    bench_sweep.Settings(graphs=20, executions_per_graph=500, rounds=1),
    bench_http.Settings(
        concurrencies=(1, 8),
        repetitions=1,
        duration=1.5,
        request_cap=3_000,
        warmup_requests=50,
    ),
    bench_recovery.Settings(
        event_samples=20, timer_interval=2.0, timer_ticks=4, timer_failures=13, timer_graphs=3
    ),
    bench_sweep_cost.Settings(graph_counts=(10, 100), rounds=1),
    bench_storm.Settings(graphs=10, failures=200, rate="20/s", broken_seconds=40),
)

# Why a target is missed: the causes found by profiling (cProfile, `python -X importtime`, and
# in-process timings of the store) when these benchmarks were last changed. Shown under "Missed
# targets" only for sections with a failed row; update them as the code changes (a cause that
# is fixed must go).
NOTES = {
    "import": (
        "`import requests` alone takes 176 ms against the DWR SDK's whole import of 271 ms "
        "on the machine of 2026-12-02 (15 fresh interpreters each, alternating, medians; "
        "55 against 97 ms on an earlier, faster one): 0.57-0.65x before any module of ours, "
        "so 0.50x cannot be met while `requests` is the HTTP library. Ours adds ≈14 ms to "
        "it: `dataclasses` with `inspect` (`Credentials`, which carries a secret, "
        "`RetrySchedule` and `WorkflowResult`, filled in place, are still dataclasses) and "
        "our client modules; the result types are named tuples now. The package imports "
        "both clients plainly (no lazy names): the OBS client and its signer add ≈2 ms here."
    ),
    "cold start": (
        "The floor row is the bound: a fresh process that imports `requests` and sends one "
        "signed restore, nothing else, took 0.65-0.75x of the SDK's cold start in the runs "
        "of 2026-12-02, so 0.80x leaves ≈16-45 ms for everything ours does beyond that "
        "restore. Ours was ≈120 ms above the floor; 34 of its records are now named tuples "
        "instead of frozen dataclasses (a dataclass compiles six methods per class: 59-64 "
        "ms for 43 classes, now 14.5 ms for the 9 left plus 14 ms of named tuples), 1.13x "
        "→ 1.04x in the same runs. The 9 left carry secrets (a tuple would write them into "
        "any JSON) or are filled in place; with `dataclasses` (≈13.5 ms: it imports "
        "`inspect`) they are ≈28 ms. Even with every class and module body free, loading "
        "the bytecode of our 62 modules (≈15 ms) and the first event's work beyond a bare "
        "restore (≈11 ms: the state store's first open and schema, three transactions, the "
        'decision, the log line) put ours at ≈0.83x (benchmarks/PROFILE.md, "The '
        'floors"). On FunctionGraph the packages bring their bytecode (before, every new '
        "instance compiled ≈175 modules: 2.1x the import time); this row runs in the "
        "development tree, which has it anyway."
    ),
    "client-obs": (
        "Over TLS the SDK opens a new connection (and TLS handshake) per call: 1.66 ms per "
        "restore against our 0.44 ms on one kept-alive connection. What is left of ours is "
        "CPU in `requests`/`urllib3` and the emulator's answer time, which both sides wait "
        "for. cProfile of 2,000 TLS restores (1.49 s): blocking TLS read 0.40 s (waiting for "
        "the emulator), `urllib3` `urlopen` 1.09 s in all, requests' adapter around it 0.15 "
        "s (10%), `build_response` 0.12 s (8%), our result parsing 0.14 s (10%), signing "
        "and headers 0.05 s (3%). The per-call URL parsing, proxy lookup and three `stat` "
        "calls of the CA path are gone (`EndpointAdapter`: 12% fewer function calls per "
        "restore). Reaching 0.20x (≤0.33 ms) needs about a quarter less time per call; the "
        "rest of the stack is requests' and urllib3's response objects, which the project "
        "keeps."
    ),
    "client-dwr": (
        "The DWR SDK keeps its connection alive too (one connection per run, like ours), so "
        "TLS gives it no handicap: the difference is CPU per call (ours 0.26 ms, the SDK's "
        "0.59 ms: ratio 0.44x). Wall time adds the emulator's answer time, which both wait "
        "for (≈0.23-0.30 ms per call: wall minus client CPU): even a free client would be "
        "0.26x, and 0.50x needs our client CPU under ≈0.21 ms - the same `requests`/`urllib3` "
        "costs as the OBS row (adapter 10%, `build_response` 8%, parsing 10%)."
    ),
    "sweep-obs": (
        "A sweep reads 20 pages of 500 (limit 1,000 per page) for both sides, and the "
        "time is mostly the emulator building and sending them: cProfile of our sweep on "
        "plain HTTP, ≈82 ms wall, spends ≈62 ms in `recv_into` waiting for the emulator, "
        "which the SDK loop waits for alike. Our CPU per sweep is now ≈22 ms (was ≈33 ms: "
        "listed executions are named tuples built with `_make`, ≈8.5 ms per 10,000 "
        "against a frozen dataclass's 19, and states already seen are not normalised "
        "again) against the SDK "
        "loop's ≈19 ms on JSON dicts. Over TLS ours wins on the SDK's 20 handshakes. Even "
        "a sweep with no CPU at all would be ≈0.75x over plain HTTP: 0.50x is not "
        "reachable while the emulator's share is the same for both sides. Memory: a sweep "
        "now lists every graph in full before it restores (so restores cannot shift a "
        "listing's offsets) and then spends its cap round-robin across graphs, so it holds "
        "each failure found until its turn - about 0.4 KB a failure (the rows: 1,103 - 766 KiB "
        "for 900 more failures, run of 2026-12-02 06:47); flat "
        "in the executions listed, linear in the failures found: 1 in 10 here."
    ),
    "sweep-dwr": (
        "60 pages (20 graphs x 200, 200, 100) for both sides; the DWR SDK keeps its "
        "connection alive too. cProfile on plain HTTP: of ≈140 ms wall ours waits ≈93 ms "
        "in `recv_into` for the emulator to filter and serialize each page, the same for "
        "the SDK; our CPU is ≈47 ms (was ≈54 ms). 0.50x of the SDK's ≈200 ms is ≈100 ms, "
        "about the emulator's share alone, so the ratio is bounded by that shared floor. "
        "Memory: every execution listed here is a failure (DWR filters on the server), and "
        "the fair sweep holds each failure found until its turn (listed in full first, so "
        "restores cannot shift DWR's offsets): about 0.4 KB a failure, 4.4 MB for 10,000 "
        "- linear in failures found by design, not in executions listed."
    ),
    "http": (
        "The floor rows are the bound: the naive function with `requests` (one kept-alive "
        "session) in place of the SDK and nothing else reached 0.76-0.78x of the naive "
        "function at c=8 on plain HTTP, at 1.13-1.37x its CPU per restore, in the runs of "
        "2026-12-02. So ≥0.90x at c=8 is out of reach for any function on `requests` and "
        "functions-framework, both the design card's, before it authenticates, dedupes or "
        "logs anything. One gunicorn worker is one GIL and the server is CPU-bound, so "
        "requests/s follow CPU per request; c=8 p99 (plain) is queueing behind it. Ours "
        "per request (`profile_http.py`, PROFILE.md): gunicorn ≈18-20%, SQLite ≈14-16% (3 "
        "write transactions: claim and budget reservation before the call, then one step "
        "for settlement, outcome and ledger; 17 statements), the API call below `requests` "
        "≈19%, the log line 2-3%, the rest (Flask/werkzeug/functions-framework, auth, "
        "intake, pipeline, our client) ≈44%, no function of ours over 1% own time. At c=1 "
        "the floor is 0.92-1.27x and ours 0.60-0.67x: the drop from 0.80x in the run of "
        "2026-11-27 is mostly the machine - that run's code, served beside today's on this "
        "machine, is 0.69-0.72x; today's takes 8-15% more CPU per restore (outage mode, "
        "pauses, the ledger), spread over their store steps, none to drop without a "
        "guarantee. Over TLS the naive function pays a handshake per request and ours wins "
        "at c=1; at c=8 both servers are CPU-bound on one core shared with the emulator and "
        "the generator, and the ratio moves from run to run."
    ),
    "storm": (
        "Re-restores while broken are bounded by the breaker's watch: once a second "
        "execution of a graph has re-failed within the window, every re-failed execution "
        "waits a cooldown before it is restored again, so the breaker judges the graph on "
        "new executions. Before the watch starts, the graph's first re-failing execution "
        "may spend its budget (`RESTORE_MAX_RESTORES` - 1 re-restores) under its rule's "
        "spacing: a miss here means more than that, so look at the watch first."
    ),
    "memory": (
        "Peak RSS of the server tree: ours 83.4 MiB against 89.0 MiB (0.94x over TLS, 0.96x "
        "plain, run of 2026-12-02 06:47); the worker alone is a little larger than the naive "
        "one's (it imports the pipeline, SQLite and the intake). The difference is the naive "
        "function's SDK import; 0.90x would need ≈3 MiB less in our worker, not attempted "
        "in this round."
    ),
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    profile = QUICK if args.quick else FULL
    began = time.monotonic()
    _loopback_only()
    print(f"obs-workflow-restore benchmarks ({profile.name}); ~{_estimate(profile)}", flush=True)
    load = _load_average()
    with (
        tempfile.TemporaryDirectory(prefix="obs-workflow-restore-bench-") as work,
        contextlib.ExitStack() as stack,
    ):
        work_dir = Path(work)
        tls = make_certificate(work_dir)
        emulators = {
            (api, wire): stack.enter_context(
                EmulatorProcess(ACCESS_KEY, SECRET_KEY, api=api, tls=tls if wire == "tls" else None)
            )
            for api in ("obs", "dwr")
            for wire in ("tls", "plain")
        }
        rows, raw = _run_sections(profile, emulators, work_dir, tls, args.only)
    raw["load_average"] = {"before": load, "after": _load_average()}
    elapsed = time.monotonic() - began
    document = _document(profile, rows, raw, elapsed)
    print()
    print(text_table(rows))
    _print_notes(rows)
    if "http" in raw:
        print(f"\ncores busy during the HTTP runs: {_cores(raw['http']['cores_used'])}")
    print(f"load average (1 min) before / after: {load:.2f} / {raw['load_average']['after']:.2f}")
    print(f"total runtime {elapsed:.0f}s")
    if elapsed > TIME_BUDGET_SECONDS:
        print(f"WARNING: over the {TIME_BUDGET_SECONDS:.0f}s budget for `make bench`")
    _write(document, rows, profile, elapsed, partial=bool(args.only))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~30 s)")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        metavar="SECTION",
        help=f"run only this section (repeatable; one of {', '.join(SECTIONS)}); "
        "RESULTS.md and README.md are left alone",
    )
    return parser


def _loopback_only() -> None:
    """Drop proxy and function settings from this process too: clients here hit 127.0.0.1."""
    environ = clean_environ()
    os.environ.clear()
    os.environ.update(environ)


def _run_sections(
    profile: Profile,
    emulators: dict[tuple[str, str], EmulatorProcess],
    work_dir: Path,
    tls: tuple[str, str],
    only: list[str] | None = None,
) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    raw: dict[str, Any] = {}

    def pair(api: str) -> dict[str, EmulatorProcess]:
        return {wire: emulators[(api, wire)] for wire in ("tls", "plain")}

    obs_plain = emulators[("obs", "plain")]
    sections = (
        ("import", lambda: bench_import.run(profile.imports, obs_plain.url, str(work_dir))),
        ("cold_start", lambda: bench_cold.run(profile.cold, pair("obs"), work_dir)),
        ("client_obs", lambda: bench_client.run(profile.client, pair("obs"), "obs")),
        ("client_dwr", lambda: bench_client.run(profile.client, pair("dwr"), "dwr")),
        ("sweep_obs", lambda: bench_sweep.run(profile.sweep, pair("obs"), "obs")),
        ("sweep_dwr", lambda: bench_sweep.run(profile.sweep, pair("dwr"), "dwr")),
        ("http", lambda: bench_http.run(profile.http, pair("obs"), work_dir)),
        ("recovery", lambda: bench_recovery.run(profile.recovery, emulators, work_dir)),
        ("sweep_cost", lambda: bench_sweep_cost.run(profile.sweep_cost, tls, work_dir)),
        ("storm", lambda: bench_storm.run(profile.storm, work_dir)),
    )
    assert tuple(name for name, _ in sections) == SECTIONS
    for name, section in sections:
        if only and name not in only:
            continue
        started = time.monotonic()
        print(f"  {name} ...", end=" ", flush=True)
        section_rows, raw[name] = section()
        raw[name]["seconds"] = time.monotonic() - started
        rows.extend(section_rows)
        print(f"{raw[name]['seconds']:.0f}s", flush=True)
    return rows, raw


def _estimate(profile: Profile) -> str:
    http, recovery = profile.http, profile.recovery
    load = len(http.concurrencies) * http.repetitions * 4 * http.duration
    timer = (recovery.timer_ticks + 1) * recovery.timer_interval
    return f"{load:.0f}s of HTTP load, {timer:.0f}s of timer loop, plus start-ups"


def _load_average() -> float:
    """The 1-minute load average: other work on the machine, recorded with the numbers."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _machine() -> dict[str, Any]:
    """What the numbers depend on: CPU, cores, Python, OS, and when they were taken."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _document(
    profile: Profile, rows: list[Row], raw: dict[str, Any], elapsed: float
) -> dict[str, Any]:
    return {
        "profile": profile.name,
        "machine": _machine(),
        "runtime_seconds": elapsed,
        "gunicorn": {"WORKERS": WORKERS, "THREADS": THREADS},
        "rows": [row.to_json() for row in rows],
        "targets_met": all(row.passed is not False for row in rows),
        "raw": raw,
    }


def _print_notes(rows: list[Row]) -> None:
    lines = _notes(rows)
    if lines:
        print("\nMissed targets:")
        print("\n".join(lines))


def _notes(rows: list[Row]) -> list[str]:
    """Each missed target with how far off it is, then why, once per section (from NOTES)."""
    missed = [row for row in rows if row.misses()]
    lines = [line for row in missed for line in row.misses()]
    for section in dict.fromkeys(row.section for row in missed):
        if section in NOTES:
            lines += ["", f"Why ({section}): {NOTES[section]}"]
    return lines


def _write(
    document: dict[str, Any], rows: list[Row], profile: Profile, elapsed: float, partial: bool
) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    name = "only.json" if partial else "latest.json" if profile is FULL else "quick.json"
    target = RESULTS_DIR / name
    target.write_text(json.dumps(document, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"wrote {target.relative_to(BENCH_DIR.parent)}")
    if profile is FULL and not partial:
        RESULTS_MD.write_text(_markdown(document, rows, profile, elapsed), encoding="utf-8")
        print(f"wrote {RESULTS_MD.relative_to(BENCH_DIR.parent)}")
        if _write_readme(_machine_line(document, elapsed), rows):
            print(f"wrote the Performance table of {README.relative_to(BENCH_DIR.parent)}")


def _write_readme(machine: str, rows: list[Row]) -> bool:
    """Replace the README's table between its markers; leave the file alone without them."""
    text = README.read_text(encoding="utf-8")
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        print(f"README.md has no {README_BEGIN!r} ... {README_END!r} lines: not updated")
        return False
    block = "\n".join([README_BEGIN, machine, "", markdown_table(rows), ""])
    README.write_text(text[:begin] + block + text[end:], encoding="utf-8")
    return True


def _machine_line(document: dict[str, Any], elapsed: float) -> str:
    machine = document["machine"]
    load = document["raw"]["load_average"]
    return (
        f"Machine: {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['implementation']} {machine['python']}, {machine['os']}; "
        f"run {machine['date']}, total {elapsed:.0f} s; load average (1 min) "
        f"{load['before']:.2f} before, {load['after']:.2f} after."
    )


def _markdown(document: dict[str, Any], rows: list[Row], profile: Profile, elapsed: float) -> str:
    notes = _notes(rows) or ["- every target holds in this run."]
    return "\n".join([
        "# Benchmark results",
        "",
        "Written by `make bench` (`benchmarks/run.py`); every number in one run, against "
        "loopback emulators. Ratios are ours ÷ baseline; only ratios have targets, because "
        "absolute times depend on the machine. **TLS is the headline** (real OBS and DWR "
        "endpoints are HTTPS only): `ours` and `SDK / naive` are the TLS numbers, "
        "`ratio (plain)` the same figure against a plain-HTTP emulator in the same run. Raw "
        "numbers: `benchmarks/results/latest.json` (not committed).",
        "",
        _machine_line(document, elapsed),
        "",
        markdown_table(rows),
        "",
        "## Missed targets",
        "",
        *notes,
        "",
        "## Where import time goes",
        "",
        *_import_profile(document["raw"]["import"]["top_modules_cumulative_us"]),
        "",
        "## Time to recovery",
        "",
        *bench_recovery.markdown(document["raw"]["recovery"]),
        "",
        "## What a sweep costs",
        "",
        *bench_sweep_cost.markdown(document["raw"]["sweep_cost"]),
        "",
        "## A storm of failures",
        "",
        *bench_storm.markdown(document["raw"]["storm"]),
        "",
        "## How it is measured",
        "",
        *_method(profile, document["raw"]),
        "",
    ])  # fmt: skip


def _import_profile(top: dict[str, list[tuple[str, int]]]) -> list[str]:
    """The costliest modules per statement, from one ``python -X importtime`` run each."""
    return [
        f"- {side}: " + ", ".join(f"`{name}` {us / 1000:.0f} ms" for name, us in modules)
        for side, modules in top.items()
    ] + ["", "(cumulative, one run each; the first entry is the whole import)"]


def _method(profile: Profile, raw: dict[str, Any]) -> list[str]:
    """How each number was taken, with this profile's counts, for RESULTS.md."""
    imports, cold, client, http = profile.imports, profile.cold, profile.client, profile.http
    sweep, recovery, cost = profile.sweep, profile.recovery, profile.sweep_cost
    concurrencies = ", ".join(str(c) for c in http.concurrencies)
    return [
        "- Baselines: the official SDKs `esdk-obs-python` (`from obs import WorkflowClient`) "
        "and `huaweicloudsdkdwr` (`DwrClient`), and for HTTP a naive function "
        "(`benchmarks/naive_function.py`) that builds the OBS SDK client per request and "
        "restores: no auth, dedupe, budget or log line.",
        "- TLS: each emulator (OBS and DWR) runs twice, in processes of their own: once "
        "serving HTTPS with a throwaway self-signed certificate for 127.0.0.1 made by "
        "`openssl` for this run, once plain HTTP. Every client verifies the certificate: ours "
        "with `verify=` / `OBS_CA_BUNDLE`, the OBS SDK with `ssl_verify=`, the DWR SDK with "
        "`HttpConfig.ssl_ca_cert` (and `ignore_ssl_verification=False`).",
        f"- Import: a fresh interpreter per measurement timing only the import statement, "
        f"{imports.runs} runs per statement, the order rotating, median; bytecode cached, as in "
        "a deployed package. `handler.main` is imported with the function's full environment "
        "(it validates its settings at import).",
        "- Cold start: from just before spawning a fresh process to reading the first restore "
        "result, so interpreter start-up (the same for both) is included. Event entry: "
        "`handler(event, None)` with SQLite state in a new directory, against SDK client + "
        f"restore ({cold.functiongraph_runs} runs per side and transport). HTTP entry: spawn "
        "`functions-framework --source … --target restore` and POST until answered "
        f"({cold.http_runs} runs per side and transport). Each run restores a fresh FAILED "
        "execution; the order rotates; medians.",
        f"- Client: all clients in one process, the emulators in others; {client.rounds} "
        f"rounds x {client.calls_per_round} restores per client and transport, the order of "
        "the four (transport, side) batches rotating, fresh failed executions, every answer "
        "checked to be a 200 by the client and by the emulator's count; median of per-round "
        "ratios. Our clients are built once (keep-alive); the OBS SDK's is its process-wide "
        "singleton (a new connection per call), built again untimed before each batch so it "
        "points at the right emulator; the DWR SDK's client is built once.",
        f"- Sweep: {sweep.graphs} graphs x {sweep.executions_per_graph} executions per API; "
        "ours is `Restorer.sweep` with the graphs named, `max_restores=0` (it finds every "
        "failure and restores none, so every round sees the same executions), memory:// "
        "state. OBS: 1 in 10 executions failed, the baseline pages "
        "`listWorkflowExecution(graph, nextMarker, limit=1000)` and counts state FAILED (the "
        "API has no state filter). DWR: every execution failed, the baseline pages "
        "`list_workflow_instance(status=fail, window, limit=200, offset)`. "
        f"{sweep.rounds} rounds, order alternating, median of per-round ratios. Memory: "
        "`tracemalloc`'s peak during one untimed sweep, above its start.",
        f"- HTTP: four servers under functions-framework with WORKERS={WORKERS}, "
        f"THREADS={THREADS} (ours and naive, against the TLS and the plain emulator); ours "
        "with bearer auth, SQLite dedupe + budget and INFO JSON logging (stdout to a file). "
        "Closed-loop load generator: Python threads with one keep-alive `http.client` "
        "connection each, on the same machine, so it takes CPU from the servers, identically "
        f"for both. Concurrency {concurrencies}: {http.repetitions} runs x "
        f"{http.duration:g} s per server (at most {http.request_cap:,} requests each), the "
        "order rotating; every request a distinct event on a distinct FAILED execution; only "
        "a 200 that reports a restore counts, and the emulator's count of accepted restores "
        "must match. Throughput = successes ÷ time; latency percentiles pooled over the runs.",
        "- Memory: `VmHWM` (peak resident set) from `/proc/<pid>/status` after all the load, "
        "summed over the gunicorn arbiter and its worker (pages shared after fork count "
        "twice, for both servers alike).",
        f"- Time to recovery: event - {recovery.event_samples} failures per side and "
        "transport, one at a time, the four (transport, side) pairs rotating; the emulator "
        "flips a running execution to failed and the event is POSTed as soon as it says so; "
        "ours and the naive function under functions-framework with the HTTP section's "
        f"settings. Timer - {recovery.timer_failures} failures per API over "
        f"{recovery.timer_graphs} graphs ({bench_recovery.HISTORY_PER_GRAPH} succeeded "
        f"executions each), T = {recovery.timer_interval:g} s for "
        f"{bench_recovery.STANDS_FOR / 60:g} min, {recovery.timer_ticks} timed ticks after a "
        "cold one, OBS and DWR loops at the same time against their TLS emulators, SQLite "
        "state; failure phases spread evenly over the interval.",
        f"- Sweep cost: {', '.join(f'{n:,}' for n in cost.graph_counts)} graphs per API, "
        f"each API against an HTTPS emulator of its own; {cost.rounds} sweeps per point and "
        "condition after a cold one, quiet and 1%-failed alternating; every graph the list "
        "API returns (the template's empty `RESTORE_SWEEP_GRAPHS`), SQLite state, INFO "
        "logging; every sweep checked: no errors, every graph scanned, exactly the injected "
        "failures found and restored, every call answered 200.",
        "- Load: the machine is shared (other work runs on it): the 1-minute load average is "
        "recorded above, and every figure is a ratio of interleaved measurements. Average "
        f"cores busy during the HTTP runs: {_cores(raw['http']['cores_used'])}.",
    ]


def _cores(cores_used: dict[str, dict[str, float]]) -> str:
    return "; ".join(
        f"{side} runs: " + ", ".join(f"{name} {cores:.2f}" for name, cores in used.items())
        for side, used in cores_used.items()
    )


if __name__ == "__main__":
    sys.exit(main())
