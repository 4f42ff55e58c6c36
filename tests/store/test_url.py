"""State store URLs: every form is checked in full before anything is opened, never echoed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from handler.store import open_store, redact_url


def test_unknown_schemes_are_rejected_by_name_without_echoing_the_url():
    with pytest.raises(ValueError, match="'postgres'") as info:
        open_store("postgres://user:hunter2-secret@db/state")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ValueError, match="no scheme"):
        open_store("/tmp/state.db")
    with pytest.raises(ValueError, match="memory"):
        open_store("memory://somewhere")


def test_sqlite_urls_follow_the_sqlalchemy_convention(tmp_path, monkeypatch):
    absolute = tmp_path / "abs" / "state.db"
    store = open_store(f"sqlite:///{absolute}")  # -> sqlite:////tmp/...: four slashes
    assert absolute.exists()
    assert store.describe == f"sqlite:///{absolute}"
    store.close()

    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///rel/state.db")
    assert (tmp_path / "rel" / "state.db").exists()
    assert store.describe == f"sqlite:///{tmp_path / 'rel' / 'state.db'}"
    store.close()

    for bad in ("sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite://host/x.db"):
        with pytest.raises(ValueError):
            open_store(bad)
    with pytest.raises(ValueError, match="'journal'"):
        open_store(f"sqlite:///{absolute}?journal=off")
    with pytest.raises(ValueError, match="busy_timeout"):
        open_store(f"sqlite:///{absolute}?busy_timeout=soon")


def test_open_store_validates_the_whole_url_without_importing_redis():
    import subprocess

    probe = (
        "import sys\n"
        "from handler.store import validate_state_url\n"
        "for url in ('redis://127.0.0.1:notaport/0', 'redis://h/0?bogus=1'):\n"
        "    try:\n"
        "        validate_state_url(url)\n"
        "    except ValueError as exc:\n"
        "        print(exc)\n"
        "validate_state_url('rediss://:pw@h:6380/1?socket_timeout=0.5')\n"
        "print('redis' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True
    )
    lines = done.stdout.splitlines()
    assert "port" in lines[0] and "'bogus'" in lines[1] and lines[2] == "False"
    with pytest.raises(ValueError, match="port"):
        open_store("redis://127.0.0.1:99999/0")
    with pytest.raises(ValueError, match="'busy'"):
        open_store("sqlite:////tmp/never-created.db?busy=1")
    assert not Path("/tmp/never-created.db").exists()


def test_redact_url_masks_passwords_and_drops_the_query():
    assert redact_url("redis://:p%40ss@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact_url("rediss://app:secret@[::1]:6380/2") == "rediss://app:***@[::1]:6380/2"
    assert redact_url("redis://cache/0?password=secret") == "redis://cache/0"
    assert redact_url("redis://user@cache") == "redis://user@cache"


@pytest.mark.parametrize("value", ["off", "extra", ""])
def test_a_bad_synchronous_option_is_refused_by_name(tmp_path, value):
    with pytest.raises(ValueError, match="synchronous must be normal or full"):
        open_store(f"sqlite:///{tmp_path / 'x.db'}?synchronous={value}")
