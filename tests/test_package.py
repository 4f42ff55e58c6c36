"""The packages `make package` builds run on FunctionGraph's CPython, with nothing but themselves.

What runs is what template.yaml deploys: the folder its ``codeUri`` names (the component zips
that folder, FunctionGraph unpacks it), copied into a temporary directory and run under the
target CPython (a bare venv of the Makefile's PYTHON_VERSION) with a clean environment: exactly
the variables template.yaml gives the function - plain and encrypted, DWR by default - plus
PATH. One substitution makes that loopback: ``DWR_REGION`` stands for the region's DWR host,
so the test checks it does and puts the emulator's address in its place (``DWR_ENDPOINT``).
The workflow API is the project's DWR emulator, which accepts only the agency's temporary keys,
so a restore proves the function signed with the keys FunctionGraph hands it.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests
import yaml

from handler.devtools.emulator import DwrEmulator
from handler.settings import DWR_REGION_HOSTS, load_settings
from tests.packages import ROOT, names, target_version

pytest_plugins = ["tests.package_fixtures", "tests.redis_server"]

AGENCY_AK = "AGENCY-AK-temporary"
AGENCY_SK = "agency-secret-key-0123456789"
AGENCY_TOKEN = "agency-security-token-0123456789"
STATIC_AK, STATIC_SK = "STATIC-AK-not-accepted", "static-secret-not-accepted-0123"
AUTH_TOKEN = "auth-token-for-the-package-test-0123"
SECRETS = (AGENCY_SK, AGENCY_TOKEN, STATIC_SK, AUTH_TOKEN)

WEB_FRAMEWORK = ("flask", "werkzeug", "functions_framework", "gunicorn", "uvicorn", "starlette")
WEB_FRAMEWORK += ("jinja2", "markupsafe", "itsdangerous", "click", "watchdog", "anyio")
DEV_ONLY = ("handler/cli/", "handler/devtools/")
RUN_TIMEOUT = 60.0
START_TIMEOUT = 30.0

SMN_EVENT = json.loads((ROOT / "tests/fixtures/events/smn_trigger.json").read_text())["event"]
# (graph, execution) the SMN trigger fixture asks to restore; its third request is RUNNING.
SMN_RESTORES = [("video-transcode", "exec-3001"), ("archive", "nightly-04")]
# What the template's TIMER trigger delivers (huawei-platform.md), with its empty userEvent.
TIMER_EVENT = {
    "version": "v1.0",
    "time": "2026-11-27T10:00:00Z",
    "trigger_type": "TIMER",
    "trigger_name": "obs_workflow_restore_sweep",
    "user_event": "",
}
DWR_PROJECT = "0123456789abcdef0123456789abcdef"
EVENTGRID_RESTORES = [("eventgrid-graph", "eg-exec-1"), ("eventgrid-graph", "eg-exec-2")]
# What EventGrid hands a FunctionGraph target: one CloudEvent (README: Accepted event shapes).
EVENTGRID_TARGET_EVENT = {
    "specversion": "1.0",
    "id": "eg-package-2",
    "source": "HC.OBS",
    "type": "com.example.workflow.execution.failed",
    "datacontenttype": "application/json",
    "data": {"graphName": "eventgrid-graph", "executionName": "eg-exec-2"},
}
EVENTGRID_EVENT = {
    "events": [
        {
            "specversion": "1.0",
            "id": "eg-package-1",
            "source": "HC.OBS",
            "type": "com.example.workflow.execution.failed",
            "datacontenttype": "application/json",
            "data": {"graphName": "eventgrid-graph", "executionName": "eg-exec-1"},
        }
    ]
}

# Runs inside the event package's folder under the target CPython, as FunctionGraph would: the code
# directory on sys.path, `index.handler(event, context)` per event. The context offers the
# documented methods, with the agency's temporary keys.
EVENT_DRIVER = """
import json, sys

sys.path.insert(0, ".")
request = json.load(sys.stdin)


class Context:
    def getRequestID(self):
        return "fg-request-package-test"

    def getRemainingTimeInMilliSeconds(self):
        return 30000

    def getSecurityAccessKey(self):
        return request["agency"][0]

    def getSecuritySecretKey(self):
        return request["agency"][1]

    def getSecurityToken(self):
        return request["agency"][2]


# Which of the package's modules the interpreter compiles (it does only when their bytecode
# is missing or stale): a new instance starts from the package as uploaded, so a cold start
# that compiles pays for it every time.
import importlib._bootstrap_external as loaders

compiled = []
compile_source = loaders.SourceLoader.source_to_code


def recording_compile(self, data, path, *args, **kwargs):
    compiled.append(path)
    return compile_source(self, data, path, *args, **kwargs)


loaders.SourceLoader.source_to_code = recording_compile

import index
import requests

answers = [index.handler(event, Context()) for event in request["events"]]
web = sorted({name.split(".")[0] for name in sys.modules} & set(request["forbidden"]))
report = {
    "answers": answers,
    "python": list(sys.version_info[:2]),
    "requestsFrom": requests.__file__,
    "webModulesLoaded": web,
    "compiledAtStart": sorted(compiled),
}
with open(request["report"], "w") as out:
    json.dump(report, out)
"""


def template_function(service: str) -> dict:
    return yaml.safe_load((ROOT / "template.yaml").read_text())["services"][service]["props"][
        "function"
    ]


def deployed_environment(service: str, exported: dict[str, str]) -> dict[str, str]:
    """template.yaml's variables for ``service`` - plain and encrypted, as both reach the
    function's environment - with ${vars.…} filled in and ${env(…)} taken from ``exported``."""
    template_vars = yaml.safe_load((ROOT / "template.yaml").read_text())["vars"]
    function = template_function(service)
    variables = {**function["environmentVariables"], **function["encryptedUserData"]}
    environment = {}
    for name, value in variables.items():
        value = re.sub(r"\$\{vars\.(\w+)\}", lambda m: str(template_vars[m.group(1)]), str(value))
        environment[name] = re.sub(r"\$\{env\((\w+)\)\}", lambda m: exported[m.group(1)], value)
    return environment


def on_loopback(environment: dict[str, str], emulator_url: str) -> dict[str, str]:
    """The deployed variables, with the region's DWR host replaced by the emulator."""
    deployed = load_settings(environment)
    assert deployed.workflow_api == "dwr"  # the template's default, inferred from DWR_REGION
    assert deployed.endpoint == DWR_REGION_HOSTS[environment["DWR_REGION"]]
    loopback = {k: v for k, v in environment.items() if k != "DWR_REGION"}
    return {**loopback, "DWR_ENDPOINT": emulator_url}


def code_folder(kind: str, built_packages: dict[str, Path], destination: Path) -> Path:
    """A copy of the folder template.yaml deploys for ``kind`` (modes kept, as the zip's)."""
    folder = built_packages[kind].with_suffix("")  # build/restore-event.zip → build/restore-event
    assert f"./build/{folder.name}" == template_function(f"{folder.name}")["code"]["codeUri"]
    return Path(shutil.copytree(folder, destination))


def shell(state_url: str, **more: str) -> dict[str, str]:
    """What the deploying shell exports (the README's deploy step)."""
    return {"DWR_PROJECT_ID": DWR_PROJECT, "RESTORE_STATE_URL": state_url, **more}


@pytest.fixture
def emulator():
    """The DWR API on loopback, accepting only the agency's temporary credentials."""
    emu = DwrEmulator({AGENCY_AK: AGENCY_SK}, security_token=AGENCY_TOKEN, project_id=DWR_PROJECT)
    for graph, execution in [*SMN_RESTORES, *EVENTGRID_RESTORES]:
        emu.seed(graph, execution, "fail")
    with emu:
        yield emu


def run_event_function(code: Path, runtime_bin: Path, env: dict, events: list, tmp: Path) -> dict:
    """One cold start of the event function: a fresh process handling ``events`` in turn."""
    report = tmp / f"report-{time.monotonic_ns()}.json"
    request = {
        "events": events,
        "agency": [AGENCY_AK, AGENCY_SK, AGENCY_TOKEN],
        "forbidden": list(WEB_FRAMEWORK),
        "report": str(report),
    }
    result = subprocess.run(
        [str(runtime_bin / "python3"), "-u", "-c", EVENT_DRIVER],
        cwd=code,
        env={**env, "PATH": f"{runtime_bin}:/usr/bin:/bin"},
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr
    return {**json.loads(report.read_text()), "log": result.stdout}


def outcomes(answer: dict) -> list[tuple[str, str, str]]:
    return [(r["graphName"], r["executionName"], r["outcome"]) for r in answer["results"]]


# ------------------------------------------------------------------------------- contents


def test_the_event_zip_holds_the_function_and_no_web_framework(built_packages):
    entries = names(built_packages["event"])
    tops = {entry.split("/")[0] for entry in entries}
    assert "index.py" in entries and "handler/main.py" in entries
    assert not tops & set(WEB_FRAMEWORK), tops & set(WEB_FRAMEWORK)
    assert "bootstrap" not in entries
    for package in ("redis", "requests", "cloudevents", "urllib3"):
        assert package in tops, package


def test_the_http_zip_holds_bootstrap_functions_framework_and_redis(built_packages):
    entries = names(built_packages["http"])
    tops = {entry.split("/")[0] for entry in entries}
    assert {"bootstrap", "handler", "functions_framework", "flask", "redis"} <= tops
    assert "index.py" not in entries


def test_no_zip_holds_dev_modules_scripts_or_benchmarks(built_packages):
    for package in built_packages.values():
        for entry in names(package):
            assert not entry.startswith(DEV_ONLY), entry
            assert not entry.startswith(("bin/", "benchmarks/", "tests/")), entry


def test_every_module_in_a_zip_has_its_bytecode_for_the_target_python_and_nothing_else(
    built_packages,
):
    tag = "cpython-" + target_version().replace(".", "")
    for package in built_packages.values():
        entries = set(names(package))
        sources = {entry for entry in entries if entry.endswith(".py")}
        compiled = {entry for entry in entries if entry.endswith((".pyc", ".pyo"))}
        assert {entry for entry in entries if "__pycache__/" in entry} == compiled
        expected = {
            f"{source.rpartition('/')[0]}/__pycache__/{name}.{tag}.pyc".lstrip("/")
            for source in sources
            for name in [source.rpartition("/")[2].removesuffix(".py")]
        }
        assert compiled <= expected  # only the target's, and only beside a source
        assert "handler/__pycache__/main." + tag + ".pyc" in compiled
        assert len(expected - compiled) <= len(sources) // 100  # what 3.x cannot compile


def test_the_bytecode_is_the_same_bytes_when_compiled_again(built_packages):
    """The same inputs give the same package, bytecode included (set constants are written
    in hash order, so the compiler must not run with a random hash seed)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        build_package = importlib.import_module("build_package")
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    with zipfile.ZipFile(built_packages["event"]) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    sources = {name: (data, 0o644) for name, data in entries.items() if name.endswith(".py")}
    again = build_package.bytecode_files(sources, target_version())
    shipped = {name: data for name, data in entries.items() if name.endswith(".pyc")}
    assert {name: data for name, (data, _) in again.items()} == shipped


def test_dependencies_are_the_target_pythons_not_the_build_machines(built_packages):
    """Compiled modules are for the target's ABI only; markers were evaluated for the target
    (on 3.10 redis needs async-timeout and anyio exceptiongroup, which a 3.11 build skips)."""
    tag = "cpython-" + target_version().replace(".", "")
    for package in built_packages.values():
        compiled = [entry for entry in names(package) if entry.endswith(".so")]
        assert compiled and all(f".{tag}-x86_64-linux-gnu.so" in entry for entry in compiled)
    if target_version() == "3.10":
        assert "async_timeout/__init__.py" in names(built_packages["event"])
        assert "exceptiongroup/__init__.py" in names(built_packages["http"])


def test_both_zips_pin_the_same_versions_of_what_they_share(built_packages):
    def pins(package: Path) -> dict[str, str]:
        with zipfile.ZipFile(package) as archive:
            header = archive.read("MANIFEST.txt").decode().splitlines()
        line = next(line for line in header if line.startswith("# dependencies: "))
        return dict(pin.split("==") for pin in line.removeprefix("# dependencies: ").split())

    event, http = pins(built_packages["event"]), pins(built_packages["http"])
    assert "redis" in event and set(event) <= set(http)
    assert {name: http[name] for name in event} == event


def test_every_zip_has_a_manifest_of_every_file_and_its_size(built_packages):
    for package in built_packages.values():
        with zipfile.ZipFile(package) as archive:
            sizes = {info.filename: info.file_size for info in archive.infolist()}
            manifest = archive.read("MANIFEST.txt").decode()
        listed = dict(
            reversed(line.split("\t")) for line in manifest.splitlines() if line[:1].isdigit()
        )
        del sizes["MANIFEST.txt"]
        assert {path: int(size) for path, size in listed.items()} == sizes
        beside = package.with_name(package.stem + ".MANIFEST.txt").read_text()
        assert beside.startswith(manifest) and f"{package.stat().st_size} bytes" in beside


def test_zip_entries_are_sorted_and_bootstrap_is_executable(built_packages):
    for package in built_packages.values():
        with zipfile.ZipFile(package) as archive:
            infos = archive.infolist()
        assert [i.filename for i in infos] == sorted(i.filename for i in infos)
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in infos}
        assert modes.get("bootstrap", 0o755) == 0o755
    bootstrap = zipfile.ZipFile(built_packages["http"]).read("bootstrap").decode()
    assert f'target_python_version="{target_version()}"' in bootstrap


# --------------------------------------------------------------------------------- running


@pytest.mark.parametrize("state", ["sqlite", "redis"])
def test_the_event_package_restores_smn_and_eventgrid_events_under_the_target_python(
    state, built_packages, runtime_bin, emulator, tmp_path, request
):
    code = code_folder("event", built_packages, tmp_path / "code")
    if state == "redis":
        state_url = request.getfixturevalue("redis_url")
    else:
        state_url = f"sqlite:///{tmp_path / 'state.db'}"
    env = on_loopback(deployed_environment("restore-event", shell(state_url)), emulator.url)
    assert "OBS_ACCESS_KEY_ID" not in env  # the agency's keys are the only credentials

    events = [SMN_EVENT, EVENTGRID_EVENT, EVENTGRID_TARGET_EVENT]
    first = run_event_function(code, runtime_bin, env, events, tmp_path)

    assert first["python"] == [int(part) for part in target_version().split(".")]
    assert Path(first["requestsFrom"]).is_relative_to(code)  # from the package, nowhere else
    assert first["webModulesLoaded"] == []
    assert first["compiledAtStart"] == []  # every module came from the package's bytecode
    smn, envelope, target = first["answers"]
    assert smn["statusCode"] == 200 and smn["summary"] == {"restored": 2, "skipped": 1}
    assert envelope["summary"] == {"restored": 1}  # the publish envelope {"events": [...]}
    assert target["summary"] == {"restored": 1}  # one bare CloudEvent, as a target gets it
    for graph, execution in [*SMN_RESTORES, *EVENTGRID_RESTORES]:
        assert emulator.state(graph, execution) == "running"
        assert emulator.restores(graph, execution) == 1

    # Another cold start gets the same delivery again: the state store remembers it.
    again = run_event_function(code, runtime_bin, env, [SMN_EVENT], tmp_path)
    assert again["answers"][0]["summary"] == {"duplicate": 2, "skipped": 1}
    assert all(emulator.restores(g, e) == 1 for g, e in SMN_RESTORES)


# graph -> (execution, DWR status): failures spread over graphs among other states.
SWEPT_GRAPHS = {
    "nightly-etl": [("etl-01", "fail"), ("etl-02", "success"), ("etl-03", "fail"),
                    ("etl-04", "running"), ("etl-05", "fail"), ("etl-06", "cancel")],
    "video-transcode": [("vt-01", "fail"), ("vt-02", "timeout")],
    "archive": [("nightly-04", "fail")],
}  # fmt: skip


@pytest.fixture
def dwr_emulator():
    """The DWR API on loopback (it lists executions), accepting only the agency's keys.

    Its clock runs a minute behind: the seeded executions failed a minute before the sweep,
    not within the second the sweep's window ends in (the list's times are whole seconds).
    """
    emu = DwrEmulator(
        {AGENCY_AK: AGENCY_SK},
        security_token=AGENCY_TOKEN,
        project_id=DWR_PROJECT,
        clock=lambda: time.time() - 60,
    )
    for graph, executions in SWEPT_GRAPHS.items():
        for execution, status in executions:
            emu.seed(graph, execution, status)
    with emu:
        yield emu


@pytest.mark.parametrize("state", ["sqlite", "redis"])
def test_the_event_package_sweeps_on_a_timer_event_under_the_target_python(
    state, built_packages, runtime_bin, dwr_emulator, tmp_path, request
):
    """The template's sweep scope (RESTORE_SWEEP_GRAPHS empty): every graph the list has."""
    code = code_folder("event", built_packages, tmp_path / "code")
    if state == "redis":
        state_url = request.getfixturevalue("redis_url")
    else:
        state_url = f"sqlite:///{tmp_path / 'state.db'}"
    env = on_loopback(deployed_environment("restore-event", shell(state_url)), dwr_emulator.url)
    failed = {(g, e) for g, runs in SWEPT_GRAPHS.items() for e, status in runs if status == "fail"}

    first = run_event_function(code, runtime_bin, env, [TIMER_EVENT], tmp_path)

    assert first["python"] == [int(part) for part in target_version().split(".")]
    assert first["webModulesLoaded"] == []
    (answer,) = first["answers"]
    assert answer["statusCode"] == 200, answer
    sweep = answer["sweep"]
    assert sweep["errors"] == [] and sweep["stopped"] is None
    assert sweep["graphsScanned"] == len(SWEPT_GRAPHS) and sweep["failuresFound"] == len(failed)
    assert {(g, e) for g, e, outcome in outcomes(answer) if outcome == "restored"} == failed
    for graph, executions in SWEPT_GRAPHS.items():
        for execution, status in executions:
            restored = int((graph, execution) in failed)
            assert dwr_emulator.restores(graph, execution) == restored, (graph, execution)
            assert dwr_emulator.state(graph, execution) == ("running" if restored else status)
    summaries = [line for line in map(json.loads, first["log"].splitlines())
                 if line.get("message") == "sweep finished"]  # fmt: skip
    assert [line["sweep"]["outcomes"] for line in summaries] == [{"restored": len(failed)}]

    # The next timer, in another cold start: the failures are running now, nothing to do.
    again = run_event_function(code, runtime_bin, env, [TIMER_EVENT], tmp_path)
    (answer,) = again["answers"]
    assert answer["statusCode"] == 200 and answer["results"] == []
    assert answer["sweep"]["failuresFound"] == 0 and answer["sweep"]["errors"] == []
    assert all(dwr_emulator.restores(g, e) == 1 for g, e in failed)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_http_package_bootstrap_serves_and_restores_under_the_target_python(
    built_packages, runtime_bin, emulator, tmp_path
):
    code = code_folder("http", built_packages, tmp_path / "code")
    secrets = shell(
        f"sqlite:///{tmp_path / 'state.db'}",
        OBS_ACCESS_KEY_ID=STATIC_AK,  # not accepted: only the agency's header keys work
        OBS_SECRET_ACCESS_KEY=STATIC_SK,
        RESTORE_AUTH_TOKEN=AUTH_TOKEN,
    )
    env = on_loopback(deployed_environment("restore-http", secrets), emulator.url)
    port = free_port()
    env.update(
        PATH=f"{runtime_bin}:/usr/bin:/bin", RUNTIME_CODE_ROOT=str(code), BOOTSTRAP_PORT=str(port)
    )
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [str(code / "bootstrap")],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: bootstrap → python → workers
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        health = wait_for_health(url, server, log)
        assert health["status"] == "ok"
        if Path("/proc").is_dir():  # bootstrap exec'd the interpreter: same pid, its binary
            assert f"python{target_version()}" in os.readlink(f"/proc/{server.pid}/exe")
        answer = requests.post(
            url,
            json={"graphName": SMN_RESTORES[0][0], "executionName": SMN_RESTORES[0][1]},
            headers={
                "Authorization": f"Bearer {AUTH_TOKEN}",
                "X-CFF-Request-Id": "cff-request-package-test",
                "X-CFF-Security-Access-Key": AGENCY_AK,
                "X-CFF-Security-Secret-Key": AGENCY_SK,
                "X-CFF-Security-Token": AGENCY_TOKEN,
            },
            timeout=RUN_TIMEOUT,
        )
        assert answer.status_code == 200, answer.text
        assert outcomes(answer.json()) == [(*SMN_RESTORES[0], "restored")]
        assert emulator.state(*SMN_RESTORES[0]) == "running"
        unauthenticated = requests.post(url, json={}, timeout=RUN_TIMEOUT)
        assert unauthenticated.status_code == 401
    finally:
        stop(server)
    text = log.read_text(errors="replace")
    for secret in SECRETS:
        assert secret not in text


def wait_for_health(url: str, server: subprocess.Popen, log: Path) -> dict:
    give_up = time.monotonic() + START_TIMEOUT
    while time.monotonic() < give_up:
        if server.poll() is not None:
            pytest.fail(f"bootstrap exited with {server.returncode}:\n{log.read_text()}")
        try:
            return requests.get(url, timeout=1).json()
        except requests.ConnectionError:
            time.sleep(0.1)
    pytest.fail(f"bootstrap did not serve within {START_TIMEOUT}s:\n{log.read_text()}")


def stop(server: subprocess.Popen) -> None:
    """End the server's process group (only the processes this test started), bounded."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue
