"""What the command line's tests share: the OBS emulator, the environment that points every
command at it, and the check that an error is one line on standard error."""

from __future__ import annotations

import pytest

from handler.devtools.emulator import Emulator
from tests.conftest import AK, SK


@pytest.fixture
def emulator():
    with Emulator(credentials={AK: SK}) as running:
        running.seed("graph-1", "exec-1", "FAILED")
        running.seed("graph-1", "exec-2", "SUCCESS")
        yield running


@pytest.fixture
def cli_env(emulator, tmp_path, monkeypatch):
    environment = {
        "OBS_ENDPOINT": emulator.url,
        "OBS_ACCESS_KEY_ID": AK,
        "OBS_SECRET_ACCESS_KEY": SK,
        "RESTORE_STATE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]
