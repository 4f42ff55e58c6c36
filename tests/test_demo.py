"""`make demo` keeps working: the whole job end to end on loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_restores_once_and_reports_the_redelivery_as_duplicate():
    done = subprocess.run(
        [sys.executable, "-m", "handler.demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"outcome": "restored"' in done.stdout
    assert "the execution is now RUNNING" in done.stdout
    assert '"outcome": "duplicate"' in done.stdout
    assert "OBS saw 1 restore call(s)" in done.stdout
    assert "demo-secret-key" not in done.stdout + done.stderr
