"""`make demo` keeps working: the whole job end to end on loopback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


# A shell left configured for a real deployment (or a broken one): none of it may reach the demo.
CALLERS_SETTINGS = {
    "OBS_ENDPOINT": "http://127.0.0.1:9",
    "OBS_ACCESS_KEY_ID": "AK-of-the-shell",
    "OBS_SECRET_ACCESS_KEY": "SK-of-the-shell",
    "OBS_CA_BUNDLE": "/no/such/bundle.pem",
    "RESTORE_STATE_URL": "redis://127.0.0.1:1/0",
    "RESTORE_DRY_RUN": "true",
    "RESTORE_GRAPH_ALLOWLIST": "some-other-graph",
    "RESTORE_MAX_RESTORES": "not-a-number",
    "RESTORE_AUTH_TOKEN": "token-of-the-shell",
    "K_SINK": "http://127.0.0.1:9/sink",
    "LOG_LEVEL": "ERROR",
    "FUNCTION_SIGNATURE_TYPE": "cloudevent",
}


def run_demo(arguments: list[str], shell: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "handler.devtools.demo", *arguments],
        env={**os.environ, **shell},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_demo_on_the_obs_api_restores_once_and_reports_the_redelivery_as_duplicate():
    done = run_demo(["--api", "obs"], CALLERS_SETTINGS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"outcome": "restored"' in done.stdout
    assert "the execution is now RUNNING" in done.stdout
    assert '"outcome": "duplicate"' in done.stdout
    assert "OBS saw 1 restore call(s)" in done.stdout
    assert "demo-secret-key" not in done.stdout + done.stderr


def test_the_demo_shows_the_dwr_api_by_default_and_says_how_long_it_took():
    """DWR is the API of an account opened today; `make demo` runs this without arguments."""
    shell = {
        **CALLERS_SETTINGS,
        "WORKFLOW_API": "obs",
        "DWR_REGION": "cn-south-1",
        "DWR_PROJECT_ID": "project-of-the-shell",
        "HUAWEICLOUD_SDK_AK": "AK-of-the-shell",
    }
    done = run_demo([], shell)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "DWR emulator on http://127.0.0.1:" in done.stdout
    assert '"outcome": "restored"' in done.stdout
    assert '"executionUrn": "urn:dwr:' in done.stdout
    assert "the execution is now running" in done.stdout
    assert '"outcome": "duplicate"' in done.stdout
    assert "DWR saw 1 restore call(s)" in done.stdout
    assert "demo-secret-key" not in done.stdout + done.stderr
    assert re.search(r"^demo succeeded in \d+\.\d s$", done.stdout, re.M)


# What `pip install -e '.[test]'` adds and `make demo` must do without (pyproject's test extra).
TEST_EXTRAS = ("pytest", "pytest_httpserver", "hypothesis", "obs", "huaweicloudsdkcore",
               "huaweicloudsdkdwr", "redis", "ruff")  # fmt: skip
BLOCKER = f"""
import sys

class _Absent:
    # As if the test extras were not installed: `make demo` installs without them.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {TEST_EXTRAS!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not installed by make demo)")
        return None

sys.meta_path.insert(0, _Absent())
"""


def test_make_demo_installs_only_what_the_demo_runs(tmp_path):
    """Its own stamp installs the project without extras, and the demo - emulator, function
    server and all - runs with every test extra and SDK absent."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("$(DEMO_STAMP): pyproject.toml") :].split("\n\n")[0]
    assert "pip install --quiet -e .\n" in recipe + "\n" and "[test]" not in recipe
    assert re.search(r"^demo: .*\$\(DEMO_STAMP\)", makefile, re.M)
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    done = run_demo([], {"PYTHONPATH": str(tmp_path)})  # the function server inherits it
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"outcome": "duplicate"' in done.stdout


def test_the_outage_demo_holds_the_storm_with_the_breaker_and_restores_every_held_failure_once():
    """`make demo SCENARIO=outage`: what it prints is what happened (its own checks decide
    the exit status, and the counts it prints are checked against each other here)."""
    done = run_demo(["--scenario", "outage"], CALLERS_SETTINGS)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "first wave, 12 failure events: 12 restored" in out
    assert re.search(r"^    WARNING breaker opened for graph nightly-etl: 3 executions", out, re.M)
    deferred = re.search(
        r"second wave, 12 failure events again: (\d+) restored, (\d+) deferred", out
    )
    assert deferred and int(deferred[1]) + int(deferred[2]) == 12 and int(deferred[2]) > 0
    assert re.search(r"a deferred answer says: breaker open since \S+Z, next canary at \S+Z", out)
    assert re.search(r"canary: run-\d\d restored", out)
    assert re.search(r"^    INFO breaker closed for graph nightly-etl: canary run-\d\d", out, re.M)
    assert out.index("breaker opened") < out.index("is fixed") < out.index("breaker closed")
    assert "held failures restored: 11 (" in out  # the canary is the twelfth
    assert "12 of 12 running; after the fix each was restored exactly once." in out
    sent = re.search(r"broken: (\d+) with the breaker, (\d+) without one", out)
    assert sent and int(sent[1]) == 12 + int(deferred[1]) and int(sent[2]) == 24
    assert "demo-secret-key" not in out + done.stderr
    assert re.search(r"^demo succeeded in \d+\.\d s$", out, re.M)


def test_the_give_up_demo_shows_one_message_at_the_emulators_smn_topic():
    """`make demo SCENARIO=give-up`: the budget is spent, and the operators are told once."""
    done = run_demo(["--scenario", "give-up"], CALLERS_SETTINGS)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "the failure event is answered restored; then the run fails again" in out
    assert '"outcome": "budget_exhausted"' in out
    assert "SMN topic workflow-restore-alerts received 1 message(s)" in out
    assert "subject: [obs-workflow-restore] gave up on nightly-etl/run-20261127-0200" in out
    assert "--execution run-20261127-0200 --force" in out  # what the operator can do next
    assert "demo-secret-key" not in out + done.stderr


def test_the_give_up_demo_refuses_the_obs_api_with_a_reason():
    """Only the DWR emulator serves SMN: asked for OBS, the demo says so and fails."""
    done = run_demo(["--scenario", "give-up", "--api", "obs"], CALLERS_SETTINGS)
    assert done.returncode == 1
    assert "needs --api dwr" in done.stderr
