"""Where the HTTP function's per-request CPU goes at c=8 on plain HTTP.

    python benchmarks/profile_http.py                  # ~1 minute: ours and the naive function
    python benchmarks/profile_http.py --duration 4 --concurrency 8

The function is served exactly as ``make bench`` serves it - ``functions-framework --source
handler/main.py --target restore``, one gunicorn worker with THREADS threads, bearer auth,
SQLite dedupe and budget, an INFO log line per restore to a file - against the OBS emulator
over plain HTTP (a process of its own), loaded by the bench's closed-loop generator at
``--concurrency``. Nothing of the function is changed: the profiler comes in through a
``sitecustomize`` module on the server's ``PYTHONPATH`` that starts in the gunicorn worker
right after the fork (``os.register_at_fork``). Three runs per server:

* **plain** - no profiler: requests/s and server CPU per request (``/proc``), the figure the
  shares below are converted with;
* **phases** - the worker's thread CPU time (``time.thread_time_ns``: a thread waiting for
  the GIL, a socket or a lock uses none) inside a few library doors, wrapped after the fork:
  ``Flask.__call__`` (the whole app; the server's CPU minus it is gunicorn and its thread
  pool), every SQLite statement (a ``sqlite3.connect`` factory, by statement kind),
  ``requests``' ``HTTPAdapter.send`` (the workflow API call below requests) and
  ``logging.Logger.handle`` (the log lines). Exact counts per request, and CPU at the cost
  of two clock reads per door;
* **cprofiled** - :mod:`cProfile` per worker thread around ``Flask.__call__`` (CPython 3.11:
  one profiler per thread): every function the app calls per request, deterministic, but
  inflated by the profiler (read the shares, not the absolute times).

Prints Markdown tables (the findings are written up in ``benchmarks/PROFILE.md``); writes
nothing else. Loopback only; every run is bounded in requests and time.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from bench_http import GRAPHS, HEADERS, _naive_restored, _restored
from common import (
    ACCESS_KEY,
    NAIVE_SOURCE,
    OUR_SOURCE,
    SECRET_KEY,
    THREADS,
    function_env,
    sdk_env,
    server_env,
)
from emulator_process import EmulatorProcess
from loadgen import run_load
from servers import FunctionServer

MODES = ("plain", "phases", "cprofiled")
WARMUP = 300  # requests before anything is measured: connections, caches, lazy imports

# Runs in every interpreter started with this PYTHONPATH (only the server's); acts only in a
# process forked from it - the gunicorn worker - and only as BENCH_PROFILE_MODE says.
SITECUSTOMIZE = textwrap.dedent(
    """
    import os

    def _in_worker():
        import json, sys, threading, time

        mode, out = os.environ.get("BENCH_PROFILE_MODE"), os.environ.get("BENCH_PROFILE_DIR")
        if mode == "phases":
            import logging
            import sqlite3

            import flask
            import requests.adapters

            clock, lock = time.thread_time_ns, threading.Lock()
            totals = {}  # part -> [calls, thread CPU ns]
            path = os.path.join(out, "phases-%d.json" % os.getpid())
            written = [time.monotonic()]

            def add(part, spent):
                with lock:
                    entry = totals.setdefault(part, [0, 0])
                    entry[0] += 1
                    entry[1] += spent

            def timed(part, function):
                def wrapper(*args, **kwargs):
                    began = clock()
                    try:
                        return function(*args, **kwargs)
                    finally:
                        add(part, clock() - began)

                return wrapper

            import re

            shape = re.compile(r"^\\s*(\\w+)(?:.*?\\b(?:FROM|INTO|UPDATE)\\s+(\\w+))?", re.I | re.S)
            kinds = {}

            def kind(sql):
                # "DELETE claims", "BEGIN", "INSERT budget": the statement and its table.
                found = kinds.get(sql)
                if found is None:
                    match = shape.match(sql)
                    words = [match[1].upper(), match[2] or ""] if match else ["?", ""]
                    found = kinds[sql] = " ".join(w for w in words if w)
                return found

            class TimedConnection(sqlite3.Connection):
                # Every statement the store runs, by kind and table, in this thread's CPU
                # time (sqlite3 releases the GIL inside; the clock counts what SQLite does).
                def execute(self, sql, *args):
                    began = clock()
                    try:
                        return super().execute(sql, *args)
                    finally:
                        add("sqlite " + kind(sql), clock() - began)

            connect = sqlite3.connect

            def timed_connect(*args, **kwargs):
                kwargs.setdefault("factory", TimedConnection)
                return connect(*args, **kwargs)

            sqlite3.connect = timed_connect
            adapter = requests.adapters.HTTPAdapter
            adapter.send = timed("requests HTTPAdapter.send", adapter.send)
            logging.Logger.handle = timed("logging Logger.handle", logging.Logger.handle)
            app_call = timed("Flask.__call__", flask.Flask.__call__)

            def call(self, environ, start_response):
                try:
                    return app_call(self, environ, start_response)
                finally:
                    if time.monotonic() - written[0] > 0.5:
                        written[0] = time.monotonic()
                        with lock:
                            document = json.dumps(totals)
                        with open(path + ".tmp", "w") as handle:
                            handle.write(document)
                        os.replace(path + ".tmp", path)

            flask.Flask.__call__ = call
        elif mode == "cprofiled":
            import cProfile
            import flask

            # Flask.__call__ is what gunicorn calls per request (functions-framework wraps
            # the instance's wsgi_app, so the class's __call__ is the one door).
            local, original = threading.local(), flask.Flask.__call__

            skip, seen = int(os.environ["BENCH_PROFILE_SKIP"]), [0]

            def profiled_call(self, environ, start_response):
                seen[0] += 1  # racy by a request or two: it only decides when to start
                if seen[0] <= skip:  # the warm-up (first-request imports) is not profiled
                    return original(self, environ, start_response)
                profile = getattr(local, "profile", None)
                if profile is None:
                    # Per-thread CPU time, not wall: at c=8 a thread's wall time is mostly
                    # waiting for the GIL the other seven hold.
                    profile = local.profile = cProfile.Profile(time.thread_time_ns, 1e-9)
                    local.count = 0
                profile.enable()
                try:
                    return original(self, environ, start_response)
                finally:
                    profile.disable()
                    local.count += 1
                    if local.count % 25 == 0:
                        name = "cprofile-%d-%d.pstats" % (os.getpid(), threading.get_ident())
                        profile.dump_stats(os.path.join(out, name))

            flask.Flask.__call__ = profiled_call

    if os.environ.get("BENCH_PROFILE_MODE"):
        os.register_at_fork(after_in_child=_in_worker)
    """
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per run")
    parser.add_argument("--requests", type=int, default=8000, help="requests per run at most")
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="obs-workflow-restore-profile-") as work,
        EmulatorProcess(ACCESS_KEY, SECRET_KEY, api="obs") as emulator,
    ):
        work_dir = Path(work)
        site = work_dir / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
        results = {}
        for mode in MODES:  # ours and the naive function in turn, per profiler
            for side in ("ours", "naive"):
                out = work_dir / f"{side}-{mode}"
                out.mkdir()
                results[(side, mode)] = _run(args, emulator, side, mode, site, out, work_dir)
        print(f"# HTTP function, c={args.concurrency}, plain HTTP, OBS emulator\n")
        _print_runs(results)
        for side in ("ours", "naive"):
            _print_phases(side, results[(side, "phases")], results[(side, "plain")])
        _print_cprofile(results[("ours", "cprofiled")]["out"])
    return 0


def _run(
    args: argparse.Namespace,
    emulator: EmulatorProcess,
    side: str,
    mode: str,
    site: Path,
    out: Path,
    work_dir: Path,
) -> dict[str, Any]:
    if side == "ours":
        env, source = function_env(emulator.url, out / "state"), OUR_SOURCE
    else:
        env, source = sdk_env(emulator.url), NAIVE_SOURCE
    env = server_env(env)
    env.update(
        PYTHONPATH=str(site),
        BENCH_PROFILE_MODE="" if mode == "plain" else mode,
        BENCH_PROFILE_DIR=str(out),
        BENCH_PROFILE_SKIP=str(WARMUP),
    )
    check = _restored if side == "ours" else _naive_restored
    graph = GRAPHS[side]

    def bodies(count: int) -> list[bytes]:
        names = emulator.fresh(graph, count)
        return [json.dumps({"graphName": graph, "executionName": n}).encode() for n in names]

    def snapshot(server: FunctionServer) -> dict[str, list[int]]:
        """The phase totals as of now: one request after a pause makes the worker write."""
        time.sleep(0.6)
        run_load(server.port, bodies(1), HEADERS, check, 1, 10.0)
        files = list(out.glob("phases-*.json"))
        return json.loads(files[0].read_text(encoding="utf-8")) if files else {}

    with FunctionServer(f"{side} {mode}", source, env, work_dir / f"{side}-{mode}.log") as server:
        run_load(server.port, bodies(WARMUP), HEADERS, check, args.concurrency, 30.0)
        before = snapshot(server) if mode == "phases" else {}
        load = bodies(args.requests)
        cpu_before = server.cpu_seconds()
        result = run_load(server.port, load, HEADERS, check, args.concurrency, args.duration)
        cpu = server.cpu_seconds() - cpu_before
        after = snapshot(server) if mode == "phases" else {}
    if result.errors or not result.ok:
        raise RuntimeError(f"{side} {mode}: {result.errors} errors: {result.error_samples}")
    phases = {
        part: [calls - before.get(part, [0, 0])[0], spent - before.get(part, [0, 0])[1]]
        for part, (calls, spent) in after.items()
    }
    return {
        "out": out,
        "ok": result.ok,
        "rps": result.ok / result.elapsed,
        "cpu_ms_per_request": cpu / result.ok * 1000,
        "p50_ms": result.summary()["p50_ms"],
        "phases": phases,
    }


def _print_runs(results: dict[tuple[str, str], dict[str, Any]]) -> None:
    print(f"## runs (one gunicorn worker, THREADS={THREADS})\n")
    print("| server | profiler | requests | req/s | p50 | server CPU per request |")
    print("|---|---|---:|---:|---:|---:|")
    for (side, mode), run in results.items():
        print(
            f"| {side} | {mode} | {run['ok']:,} | {run['rps']:,.0f} | {run['p50_ms']:.2f} ms | "
            f"{run['cpu_ms_per_request']:.3f} ms |"
        )
    print()


def _print_phases(side: str, run: dict[str, Any], plain: dict[str, Any]) -> None:
    """Thread CPU per request in each timed door, and what is left for the rest."""
    phases = run["phases"]
    requests = phases.get("Flask.__call__", [0, 0])[0]
    if not requests:
        print(f"(no phase timings for {side})\n")
        return

    def ms(part: str) -> float:
        return phases.get(part, [0, 0])[1] / requests / 1e6

    server, app = run["cpu_ms_per_request"], ms("Flask.__call__")
    sqlite_parts = sorted((p for p in phases if p.startswith("sqlite ")), key=lambda p: -ms(p))
    sqlite_ms = sum(ms(p) for p in sqlite_parts)
    http_ms, log_ms = ms("requests HTTPAdapter.send"), ms("logging Logger.handle")
    print(f"## {side}: thread CPU per request by door ({requests:,} requests)\n")
    print(
        f"Server CPU per request in this run {server:.3f} ms (plain run: "
        f"{plain['cpu_ms_per_request']:.3f} ms; the runs differ by the timers' own cost and the "
        "load of the shared machine):\n"
    )
    print("| part | calls per request | CPU ms per request | share |\n|---|---:|---:|---:|")
    rows = [
        ("gunicorn and the thread pool: accept, parse, write (server - app)", None,
         server - app),
        ("inside Flask.__call__ (the app), of which:", 1.0, app),
        ("  SQLite statements (all; sqlite3 Connection.execute)",
         sum(phases[p][0] for p in sqlite_parts) / requests, sqlite_ms),
        *[(f"    {p.removeprefix('sqlite ')}", phases[p][0] / requests, ms(p))
          for p in sqlite_parts],
        ("  the workflow API call below requests (HTTPAdapter.send: urllib3, socket)",
         phases.get("requests HTTPAdapter.send", [0, 0])[0] / requests, http_ms),
        ("  log lines (logging Logger.handle: format, JSON, write)",
         phases.get("logging Logger.handle", [0, 0])[0] / requests, log_ms),
        ("  the rest: Flask/werkzeug, functions-framework, auth, intake, pipeline, policy, "
         "our client's signing and parsing, requests above its adapter", None,
         app - sqlite_ms - http_ms - log_ms),
    ]  # fmt: skip
    for name, calls, value in rows:
        shown = "" if calls is None else f"{calls:.2f}"
        print(f"| {name} | {shown} | {value:.3f} | {value / server:.0%} |")
    print()


def _print_cprofile(out: Path) -> None:
    files = sorted(str(path) for path in out.glob("cprofile-*.pstats"))
    if not files:
        print("(no cProfile output)")
        return
    stats = pstats.Stats(*files)
    entries = stats.stats  # type: ignore[attr-defined]
    entry = next(
        value for (filename, _, name), value in entries.items()
        if name == "__call__" and filename.endswith(os.path.join("flask", "app.py"))
    )  # fmt: skip
    requests, app = entry[1], entry[3]
    print(f"## ours under cProfile: {requests:,} requests through Flask.__call__\n")
    print(
        f"{app / requests * 1000:.3f} ms of thread CPU per request inside Flask under the "
        "profiler (which inflates every call). The calls that matter, cumulative CPU per "
        "request (a call's time includes its callees) and as a share of the CPU inside "
        "Flask:\n"
    )
    print("| function | calls per request | ms per request | share |\n|---|---:|---:|---:|")
    rows = []
    for (filename, _, function), (_, calls, _, cumulative, _) in entries.items():
        name = _readable(filename, function)
        if name and not name.endswith(":<module>") and cumulative / app >= 0.015:
            rows.append((cumulative, calls, name))
    for cumulative, calls, name in sorted(rows, reverse=True)[:40]:
        print(
            f"| `{name}` | {calls / requests:.2f} | {cumulative / requests * 1000:.3f} | "
            f"{cumulative / app:.0%} |"
        )
    own: dict[str, float] = {}
    for (filename, _, function), (_, _, tottime, _, _) in entries.items():
        group = _package(filename, function)
        own[group] = own.get(group, 0.0) + tottime
    print(
        "\nOwn time (cProfile's tottime: a function's time without its callees) by package: "
        "every profiled function is in one row, so the rows add up to the time inside Flask:\n"
    )
    print("| package | share of the CPU inside Flask |\n|---|---:|")
    for group, seconds in sorted(own.items(), key=lambda item: -item[1]):
        if seconds / app >= 0.005:
            print(f"| {group} | {seconds / app:.1%} |")
    print()


def _package(filename: str, function: str) -> str:
    """The package a profiled function belongs to: ours by module, libraries by name."""
    if filename == "~":  # a C function: sqlite3's, the socket's, a builtin
        for marker in ("sqlite3", "socket", "_ssl", "_hashlib", "hmac"):
            if marker in function:
                return f"C: {marker}"
        return "C: builtins (str, dict, json, time, ...)"
    parts = Path(filename).parts
    if "handler" in parts:
        below = parts[parts.index("handler") + 1 :]
        return "handler." + (below[0].removesuffix(".py") if below else "")
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    path = Path(filename)
    inside = path.parent.name  # "logging/__init__", "email/feedparser", "http/client"
    where = f"{inside}/{path.stem}" if not inside.startswith("python3") else path.stem
    return f"stdlib: {where}"


def _readable(filename: str, function: str) -> str | None:
    if filename == "~":
        keep = ("sqlite3", "json", "socket", "sendall", "recv", "select", "dumps", "hmac")
        return function if any(k in function for k in keep) else None
    parts = Path(filename).parts
    if "handler" in parts:
        module = ".".join(parts[parts.index("handler") :]).removesuffix(".py")
        return f"{module}:{function}"
    for library in ("requests", "urllib3", "flask", "werkzeug", "functions_framework"):
        if library in parts:
            return f"{library}/{Path(filename).stem}:{function}"
    stem = Path(filename).stem
    if "logging" in parts or "json" in parts:
        return f"{'logging' if 'logging' in parts else 'json'}/{stem}:{function}"
    return None


if __name__ == "__main__":
    sys.exit(main())
