"""template.yaml matches the code: handlers exist, every setting it sets is one the code reads."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml

from handler.settings import SETTINGS_DOC

ROOT = Path(__file__).resolve().parent.parent


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
        assert function["code"]["codeUri"] == "./build/package"


def test_handlers_point_at_code_that_exists():
    functions = {
        s["props"]["function"]["runtime"]: s["props"]["function"] for s in services().values()
    }
    assert functions["http"]["handler"] == "bootstrap"
    bootstrap = ROOT / "handler" / "bootstrap"
    assert bootstrap.stat().st_mode & stat.S_IXUSR
    text = bootstrap.read_text()
    assert "--source handler/main.py --target restore" in text and "--port 8000" in text
    event = next(f for runtime, f in functions.items() if runtime.startswith("Python"))
    assert event["handler"] == "index.handler"
    makefile = (ROOT / "Makefile").read_text()
    assert "from handler.main import handler" in makefile  # `make package` writes index.py


def test_every_setting_the_template_sets_is_one_the_code_reads():
    for name, service in services().items():
        environment = service["props"]["function"]["environmentVariables"]
        unknown = set(environment) - set(SETTINGS_DOC)
        assert not unknown, f"{name} sets settings the code never reads: {unknown}"
        assert "OBS_ENDPOINT" in environment


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
    triggers = [s["props"].get("trigger") for s in services().values()]
    assert any(t and t["triggerTypeCode"] == "APIG" for t in triggers)


def test_bootstrap_is_a_posix_shell_script():
    first_line = (ROOT / "handler" / "bootstrap").read_text().splitlines()[0]
    assert first_line == "#!/bin/sh" and os.access(ROOT / "handler" / "bootstrap", os.X_OK)
