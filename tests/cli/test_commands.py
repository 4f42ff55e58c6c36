"""The installed ``obs-workflow-restore`` script: its help, and the two commands that start a
server (``emulator``, ``serve``) in a process of their own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.conftest import AK, SK
from tests.function_server import free_port

SCRIPT = str(Path(sys.executable).parent / "obs-workflow-restore")


def test_help_lists_every_command():
    done = subprocess.run(
        [SCRIPT, "--help"], capture_output=True, text=True, timeout=30, check=True
    )
    for command in ("restore", "replay", "sweep", "serve", "emulator", "state"):
        assert command in done.stdout


def test_python_dash_m_handler_cli_runs_the_same_command_line():
    """``python -m handler.cli`` (the package's __main__) is the console script's twin."""
    done = subprocess.run(
        [sys.executable, "-m", "handler.cli", "sweep", "--since", "6h"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "obs-workflow-restore: error: unrecognized arguments: --since 6h (see --help)\n"
    )


def test_emulator_command_starts_a_seeded_emulator():
    command = [
        SCRIPT,
        "emulator",
        "--port",
        "0",
        "--execution",
        "g/e=FAILED",
        "--access-key",
        AK,
        "--secret-key",
        SK,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        from handler.client import WorkflowClient

        with WorkflowClient(AK, SK, server=url) as client:
            assert (
                client.getWorkflowExecution("e", "g").body.executionInfo["execution_state"]
                == "FAILED"
            )
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert SK not in process.stderr.read()


def test_serve_runs_the_http_function(cli_env):
    port = free_port()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_")},
        "RESTORE_ALLOW_UNAUTHENTICATED": "true",
    }
    process = subprocess.Popen(
        [SCRIPT, "serve", "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        give_up = time.monotonic() + 30
        while True:
            try:
                health = requests.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < give_up and process.poll() is None
                time.sleep(0.1)
        assert health.json()["status"] == "ok"
        answer = requests.post(
            f"http://127.0.0.1:{port}/",
            timeout=10,
            json={"graphName": "graph-1", "executionName": "exec-1"},
        )
        assert answer.json()["summary"] == {"restored": 1}
    finally:
        process.terminate()
        process.wait(timeout=10)
