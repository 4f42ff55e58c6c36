"""The installed ``obs-workflow-restore`` script: its help, and the two commands that start a
server (``emulator``, ``serve``) in a process of their own."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import AK, SK
from tests.function_server import ROOT, free_port

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


def listening_lines(command: list[str], environment: dict[str, str]) -> list[str]:
    """The server's standard error up to its "listening on" line (bounded), then stop it."""
    process = subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stderr], daemon=True
    ).start()
    seen: list[str] = []
    give_up = time.monotonic() + 30
    try:
        while not any("listening on" in line for line in seen):
            seen.append(lines.get(timeout=max(0.1, give_up - time.monotonic())).rstrip("\n"))
    finally:
        process.terminate()
        process.wait(timeout=10)
    return seen


@pytest.mark.parametrize(
    ("settings", "auth"),
    [
        ({"RESTORE_AUTH_TOKEN": "change-me"}, "auth: token"),
        (
            {"RESTORE_ALLOW_UNAUTHENTICATED": "true"},
            "auth: OFF (RESTORE_ALLOW_UNAUTHENTICATED=true)",
        ),
        ({}, "auth: token not set - every POST is refused with 403 (set RESTORE_AUTH_TOKEN)"),
    ],
)
@pytest.mark.parametrize("launcher", ["serve", "functions-framework"])
def test_a_server_says_where_it_listens_and_whether_posts_need_the_token(
    cli_env, settings, auth, launcher
):
    """Before the first request: with no token every POST gets 403, and the line says so."""
    port = free_port()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("FUNCTION_", "RESTORE_A"))},
        **settings,
    }
    if launcher == "serve":
        command = [SCRIPT, "serve", "--port", str(port)]
    else:
        framework = str(Path(sys.executable).parent / "functions-framework")
        command = [framework, "--source", "handler/main.py", "--target", "restore",
                   "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    lines = listening_lines(command, environment)
    assert lines[-1] == f"obs-workflow-restore: listening on http://127.0.0.1:{port}, {auth}"
    assert "change-me" not in "\n".join(lines)
