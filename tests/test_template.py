"""template.yaml matches the code: handlers exist, every setting it sets is one the code reads."""

from __future__ import annotations

import os
import re
import stat
import zipfile
from pathlib import Path

import pytest
import yaml

from handler.settings import SETTINGS_DOC, parse_duration
from handler.sweep import SweepRequest, parse_overrides
from tests.packages import names, target_version

pytest_plugins = ["tests.package_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
CODE_URIS = {"http": "./build/restore-http.zip", "event": "./build/restore-event.zip"}


def services():
    template = yaml.safe_load((ROOT / "template.yaml").read_text())
    assert template["edition"] and template["services"]
    return template["services"]


def test_every_function_has_runtime_memory_timeout_agency_and_code():
    for name, service in services().items():
        function = service["props"]["function"]
        for key in ("functionName", "runtime", "handler", "memorySize", "timeout", "agencyName"):
            assert function.get(key), f"{name}: {key} missing"
        assert 3 <= function["timeout"] <= 900
        assert function["codeType"] == "zip"


def functions_by_kind() -> dict[str, dict]:
    """``{"http": …, "event": …}``: the HTTP function and the Python event function."""
    functions = [s["props"]["function"] for s in services().values()]
    http = [f for f in functions if f["runtime"] == "http"]
    event = [f for f in functions if f["runtime"].startswith("Python")]
    assert len(http) == 1 and len(event) == 1, [f["runtime"] for f in functions]
    return {"http": http[0], "event": event[0]}


def test_runtimes_match_requires_python_and_the_package_target():
    """One runtime: the Makefile's PYTHON_VERSION is requires-python's floor and the event
    function's runtime (Python3.9 there once deployed code that could not run)."""
    version = target_version()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(rf'^requires-python = ">={re.escape(version)}"$', pyproject, re.M)
    assert f'target-version = "py{version.replace(".", "")}"' in pyproject
    assert functions_by_kind()["event"]["runtime"] == f"Python{version}"


def test_each_function_deploys_its_own_zip():
    for kind, function in functions_by_kind().items():
        assert function["code"]["codeUri"] == CODE_URIS[kind]


def test_handlers_exist_in_the_built_zips(built_packages):
    functions = functions_by_kind()
    assert functions["http"]["handler"] == "bootstrap"
    assert "bootstrap" in names(built_packages["http"])
    module, _, attribute = functions["event"]["handler"].partition(".")
    assert f"{module}.py" in names(built_packages["event"])
    index = zipfile.ZipFile(built_packages["event"]).read(f"{module}.py").decode()
    assert re.search(rf"^from handler\.main import {attribute}\b", index, re.M)


def test_bootstrap_serves_the_documented_way():
    """FunctionGraph's contract: 127.0.0.1:8000, its runtime's interpreter, unbuffered."""
    bootstrap = ROOT / "handler" / "bootstrap"
    assert bootstrap.stat().st_mode & stat.S_IXUSR
    text = bootstrap.read_text()
    assert "--source handler/main.py --target restore" in text
    assert '--host 127.0.0.1 --port "${BOOTSTRAP_PORT:-8000}"' in text
    assert "/opt/function/runtime/python$target_python_version/rtsp/python/bin/python3" in text
    assert 'exec "$python" -u -m functions_framework' in text


def test_every_setting_the_template_sets_is_one_the_code_reads():
    for name, service in services().items():
        environment = service["props"]["function"]["environmentVariables"]
        unknown = set(environment) - set(SETTINGS_DOC)
        assert not unknown, f"{name} sets settings the code never reads: {unknown}"
        assert "OBS_ENDPOINT" in environment
        assert len(environment) <= 20, f"{name}: FunctionGraph allows at most 20 variables"


def event_service() -> dict:
    (service,) = [
        s for s in services().values() if s["props"]["function"]["runtime"].startswith("Python")
    ]
    return service


def timer_trigger() -> dict:
    trigger = event_service()["props"].get("trigger")
    assert trigger and trigger["triggerTypeCode"] == "TIMER", trigger
    return trigger


def test_the_event_function_has_an_active_timer_trigger_for_the_sweep():
    """The fgs component's TIMER fields; the user event is overrides the sweep accepts."""
    trigger = timer_trigger()
    assert trigger["status"] == "ACTIVE"
    data = trigger["eventData"]
    assert set(data) == {"name", "scheduleType", "schedule", "userEvent"}
    assert re.fullmatch(r"[A-Za-z][\w-]{0,63}", data["name"])
    assert data["scheduleType"] == "Rate" and re.fullmatch(r"[1-9]\d*[mhd]", data["schedule"])
    SweepRequest().overridden(parse_overrides(data["userEvent"]))  # raises if it would be a 400


def test_only_the_event_function_has_a_timer():
    """FunctionGraph cannot invoke HTTP functions with a timer (POST /sweep serves them)."""
    for service in services().values():
        trigger = service["props"].get("trigger") or {}
        if service["props"]["function"]["runtime"] == "http":
            assert trigger.get("triggerTypeCode") != "TIMER"


def setting(environment: dict, name: str) -> float:
    return parse_duration(str(environment.get(name, SETTINGS_DOC[name][0])), name, minimum=0)


def test_the_sweep_lookback_covers_the_timer_interval_and_dedupe_remembers_it():
    """A lookback shorter than the interval misses failures between sweeps; one longer than
    the dedupe retention could list a failure whose refused restore has been forgotten."""
    environment = event_service()["props"]["function"]["environmentVariables"]
    assert "RESTORE_SWEEP_LOOKBACK" in environment
    interval = parse_duration(timer_trigger()["eventData"]["schedule"], "schedule", minimum=60)
    lookback = setting(environment, "RESTORE_SWEEP_LOOKBACK")
    assert interval <= lookback <= setting(environment, "RESTORE_DEDUPE_RETENTION")
    assert event_service()["props"]["function"]["timeout"] < interval  # sweeps rarely overlap


@pytest.mark.parametrize("name", ["RESTORE_SWEEP_GRAPHS", "RESTORE_SWEEP_MAX_RESTORES"])
def test_the_event_function_states_the_sweep_scope_and_cap(name):
    assert name in event_service()["props"]["function"]["environmentVariables"]


def test_secrets_are_references_never_inline():
    secret_names = (
        "OBS_SECRET_ACCESS_KEY",
        "OBS_ACCESS_KEY_ID",
        "OBS_SECURITY_TOKEN",
        "RESTORE_AUTH_TOKEN",
        "RESTORE_STATE_URL",
    )
    for service in services().values():
        environment = service["props"]["function"]["environmentVariables"]
        for name in secret_names:
            if name in environment:
                assert environment[name] == f"${{env({name})}}", name


def test_the_http_function_has_a_url_trigger():
    (http,) = [s for s in services().values() if s["props"]["function"]["runtime"] == "http"]
    assert http["props"]["trigger"]["triggerTypeCode"] == "APIG"


def test_bootstrap_is_a_posix_shell_script():
    first_line = (ROOT / "handler" / "bootstrap").read_text().splitlines()[0]
    assert first_line == "#!/bin/sh" and os.access(ROOT / "handler" / "bootstrap", os.X_OK)
