"""Where the FunctionGraph event function's cold start goes: imports, and the first event.

    python benchmarks/profile_cold.py             # DWR over HTTPS (the default API, the
                                                  # real transport), 7 runs
    python benchmarks/profile_cold.py --api obs --plain --runs 3

Each run is a fresh interpreter that does what a new FunctionGraph instance does: import
``handler.main`` (the module the package's ``index.handler`` re-exports), then deliver one SMN
trigger event naming a failed execution to ``handler(event, None)`` against the emulator
(a process of its own), with SQLite state in a new directory. Three kinds of run:

* timed runs (``--runs``): the phases on the child's own clock - spawn to the first line of
  the script (interpreter start-up and ``site``), ``import handler.main``, the first event -
  and the parent's spawn-to-result time; medians;
* one ``python -X importtime`` run: every module imported in each phase (the log is split at
  the phase boundary), its self time, and who pulled it in (the first ``handler`` module on
  its import chain, or the third-party distribution);
* runs with every module the first event imports loaded beforehand (timed, and one under
  :mod:`cProfile`): what the first event spends besides importing - building the pipeline,
  opening SQLite, the TLS context and connection, the restore call.

Development only: it prints tables (the findings are written up in ``benchmarks/PROFILE.md``)
and writes nothing. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from common import ACCESS_KEY, PYTHON, ROOT, SECRET_KEY, function_env, median
from emulator_process import EmulatorProcess
from tls import make_certificate

MARKER = "BENCH-COLD "
PHASE = "BENCH-PHASE first-event"
RUN_TIMEOUT = 60.0
GRAPH = "cold-profile"
TOP = 15

# The child: one fresh instance, one SMN trigger event (as tests/fixtures/events/smn_trigger
# delivers it) naming the execution; prints its phase times after MARKER.
CHILD = """
import json, os, sys, time
started = time.time()
began = time.perf_counter()
import handler.main
imported = time.perf_counter()
if os.environ.get("BENCH_PREIMPORT"):  # what the first event imports, loaded beforehand
    import importlib
    for name in os.environ["BENCH_PREIMPORT"].split(","):
        try:
            importlib.import_module(name)
        except ImportError:  # an optional module the first event only tried
            pass
    imported = time.perf_counter()
sys.stderr.write("BENCH-PHASE first-event\\n"); sys.stderr.flush()
message = json.dumps({"graphName": os.environ["BENCH_GRAPH"],
                      "executionName": os.environ["BENCH_EXECUTION"]})
event = {"record": [{"event_source": "smn", "event_version": "1.0", "smn": {
    "topic_urn": "urn:smn:cn-east-3:0123456789abcdef0123456789abcdef:workflow-failures",
    "message_id": "cold-" + os.environ["BENCH_EXECUTION"], "message": message,
    "subject": "workflow execution failed", "type": "notification",
    "timestamp": "2026-11-28T10:00:00Z", "message_attributes": None}}]}
if os.environ.get("BENCH_CPROFILE"):
    import cProfile, pstats
    profile = cProfile.Profile()
    profile.enable()
result = handler.main.handler(event, None)
done = time.perf_counter()
if os.environ.get("BENCH_CPROFILE"):
    profile.disable()
    profile.dump_stats(os.environ["BENCH_CPROFILE"])
outcome = result["results"][0]["outcome"]
print("BENCH-COLD " + json.dumps({"started": started, "import_s": imported - began,
      "event_s": done - imported, "outcome": outcome}), flush=True)
"""

# The baseline: the official SDK's own cold start, one restore (what bench_cold compares to).
SDK_CHILD = {
    "obs": """
import json, os, time
started = time.time()
began = time.perf_counter()
from obs import WorkflowClient
client = WorkflowClient(access_key_id=os.environ["OBS_ACCESS_KEY_ID"],
                        secret_access_key=os.environ["OBS_SECRET_ACCESS_KEY"],
                        server=os.environ["OBS_ENDPOINT"],
                        ssl_verify=os.environ.get("OBS_CA_BUNDLE") or False)
ok = client.restoreFailedWorkflowExecution(os.environ["BENCH_EXECUTION"],
                                           os.environ["BENCH_GRAPH"]).status == 200
print("BENCH-COLD " + json.dumps({"started": started, "inside_s": time.perf_counter() - began,
      "outcome": "restored" if ok else "failed"}), flush=True)
""",
    "dwr": """
import json, os, time
started = time.time()
began = time.perf_counter()
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkdwr.v3 import DwrClient, RestoreWorkflowExecutionRequest
config = HttpConfig.get_default_config()
config.ignore_ssl_verification = False
if os.environ.get("OBS_CA_BUNDLE"):
    config.ssl_ca_cert = os.environ["OBS_CA_BUNDLE"]
client = (DwrClient.new_builder()
          .with_credentials(BasicCredentials(os.environ["OBS_ACCESS_KEY_ID"],
                                             os.environ["OBS_SECRET_ACCESS_KEY"],
                                             os.environ["DWR_PROJECT_ID"]))
          .with_endpoints([os.environ["DWR_ENDPOINT"]]).with_http_config(config).build())
request = RestoreWorkflowExecutionRequest(execution_name=os.environ["BENCH_EXECUTION"],
                                          graph_name=os.environ["BENCH_GRAPH"])
ok = client.restore_workflow_execution(request).status_code == 200
print("BENCH-COLD " + json.dumps({"started": started, "inside_s": time.perf_counter() - began,
      "outcome": "restored" if ok else "failed"}), flush=True)
""",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", choices=("dwr", "obs"), default="dwr")
    parser.add_argument("--plain", action="store_true", help="plain HTTP instead of HTTPS")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="obs-workflow-restore-cold-") as work:
        work_dir = Path(work)
        tls = None if args.plain else make_certificate(work_dir)
        with EmulatorProcess(ACCESS_KEY, SECRET_KEY, api=args.api, tls=tls) as emulator:

            def child(
                extra: dict[str, str], importtime: bool = False, script: str = CHILD
            ) -> tuple[dict, str, float]:
                state = Path(tempfile.mkdtemp(dir=work_dir))  # a new instance: new SQLite file
                env = function_env(emulator.url, state, emulator.ca_bundle, args.api)
                env.update(BENCH_GRAPH=GRAPH, BENCH_EXECUTION=emulator.fresh(GRAPH, 1)[0], **extra)
                command = [PYTHON, *(["-X", "importtime"] if importtime else []), "-c", script]
                spawned = time.time()
                began = time.perf_counter()
                done = subprocess.run(
                    command, cwd=ROOT, env=env, capture_output=True, text=True,
                    timeout=RUN_TIMEOUT, check=True,
                )  # fmt: skip
                elapsed = time.perf_counter() - began
                line = next(x for x in done.stdout.splitlines() if x.startswith(MARKER))
                result = json.loads(line[len(MARKER) :])
                if result["outcome"] != "restored":
                    raise RuntimeError(f"the first event was not restored: {result}")
                result["startup_s"] = result["started"] - spawned
                return result, done.stderr, elapsed

            child({})  # writes the bytecode caches, as a deployed package has them
            sdk_script = SDK_CHILD[args.api]
            child({}, script=sdk_script)
            timed, sdk = [], []
            for _ in range(args.runs):  # alternating, so both see the same machine
                timed.append(child({}))
                sdk.append(child({}, script=sdk_script)[0])
            _, importlog, _ = child({}, importtime=True)
            at_import, at_event = _phases(importlog)
            # The first event's own work, without its imports: they are loaded beforehand.
            preimport = {"BENCH_PREIMPORT": ",".join(name for _, name, _, _ in at_event)}
            warm = [child(preimport)[0]["event_s"] for _ in range(max(3, args.runs // 2))]
            profile_path = work_dir / "first-event.pstats"
            child({**preimport, "BENCH_CPROFILE": str(profile_path)})
            transport = "plain HTTP" if args.plain else "HTTPS"
            print(f"# cold start of the event function: {args.api.upper()} over {transport}\n")
            _print_phases(timed, warm, sdk)
            _print_imports("import handler.main", at_import)
            _print_imports("first event", at_event)
            _print_first_event(profile_path)
    return 0


def _print_phases(
    timed: list[tuple[dict[str, Any], str, float]], warm: list[float], sdk: list[dict[str, Any]]
) -> None:
    rows = {
        "spawn -> script's first line (interpreter, site)": [r["startup_s"] for r, _, _ in timed],
        "import handler.main": [r["import_s"] for r, _, _ in timed],
        "first event: handler(event, None)": [r["event_s"] for r, _, _ in timed],
        f"first event without its imports (loaded beforehand; {len(warm)} runs)": warm,
        "spawn -> first restore result": [
            r["startup_s"] + r["import_s"] + r["event_s"] for r, _, _ in timed
        ],
        "the SDK: spawn -> first restore result (same emulator, alternating)": [
            r["startup_s"] + r["inside_s"] for r in sdk
        ],
        "the SDK: spawn -> script's first line": [r["startup_s"] for r in sdk],
        "spawn -> process exit, after the result (parent's clock)": [e for _, _, e in timed],
    }
    print(f"## phases (median of {len(timed)} fresh processes)\n")
    print("| phase | median | min | max |\n|---|---:|---:|---:|")
    for name, values in rows.items():
        print(f"| {name} | {_ms(median(values))} | {_ms(min(values))} | {_ms(max(values))} |")
    print()


def _phases(log: str) -> tuple[list[tuple[int, str, int, int]], list[tuple[int, str, int, int]]]:
    """``-X importtime`` lines ``(depth, module, self us, cumulative us)``, split at PHASE.

    Lines before the import of ``handler.main`` began (interpreter start-up: ``site``,
    ``encodings``) come before the first top-level line of its subtree and are dropped.
    """
    before: list[tuple[int, str, int, int]] = []
    after: list[tuple[int, str, int, int]] = []
    current = before
    for line in log.splitlines():
        if line.strip() == PHASE:
            current = after
            continue
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative, name = line.split(":", 1)[1].split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        current.append((depth, name.strip(), int(self_us), int(cumulative)))
    # Start-up imports end with the last top-level module before handler's subtree starts.
    end = max(i for i, (d, n, _, _) in enumerate(before) if d == 0 and n == "handler.main")
    start = end
    while start > 0 and before[start - 1][0] > 0:
        start -= 1
    # `handler` itself (the package) is imported first, as a sibling at depth 0.
    while start > 0 and before[start - 1][1] == "handler":
        start -= 1
    return before[start : end + 1], after


def _owners(lines: list[tuple[int, str, int, int]]) -> list[tuple[str, str, int]]:
    """``(module, owner, self us)``: the owner is the innermost ``handler`` module on the
    module's import chain (who pulled it in), or, outside ours, its own distribution."""
    owned = []
    # importtime prints a module after everything it imported: walk backwards to see parents
    # before their children, keeping the chain of open parents by depth.
    chain: dict[int, str] = {}
    for depth, name, self_us, _ in reversed(lines):
        chain[depth] = name
        for deeper in [d for d in chain if d > depth]:
            del chain[deeper]
        parents = [chain[d] for d in sorted(chain) if d < depth]
        ours = [p for p in parents if p.split(".")[0] == "handler"]
        top = name.split(".")[0]
        if top == "handler":
            owner = name
        elif ours:
            owner = f"{'stdlib' if top in sys.stdlib_module_names else top}, for {ours[-1]}"
        elif top in sys.stdlib_module_names:
            # No module of ours above it: imported inside a function at the first event.
            owner = f"stdlib, for {parents[0]}" if parents else f"`{name}` (imported by a call)"
        else:
            owner = top
        owned.append((name, owner, self_us))
    return owned


def _print_imports(phase: str, lines: list[tuple[int, str, int, int]]) -> None:
    total = sum(c for d, _, _, c in lines if d == 0)
    print(f"## imports during `{phase}`: {_ms(total / 1e6)} (-X importtime, one run)\n")
    groups: dict[str, int] = defaultdict(int)
    for _, name, self_us, _ in lines:
        top = name.split(".")[0]
        kind = "ours (handler.*)" if top == "handler" else (
            "standard library" if top in sys.stdlib_module_names else f"third party: {top}"
        )  # fmt: skip
        groups[kind] += self_us
    print("| what (self time) | ms | share |\n|---|---:|---:|")
    for kind, self_us in sorted(groups.items(), key=lambda item: -item[1]):
        print(f"| {kind} | {self_us / 1000:.1f} | {self_us / total:.0%} |")
    by_owner: dict[str, int] = defaultdict(int)
    pulled: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for name, owner, self_us in _owners(lines):
        key = owner.split(", for ")[-1] if "for handler" in owner else owner
        by_owner[key] += self_us
        if name != key:
            pulled[key].append((self_us, name))
    print(f"\nwho pulls the time in (self time of a module and the stdlib/third-party modules "
          f"it is first to import; top {TOP}). Modules loaded by `importlib.import_module` "
          "(handler.client's lazy names) are not listed by -X importtime: what they import "
          "counts for the module that asked for the name:\n")  # fmt: skip
    print("| owner | ms | of which, the largest it pulls in |\n|---|---:|---|")
    for owner, self_us in sorted(by_owner.items(), key=lambda item: -item[1])[:TOP]:
        largest = ", ".join(
            f"`{name}` {us / 1000:.1f}" for us, name in sorted(pulled[owner], reverse=True)[:4]
        )
        print(f"| `{owner}` | {self_us / 1000:.1f} | {largest} |")
    print(f"\ncostliest modules by self time (top {TOP}):\n")
    print("| module | self ms | cumulative ms |\n|---|---:|---:|")
    for _, name, self_us, cumulative in sorted(lines, key=lambda line: -line[2])[:TOP]:
        print(f"| `{name}` | {self_us / 1000:.1f} | {cumulative / 1000:.1f} |")
    print()


def _print_first_event(path: Path) -> None:
    import pstats

    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    print(
        f"## the first event's own work under cProfile: {_ms(total)} in all (its imports "
        "loaded beforehand; profiled, so inflated)\n"
    )
    print("cumulative time of the calls that matter:\n")
    print("| function | calls | cumulative ms | share |\n|---|---:|---:|---:|")
    entries = stats.stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, function), (_, calls, _, cumulative, _) in entries.items():
        where = _where(filename, line, function)
        if where and cumulative / total >= 0.02:
            rows.append((cumulative, calls, where))
    for cumulative, calls, where in sorted(rows, reverse=True)[:30]:
        print(f"| `{where}` | {calls} | {cumulative * 1000:.1f} | {cumulative / total:.0%} |")
    print()


def _where(filename: str, line: int, function: str) -> str | None:
    """A readable name for a profiled function of ours, of requests/urllib3/ssl/sqlite3, or
    the import machinery's entry point; None for the rest (the table stays short)."""
    if filename == "~":
        return function if any(k in function for k in ("sqlite3", "_ssl", "socket")) else None
    path = Path(filename)
    parts = path.parts
    if "handler" in parts:
        module = ".".join(parts[parts.index("handler") :]).removesuffix(".py")
        return f"{module}:{function}"
    if "_bootstrap" in filename and function == "_find_and_load":
        return "(imports) _find_and_load"
    for library in ("requests", "urllib3", "ssl", "sqlite3"):
        if library in parts or path.stem == library:
            return f"{library}/{path.stem}:{function}"
    return None


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


if __name__ == "__main__":
    sys.exit(main())
