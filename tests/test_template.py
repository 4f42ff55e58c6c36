"""template.yaml deploys as written: every field is one the Serverless Devs ``fgs`` component
reads, its code folders are what ``make package`` builds, nothing makes it prompt, and the
functions it deploys start with the settings it gives them (DWR by default).

What the component reads is taken from its source (repository ``zy-linn/fgs-component``):
``src/services/deploy.service.ts`` (props, region, credentials), ``src/services/
function.service.ts`` with ``src/interface/function.interface.ts`` (function fields;
``code.codeUri`` goes to ``startZip``, which lists it with ``fs.readdirSync`` - a folder - and
writes ``<codeUri>/index.zip``), ``src/services/trigger.service.ts`` with
``src/interface/trigger.interface.ts`` (trigger fields; an APIG trigger without ``groupName``
looks for a made-up ``APIG_xxxxxx`` group and asks on the terminal whether to create it). A
key outside these sets is ignored by the component without a word - ``prtocol`` once was.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from pathlib import Path

import pytest
import yaml

from handler.settings import DWR_REGION_HOSTS, SETTINGS_DOC, load_settings, parse_duration
from handler.sweep import SweepRequest, parse_overrides
from tests.packages import names, target_version

pytest_plugins = ["tests.package_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_TEXT = (ROOT / "template.yaml").read_text()

TEMPLATE_KEYS = {"edition", "name", "access", "vars", "services"}
SERVICE_PROPS = {"region", "function", "trigger"}
# IFunctionProps and what FunctionService sends (aliases: userData/environmentVariables,
# xrole/agencyName).
FUNCTION_FIELDS = {
    "functionName", "runtime", "codeType", "package", "codeUrl", "code", "handler",
    "memorySize", "timeout", "description", "enterpriseProjectId", "xrole", "agencyName",
    "appXrole", "environmentVariables", "userData", "encryptedUserData", "tags", "vpcId",
    "subnetId", "funcVpc", "networkController", "domainNames", "dependVersionList",
    "concurrency", "concurrentNum", "ltsGroupId", "ltsGroupName", "ltsStreamId",
    "ltsStreamName", "initializerHandler", "initializerTimeout", "enableDynamicMemory",
}  # fmt: skip
TRIGGER_FIELDS = {"triggerTypeCode", "status", "eventTypeCode", "eventData"}
EVENT_DATA_FIELDS = {  # IApigProps, ITimerProps
    "APIG": {"name", "groupName", "auth", "protocol", "timeout"},
    "TIMER": {"name", "scheduleType", "schedule", "userEvent"},
}
MEMORY_SIZES = {128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096}
# Values only the deploying shell has; the template refers to them as ${env(NAME)}.
SECRETS = ("OBS_SECRET_ACCESS_KEY", "OBS_SECURITY_TOKEN", "RESTORE_AUTH_TOKEN", "RESTORE_STATE_URL")


VARS = yaml.safe_load(TEMPLATE_TEXT)["vars"]


def template() -> dict:
    return yaml.safe_load(TEMPLATE_TEXT)


def services() -> dict:
    return template()["services"]


def functions() -> dict[str, dict]:
    return {name: service["props"]["function"] for name, service in services().items()}


def functions_by_kind() -> dict[str, dict]:
    """``{"http": …, "event": …}``: the HTTP function and the Python event function."""
    http = [f for f in functions().values() if f["runtime"] == "http"]
    event = [f for f in functions().values() if f["runtime"].startswith("Python")]
    assert len(http) == 1 and len(event) == 1, [f["runtime"] for f in functions().values()]
    return {"http": http[0], "event": event[0]}


def variables(function: dict) -> dict[str, str]:
    """Every variable the function gets: plain and encrypted (both reach its environment)."""
    plain, encrypted = function["environmentVariables"], function.get("encryptedUserData") or {}
    assert not set(plain) & set(encrypted), set(plain) & set(encrypted)
    return {**plain, **encrypted}


def resolved(function: dict, shell: dict[str, str]) -> dict[str, str]:
    """The function's variables as deployed: ${vars.…} from the template, ${env(…)} from
    ``shell`` (a reference the shell does not have is an error, as it would be a gap)."""
    template_vars = template()["vars"]
    out = {}
    for name, value in variables(function).items():
        value = re.sub(r"\$\{vars\.(\w+)\}", lambda m: str(template_vars[m.group(1)]), str(value))
        out[name] = re.sub(r"\$\{env\((\w+)\)\}", lambda m: shell[m.group(1)], value)
    return out


SHELL = {
    "DWR_PROJECT_ID": "0123456789abcdef0123456789abcdef",
    "OBS_ACCESS_KEY_ID": "AK-of-the-deploying-shell",
    "OBS_SECRET_ACCESS_KEY": "SK-of-the-deploying-shell",
    "RESTORE_AUTH_TOKEN": "token-of-the-deploying-shell",
    "RESTORE_STATE_URL": "redis://:password@dcs.internal:6379/0",
}


# --------------------------------------------------------------------- what the component reads


def test_the_template_uses_only_fields_the_fgs_component_reads():
    assert set(template()) <= TEMPLATE_KEYS and template()["edition"]
    for name, service in services().items():
        assert set(service) == {"component", "props"} and service["component"] == "fgs", name
        props = service["props"]
        assert set(props) <= SERVICE_PROPS and props["region"], name  # no region: it stops
        assert set(props["function"]) <= FUNCTION_FIELDS, set(props["function"]) - FUNCTION_FIELDS
        trigger = props.get("trigger")
        if trigger:
            assert set(trigger) <= TRIGGER_FIELDS, set(trigger) - TRIGGER_FIELDS
            allowed = EVENT_DATA_FIELDS[trigger["triggerTypeCode"]]
            assert set(trigger["eventData"]) <= allowed, set(trigger["eventData"]) - allowed
            assert trigger.get("status", "ACTIVE") in ("ACTIVE", "DISABLED")


def test_the_deploy_names_its_credentials_alias():
    """Without credentials the component stops ("Run $s config add"): ``access`` names the
    alias ``s config add`` stores them under (the README's first deploy step)."""
    assert template()["access"] == "default"


def test_every_function_has_runtime_memory_timeout_agency_and_code():
    for name, function in functions().items():
        for key in ("functionName", "runtime", "handler", "timeout", "agencyName"):
            assert function.get(key), f"{name}: {key} missing"
        assert function["memorySize"] in MEMORY_SIZES, name
        assert 3 <= function["timeout"] <= 900
        assert function["codeType"] == "zip" and function["code"]["codeUri"], name


def code_folder(function: dict, build: Path) -> Path:
    """Where ``codeUri`` points, with the repository's ``build/`` being ``build``."""
    uri = function["code"]["codeUri"]
    assert uri.startswith("./build/") and not uri.endswith(".zip"), uri
    return build / uri.removeprefix("./build/")


def test_each_code_uri_is_a_folder_make_package_fills_with_its_zip(built_packages):
    """The component zips the folder's entries itself; what it zips must be the package."""
    build = built_packages["event"].parent
    for kind, function in functions_by_kind().items():
        folder = code_folder(function, build)
        assert folder.is_dir(), folder
        assert folder.with_name(folder.name + ".zip") == built_packages[kind]
        on_disk = {
            path.relative_to(folder).as_posix(): path
            for path in folder.rglob("*")
            if path.is_file()
        }
        with zipfile.ZipFile(built_packages[kind]) as archive:
            assert sorted(on_disk) == sorted(archive.namelist())
            for info in archive.infolist():
                path = on_disk[info.filename]
                assert path.read_bytes() == archive.read(info), info.filename
                assert stat.S_IMODE(path.stat().st_mode) == (info.external_attr >> 16) & 0o777
        assert "index.zip" not in on_disk  # the name the component writes (and deletes) there


def test_the_apig_trigger_runs_without_a_prompt_and_is_found_again_on_redeploy():
    """A named group (absent, the component makes a name up and asks whether to create it);
    ``name`` equal to the group's, because the component names the API after the group and
    finds the trigger on the next deploy by ``name``."""
    (http,) = [s for s in services().values() if s["props"]["function"]["runtime"] == "http"]
    trigger = http["props"]["trigger"]
    assert trigger["triggerTypeCode"] == "APIG"
    data = trigger["eventData"]
    group = re.sub(
        r"\$\{vars\.(\w+)\}", lambda m: template()["vars"][m.group(1)], data["groupName"]
    )
    assert re.fullmatch(r"[A-Za-z][\w]{2,63}", group), group
    assert data["name"] == data["groupName"]
    assert data["protocol"] in ("HTTP", "HTTPS") and data["auth"] in ("IAM", "App", "NONE")
    assert 1 <= data["timeout"] <= min(60000, http["props"]["function"]["timeout"] * 1000)


def test_the_template_says_no_field_is_misspelt_in_a_comment_either():
    assert "prtocol" not in TEMPLATE_TEXT and "(sic)" not in TEMPLATE_TEXT


# ------------------------------------------------------------------- what the functions start with


def test_the_template_deploys_dwr_by_default_in_one_of_its_regions():
    region = template()["vars"]["region"]
    assert region in DWR_REGION_HOSTS
    for name, function in functions().items():
        settings = load_settings(resolved(function, SHELL))
        assert settings.workflow_api == "dwr", name
        assert settings.endpoint == DWR_REGION_HOSTS[region]
        assert settings.project_id == SHELL["DWR_PROJECT_ID"]


def test_the_commented_obs_variant_starts_the_function_on_the_obs_api():
    """Each function says how to switch: the DWR lines out, the commented OBS_ENDPOINT in."""
    variant = re.findall(r"^ +# (OBS_ENDPOINT: \S+)$", TEMPLATE_TEXT, re.M)
    assert len(variant) == len(functions())
    ((obs_name, obs_value),) = yaml.safe_load(variant[0]).items()
    for function in functions().values():
        environment = {**resolved(function, SHELL)}
        del environment["DWR_REGION"], environment["DWR_PROJECT_ID"]
        region = template()["vars"]["region"]
        environment[obs_name] = obs_value.replace("${vars.region}", region)
        settings = load_settings(environment)
        assert settings.workflow_api == "obs"
        assert settings.endpoint == f"https://obs.{region}.myhuaweicloud.com"


def test_secrets_are_encrypted_references_never_inline_or_plain():
    for name, function in functions().items():
        plain, encrypted = function["environmentVariables"], function.get("encryptedUserData", {})
        for secret in SECRETS:
            assert secret not in plain, f"{name}: {secret} would be plain function configuration"
            if secret in encrypted:
                assert encrypted[secret] == f"${{env({secret})}}", secret
        for value in encrypted.values():
            assert re.fullmatch(r"\$\{env\(\w+\)\}", value), value
        assert "RESTORE_STATE_URL" in encrypted, name
    assert "RESTORE_AUTH_TOKEN" in functions_by_kind()["http"]["encryptedUserData"]


def test_an_encrypted_variable_that_does_not_arrive_stops_the_function_at_start():
    """RESTORE_REQUIRED_SETTINGS names every encrypted variable the function cannot do without,
    so a platform that left one out fails the start instead of defaulting (SQLite, 403s)."""
    for name, function in functions().items():
        environment = resolved(function, SHELL)
        required = environment["RESTORE_REQUIRED_SETTINGS"].split(",")
        assert set(required) <= set(function["encryptedUserData"]), name
        for missing in required:
            with pytest.raises(ValueError, match=missing):
                load_settings({k: v for k, v in environment.items() if k != missing})


def test_every_setting_the_template_sets_is_one_the_code_reads():
    for name, function in functions().items():
        environment = variables(function)
        unknown = set(environment) - set(SETTINGS_DOC)
        assert not unknown, f"{name} sets settings the code never reads: {unknown}"
        assert len(function["environmentVariables"]) <= 20, f"{name}: at most 20 variables"
        size = sum(len(k) + len(str(v)) for k, v in resolved(function, SHELL).items())
        assert size <= 4096, f"{name}: variables over 4 KB"


# ----------------------------------------------------------------------- runtime and packages


def test_runtimes_match_requires_python_and_the_package_target():
    """One runtime: the Makefile's PYTHON_VERSION is requires-python's floor and the event
    function's runtime (Python3.9 there once deployed code that could not run)."""
    version = target_version()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(rf'^requires-python = ">={re.escape(version)}"$', pyproject, re.M)
    assert f'target-version = "py{version.replace(".", "")}"' in pyproject
    assert functions_by_kind()["event"]["runtime"] == f"Python{version}"


def test_handlers_exist_in_the_built_packages(built_packages):
    kinds = functions_by_kind()
    assert kinds["http"]["handler"] == "bootstrap"
    assert "bootstrap" in names(built_packages["http"])
    module, _, attribute = kinds["event"]["handler"].partition(".")
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


def test_bootstrap_is_a_posix_shell_script():
    first_line = (ROOT / "handler" / "bootstrap").read_text().splitlines()[0]
    assert first_line == "#!/bin/sh" and os.access(ROOT / "handler" / "bootstrap", os.X_OK)


# ------------------------------------------------------------------------------------ triggers


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
    """The fgs component's TIMER fields; a name (absent, the component makes one up and the
    next deploy cannot find the trigger); the user event is overrides the sweep accepts."""
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


def test_the_template_says_how_asynchronous_retries_are_set_and_that_timers_are_asynchronous():
    """The component has no field for them, so the template points at the README's step."""
    assert "Max. Retries 3" in TEMPLATE_TEXT and "86400" in TEMPLATE_TEXT
    assert "synchronous and never retried" not in TEMPLATE_TEXT
