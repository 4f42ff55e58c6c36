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
    """Each name the loader reads (``env.<reader>("NAME", ...)``) is a row of the table or an
    alias its row names, and each row is read."""
    import ast
    import inspect

    from handler import settings as module

    tree = ast.parse(inspect.getsource(module))
    read = {
        argument.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "env"
        for argument in node.args
        if isinstance(argument, ast.Constant) and isinstance(argument.value, str)
    }
    meanings = " ".join(meaning for _default, meaning in SETTINGS_DOC.values())
    undocumented = {
        name for name in read if name not in SETTINGS_DOC and f"`{name}`" not in meanings
    }
    assert undocumented == set()
    assert set(SETTINGS_DOC) <= read


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
        ({"WORKFLOW_API": "obs"}, "OBS_ENDPOINT"),
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


@pytest.mark.parametrize(
    ("state_url", "named"),
    [
        ("sqlite:////tmp/x.db?busy=1", "'busy'"),
        ("sqlite:////tmp/x.db?busy_timeout=soon", "busy_timeout"),
        ("sqlite:////tmp/x.db?mode=wr", "mode"),
        ("redis://127.0.0.1:notaport/0", "port"),
        ("redis://127.0.0.1:0/0", "port"),
        ("redis://127.0.0.1:65536/0", "port"),
        ("redis://127.0.0.1:6379/zero", "database index"),
        ("redis://:6379/0", "host"),
        ("redis://127.0.0.1:6379/0?socket_timeout=soon", "socket_timeout"),
        ("redis://127.0.0.1:6379/0?sockettimeout=1", "'sockettimeout'"),
        ("redis://127.0.0.1:6379/0?ssl_cert_reqs=none", "rediss://"),
        ("redis://cache/0?health_check_interval=0", "'health_check_interval'"),  # not documented
        ("memory://somewhere", "memory://"),
        ("postgres://db", "'postgres'"),
    ],
)
def test_the_whole_state_url_is_validated_at_load_time(state_url, named):
    with pytest.raises(SettingsError) as error:
        load_settings({**BASE, "RESTORE_STATE_URL": state_url})
    assert error.value.variable == "RESTORE_STATE_URL"
    assert str(error.value).startswith("RESTORE_STATE_URL: ") and named in str(error.value)


def test_a_bad_state_url_never_echoes_its_password():
    for state_url in (
        "redis://:pw-SECRET-5@127.0.0.1:notaport/0",
        "redis://user:pw-SECRET-5@127.0.0.1:6379/x",
        "redis://127.0.0.1:6379/0?password=pw-SECRET-5&bogus=1",
        "redis://127.0.0.1:6379/0?password=pw-SECRET-5&password=pw-SECRET-5",
    ):
        with pytest.raises(SettingsError) as error:
            load_settings({**BASE, "RESTORE_STATE_URL": state_url})
        assert "pw-SECRET-5" not in str(error.value)


@pytest.mark.parametrize(
    "state_url",
    [
        "memory://",
        "sqlite:////tmp/x.db",
        "sqlite:///relative/x.db?busy_timeout=0.5&mode=rw",
        "redis://127.0.0.1",
        "redis://:pw@cache:6380/15?socket_timeout=0.3&socket_connect_timeout=1",
        "rediss://user:pw@[::1]:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem",
    ],
)
def test_valid_state_urls_load(state_url):
    assert load_settings({**BASE, "RESTORE_STATE_URL": state_url}).state_url == state_url


def test_the_store_settings_need_no_obs_endpoint():
    from handler.settings import load_store_settings

    settings = load_store_settings(
        {"RESTORE_STATE_URL": "redis://:pw-SECRET-6@cache:6379/0", "RESTORE_BUDGET_WINDOW": "2h"}
    )
    assert (settings.state_url, settings.budget_window) == (
        "redis://:pw-SECRET-6@cache:6379/0",
        7200.0,
    )
    assert "pw-SECRET-6" not in repr(settings)
    assert load_store_settings({}).state_url.startswith("sqlite:///")
    with pytest.raises(SettingsError) as error:
        load_store_settings({"RESTORE_STATE_URL": "sqlite:////tmp/x.db?busy=1"})
    assert error.value.variable == "RESTORE_STATE_URL"


DWR = {"WORKFLOW_API": "dwr", "DWR_REGION": "cn-south-1", "DWR_PROJECT_ID": "0123abcd" * 4}


def test_dwr_is_chosen_with_a_region_or_an_endpoint_and_a_project():
    settings = load_settings(DWR)
    assert (settings.workflow_api, settings.endpoint) == (
        "dwr",
        "https://dwr.cn-south-1.myhuaweicloud.com",
    )
    assert settings.redacted()["workflowApi"] == "dwr"
    explicit = {**DWR, "DWR_REGION": "", "DWR_ENDPOINT": "http://127.0.0.1:9000"}
    assert load_settings(explicit).endpoint == "http://127.0.0.1:9000"


def test_huawei_cloud_sdk_names_are_aliases():
    environ = {
        "WORKFLOW_API": "dwr",
        "DWR_REGION": "cn-east-3",
        "HUAWEICLOUD_SDK_PROJECT_ID": "proj-1",
        "HUAWEICLOUD_SDK_AK": "AK",
        "HUAWEICLOUD_SDK_SK": "SK-secret",
        "HUAWEICLOUD_SDK_SECURITY_TOKEN": "TOKEN-secret",
    }
    settings = load_settings(environ)
    assert (settings.project_id, settings.access_key_id) == ("proj-1", "AK")
    assert (settings.secret_access_key, settings.security_token) == ("SK-secret", "TOKEN-secret")
    assert "SK-secret" not in repr(settings) and "TOKEN-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"WORKFLOW_API": "soap"}, "WORKFLOW_API"),
        ({**DWR, "DWR_PROJECT_ID": ""}, "DWR_PROJECT_ID"),
        ({**DWR, "DWR_PROJECT_ID": "a/../b"}, "DWR_PROJECT_ID"),
        ({**DWR, "DWR_REGION": "mars-1"}, "DWR_REGION"),
        ({**DWR, "DWR_ENDPOINT": "https://dwr.example"}, "DWR_REGION"),
        ({"WORKFLOW_API": "dwr", "DWR_PROJECT_ID": "p"}, "DWR_ENDPOINT"),
        ({**DWR, "OBS_ENDPOINT": "obs.example"}, "OBS_ENDPOINT"),
        ({**BASE, "WORKFLOW_API": "obs", "DWR_REGION": "cn-south-1"}, "DWR_REGION"),
        ({**BASE, "DWR_REGION": "cn-south-1"}, "WORKFLOW_API"),
    ],
)
def test_invalid_api_combinations_stop_at_start_naming_the_setting(environ, variable):
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)
    assert caught.value.variable == variable


def test_the_workflow_api_is_inferred_from_the_endpoint_settings():
    """DWR_ENDPOINT or DWR_REGION means DWR, OBS_ENDPOINT means OBS: the API an account
    opened today has is not the one a forgotten WORKFLOW_API would pick."""
    region_only = {"DWR_REGION": "cn-east-3", "DWR_PROJECT_ID": "p1"}
    assert load_settings(region_only).workflow_api == "dwr"
    endpoint_only = {"DWR_ENDPOINT": "http://127.0.0.1:9000", "DWR_PROJECT_ID": "p1"}
    assert load_settings(endpoint_only).workflow_api == "dwr"
    assert load_settings(BASE).workflow_api == "obs"


def test_an_explicit_workflow_api_wins_over_the_inference():
    assert load_settings({**DWR, "WORKFLOW_API": "DWR"}).workflow_api == "dwr"
    with pytest.raises(SettingsError) as caught:  # it decides, and the other API's setting
        load_settings({"WORKFLOW_API": "obs", "DWR_REGION": "cn-east-3"})  # is named
    assert caught.value.variable == "DWR_REGION"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({}, ("DWR_REGION", "DWR_ENDPOINT", "OBS_ENDPOINT")),
        ({"LOG_LEVEL": "INFO", "DWR_PROJECT_ID": "p1"}, ("DWR_REGION", "OBS_ENDPOINT")),
        ({**BASE, "DWR_ENDPOINT": "https://dwr.example", "DWR_PROJECT_ID": "p"}, ("DWR_ENDPOINT",)),
        ({**BASE, **DWR, "WORKFLOW_API": ""}, ("OBS_ENDPOINT", "DWR_REGION")),
    ],
)
def test_no_endpoint_or_both_apis_stop_the_start_naming_the_variables(environ, named):
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)
    assert caught.value.variable == "WORKFLOW_API"
    for name in named:
        assert name in str(caught.value)


def test_a_required_setting_that_did_not_arrive_stops_the_start_naming_it():
    """The template lists its encrypted variables: one the platform left out is an error at
    start, not a quiet fallback to per-instance SQLite."""
    required = {**BASE, "RESTORE_REQUIRED_SETTINGS": "RESTORE_STATE_URL, RESTORE_AUTH_TOKEN"}
    with pytest.raises(SettingsError) as caught:
        load_settings({**required, "RESTORE_AUTH_TOKEN": "token-secret-1"})
    assert caught.value.variable == "RESTORE_STATE_URL"
    assert "token-secret-1" not in str(caught.value)
    complete = {**required, "RESTORE_AUTH_TOKEN": "t", "RESTORE_STATE_URL": "memory://"}
    assert load_settings(complete).state_url == "memory://"
    with pytest.raises(SettingsError) as caught:
        load_settings({**BASE, "RESTORE_REQUIRED_SETTINGS": "RESTORE_STATE_URL;rm"})
    assert caught.value.variable == "RESTORE_REQUIRED_SETTINGS"


# --- notifications (SMN) and metrics (Cloud Eye) --------------------------------------------

TOPIC = "urn:smn:cn-north-4:0123abcd0123abcd0123abcd0123abcd:restore-alerts"


def test_notifications_and_metrics_are_off_unless_asked_for():
    for environ in (BASE, DWR):
        settings = load_settings(environ)
        assert (settings.notify, settings.metrics) == (None, None)
        assert settings.redacted()["notify"] is None and settings.redacted()["metrics"] is None


def test_a_topic_urn_turns_notifications_on_with_its_region_s_endpoint():
    notify = load_settings({**BASE, "RESTORE_NOTIFY_TOPIC_URN": f" {TOPIC} "}).notify
    assert (notify.topic_urn, notify.endpoint, notify.digest) == (
        TOPIC,
        "https://smn.cn-north-4.myhuaweicloud.com",
        10,
    )
    explicit = load_settings(
        {
            **BASE,
            "RESTORE_NOTIFY_TOPIC_URN": TOPIC,
            "SMN_ENDPOINT": "127.0.0.1:9000",
            "RESTORE_NOTIFY_DIGEST": "25",
        }
    )
    assert (explicit.notify.endpoint, explicit.notify.digest) == ("https://127.0.0.1:9000", 25)
    assert explicit.redacted()["notify"] == {
        "topicUrn": TOPIC,
        "endpoint": "https://127.0.0.1:9000",
        "digest": 25,
    }


def test_metrics_take_the_dwr_region_and_project_when_turned_on():
    for switch in (
        {"RESTORE_METRICS_NAMESPACE": "WORKFLOW.restore"},
        {"CES_PROJECT_ID": DWR["DWR_PROJECT_ID"]},
        {"CES_ENDPOINT": "https://ces.cn-south-1.myhuaweicloud.com"},
    ):
        metrics = load_settings({**DWR, **switch}).metrics
        assert (metrics.endpoint, metrics.project_id, metrics.namespace) == (
            "https://ces.cn-south-1.myhuaweicloud.com",
            DWR["DWR_PROJECT_ID"],
            "WORKFLOW.restore",
        ), switch


def test_metrics_on_obs_name_their_endpoint_and_project():
    metrics = load_settings(
        {
            **BASE,
            "CES_ENDPOINT": "http://127.0.0.1:9000",
            "CES_PROJECT_ID": "proj-1",
            "RESTORE_METRICS_NAMESPACE": "ETL.restore",
        }
    ).metrics
    assert (metrics.endpoint, metrics.project_id, metrics.namespace) == (
        "http://127.0.0.1:9000",
        "proj-1",
        "ETL.restore",
    )


URN, DIGEST, NAMESPACE = (
    "RESTORE_NOTIFY_TOPIC_URN",
    "RESTORE_NOTIFY_DIGEST",
    "RESTORE_METRICS_NAMESPACE",
)
NOTIFYING = {**BASE, URN: TOPIC}
ON_OBS = {**BASE, "CES_ENDPOINT": "https://ces.example"}
DWR_BY_ENDPOINT = {**DWR, "DWR_REGION": "", "DWR_ENDPOINT": "https://dwr.example"}


@pytest.mark.parametrize(
    ("environ", "variable", "named"),
    [
        ({**BASE, URN: "restore-alerts"}, URN, "urn:smn"),
        ({**BASE, URN: "urn:smn:mars:p:t"}, URN, "region"),
        ({**BASE, URN: "urn:smn:cn-north-4:a/b:t"}, URN, "project"),
        ({**NOTIFYING, "SMN_ENDPOINT": "ftp://x"}, "SMN_ENDPOINT", "http"),
        ({**NOTIFYING, DIGEST: "0"}, DIGEST, "between 1 and 1000"),
        ({**NOTIFYING, DIGEST: "ten"}, DIGEST, "whole"),
        ({**BASE, "SMN_ENDPOINT": "https://smn.example"}, "SMN_ENDPOINT", URN),
        ({**BASE, DIGEST: "5"}, DIGEST, URN),
        ({**BASE, "CES_PROJECT_ID": "p"}, "CES_ENDPOINT", "DWR_REGION"),
        (ON_OBS, "CES_PROJECT_ID", "required"),
        ({**BASE, "CES_ENDPOINT": "ftp://ces"}, "CES_ENDPOINT", "http"),
        ({**ON_OBS, "CES_PROJECT_ID": "../x"}, "CES_PROJECT_ID", "project id"),
        ({**DWR, NAMESPACE: "restore"}, NAMESPACE, "service.item"),
        ({**DWR, NAMESPACE: "SYS.restore"}, NAMESPACE, "SYS"),
        ({**DWR_BY_ENDPOINT, "CES_PROJECT_ID": "p"}, "CES_ENDPOINT", "DWR_REGION"),
    ],
)
def test_invalid_notify_and_metrics_settings_stop_the_start_naming_the_variable(
    environ, variable, named
):
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ") and named in str(caught.value)


def test_outage_mode_settings_default_to_the_documented_values_and_are_validated():
    from handler.outage import OutageSettings, RateLimit

    assert load_settings(BASE).outage == OutageSettings()
    assert load_settings(BASE).redacted()["outage"]["rateLimit"] == "60/m"
    chosen = load_settings(
        {
            **BASE,
            "RESTORE_RATE_LIMIT": "5/s",
            "RESTORE_BREAKER_WINDOW": "30m",
            "RESTORE_BREAKER_THRESHOLD": "3",
            "RESTORE_BREAKER_COOLDOWN": "2h",
            "RESTORE_BREAKER_GLOBAL": "0",
        }
    ).outage
    assert chosen == OutageSettings(RateLimit(5, 1.0), 1800.0, 3, 7200.0, 0)
    assert chosen.max_cooldown == 7200.0  # the cap never shortens a longer cooldown
    # Unset is the default rate; set but empty (or off) is no limit.
    assert load_settings({**BASE, "RESTORE_RATE_LIMIT": ""}).outage.rate_limit is None
    assert load_settings({**BASE, "RESTORE_RATE_LIMIT": "off"}).outage.rate_limit is None
    assert load_settings({**BASE, "RESTORE_BREAKER_THRESHOLD": "0"}).outage.breaker_threshold == 0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RESTORE_RATE_LIMIT", "lots"),
        ("RESTORE_RATE_LIMIT", "0/s"),
        ("RESTORE_RATE_LIMIT", "50/10m"),
        ("RESTORE_BREAKER_WINDOW", "30s"),
        ("RESTORE_BREAKER_WINDOW", "2d"),
        ("RESTORE_BREAKER_THRESHOLD", "five"),
        ("RESTORE_BREAKER_THRESHOLD", "-1"),
        ("RESTORE_BREAKER_THRESHOLD", "1001"),
        ("RESTORE_BREAKER_COOLDOWN", "5s"),
        ("RESTORE_BREAKER_GLOBAL", "many"),
    ],
)
def test_a_bad_outage_mode_setting_stops_the_start_naming_it(variable, value):
    with pytest.raises(SettingsError) as error:
        load_settings({**BASE, variable: value})
    assert error.value.variable == variable and str(error.value).startswith(variable)
