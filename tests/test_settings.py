"""Settings: read once, validated, errors name the variable and never echo a secret."""

from __future__ import annotations

import pytest

from handler.redaction import redact_url
from handler.settings import SETTINGS_DOC, Settings, SettingsError, load_settings

BASE = {"OBS_ENDPOINT": "obs.cn-north-4.myhuaweicloud.com"}


def test_defaults_are_secure_and_documented():
    settings = load_settings(BASE)
    assert settings.endpoint == "https://obs.cn-north-4.myhuaweicloud.com"
    assert (settings.auth_token, settings.allow_unauthenticated, settings.dry_run) == (
        None,
        False,
        False,
    )
    assert settings.state_url.startswith("sqlite:///")
    assert (settings.max_restores, settings.budget_window) == (3, 86400.0)
    assert settings.graph_allowed("anything")


def test_every_setting_read_is_documented():
    import inspect

    from handler import settings as module

    source = inspect.getsource(module.load_settings) + inspect.getsource(module._sink)
    source += inspect.getsource(module._verify) + inspect.getsource(module._log_level)
    read = {name for name in SETTINGS_DOC if f'"{name}"' in source}
    assert read == set(SETTINGS_DOC)


def test_seed_credential_names_are_aliases():
    settings = load_settings({**BASE, "AccessKeyID": "AK", "SecretAccessKey": "SK"})
    assert (settings.access_key_id, settings.secret_access_key) == ("AK", "SK")
    preferred = load_settings(
        {
            **BASE,
            "AccessKeyID": "AK",
            "SecretAccessKey": "SK",
            "OBS_ACCESS_KEY_ID": "AK2",
            "OBS_SECRET_ACCESS_KEY": "SK2",
        }
    )
    assert preferred.access_key_id == "AK2"


def test_sink_falls_back_to_k_sink():
    assert load_settings({**BASE, "K_SINK": "http://sink"}).event_sink == "http://sink"
    both = {**BASE, "K_SINK": "http://k", "RESTORE_EVENT_SINK": "http://mine"}
    assert load_settings(both).event_sink == "http://mine"


def test_durations_and_allowlist():
    settings = load_settings(
        {
            **BASE,
            "RESTORE_BUDGET_WINDOW": "2h",
            "RESTORE_CLAIM_TTL": "90",
            "RESTORE_GRAPH_ALLOWLIST": "etl-*, billing",
        }
    )
    assert (settings.budget_window, settings.claim_ttl) == (7200.0, 90.0)
    assert settings.graph_allowed("etl-nightly") and settings.graph_allowed("billing")
    assert not settings.graph_allowed("billing-2")


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({}, "OBS_ENDPOINT"),
        ({"OBS_ENDPOINT": "ftp://x"}, "OBS_ENDPOINT"),
        ({**BASE, "RESTORE_DRY_RUN": "maybe"}, "RESTORE_DRY_RUN"),
        ({**BASE, "RESTORE_MAX_RESTORES": "three"}, "RESTORE_MAX_RESTORES"),
        ({**BASE, "RESTORE_MAX_RESTORES": "0"}, "RESTORE_MAX_RESTORES"),
        ({**BASE, "RESTORE_BUDGET_WINDOW": "soon"}, "RESTORE_BUDGET_WINDOW"),
        ({**BASE, "RESTORE_STATE_URL": "postgres://db"}, "RESTORE_STATE_URL"),
        ({**BASE, "RESTORE_EVENT_SINK": "not a url"}, "RESTORE_EVENT_SINK"),
        ({**BASE, "K_SINK": "ftp://x"}, "K_SINK"),
        ({**BASE, "LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({**BASE, "OBS_CA_BUNDLE": "/no/such/file"}, "OBS_CA_BUNDLE"),
        ({**BASE, "OBS_ACCESS_KEY_ID": "AK"}, "OBS_SECRET_ACCESS_KEY"),
        ({**BASE, "OBS_MAX_ATTEMPTS": "0"}, "OBS_MAX_ATTEMPTS"),
    ],
)
def test_invalid_settings_name_the_variable(environ, variable):
    with pytest.raises(SettingsError) as error:
        load_settings(environ)
    assert error.value.variable == variable and str(error.value).startswith(variable)


def test_secrets_stay_out_of_repr_errors_and_the_startup_view():
    secrets = {
        "OBS_ACCESS_KEY_ID": "AKIDVERYLONGKEY",
        "OBS_SECRET_ACCESS_KEY": "sk-SECRET-1",
        "OBS_SECURITY_TOKEN": "tok-SECRET-2",
        "RESTORE_AUTH_TOKEN": "auth-SECRET-3",
        "RESTORE_STATE_URL": "redis://:pw-SECRET-4@127.0.0.1:6379/0",
    }
    settings = load_settings({**BASE, **secrets})
    shown = repr(settings) + str(settings.redacted())
    for name in ("sk-SECRET-1", "tok-SECRET-2", "auth-SECRET-3", "pw-SECRET-4", "AKIDVERYLONGKEY"):
        assert name not in shown
    with pytest.raises(SettingsError) as error:
        load_settings({**BASE, "OBS_ACCESS_KEY_ID": "AKIDVERYLONGKEY"})
    assert "AKIDVERYLONGKEY" not in str(error.value)


def test_redact_url():
    assert redact_url("redis://user:pw@host:1/0") == "redis://user:***@host:1/0"
    assert redact_url("sqlite:///tmp/x.db") == "sqlite:///tmp/x.db"


def test_settings_is_immutable():
    settings = Settings(endpoint="https://x")
    with pytest.raises(AttributeError):
        settings.dry_run = True  # type: ignore[misc]
