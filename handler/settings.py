"""Every setting of the function, read once from the environment, validated, then passed down.

No other module reads the environment: entry points call :func:`load_settings` once and hand
the resulting :class:`Settings` to the pipeline. Invalid values fail at start-up with a
:class:`SettingsError` that names the variable and never echoes a secret's value.
The README's settings table lists the same names, defaults and meanings as ``SETTINGS_DOC``.

This module is a little over 500 lines on purpose: every variable the function reads, its
default, its check and its redacted view stand in one place, which is what lets the tests
prove the README table and the code agree. What a value *means* lives elsewhere (state URLs in
:mod:`handler.store.url`, restore rules in :mod:`handler.rules`).
"""

from __future__ import annotations

import fnmatch
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from handler.durations import duration_seconds
from handler.endpoint import normalise_endpoint
from handler.names import validate_name
from handler.outage import (
    DEFAULT_BREAKER_GLOBAL,
    DEFAULT_BREAKER_THRESHOLD,
    DEFAULT_RATE_LIMIT,
    OutageSettings,
    RateLimit,
)
from handler.redaction import redact, redact_url
from handler.rules import PolicyError, RuleSet, default_rules, parse_policy_text
from handler.store import validate_state_url

DEFAULT_STATE_FILE = os.path.join(tempfile.gettempdir(), "obs-workflow-restore.db")
WORKFLOW_APIS = ("obs", "dwr")
# The longest sweep lookback (setting and override): restoring a run that failed a month ago
# is a person's decision, not a timer's, and every date the sweep computes from it stays far
# inside what dates can hold.
MAX_SWEEP_LOOKBACK = 30 * 86400.0
# The regional hosts of the official DWR SDK (huaweicloudsdkdwr's region table).
DWR_REGION_HOSTS = {
    "cn-south-1": "https://dwr.cn-south-1.myhuaweicloud.com",
    "cn-southwest-2": "https://dwr-lms.cn-southwest-2.myhuaweicloud.com",
    "cn-north-11": "https://dwr-lms.cn-north-11.myhuaweicloud.com",
    "cn-north-9": "https://dwr-lms.cn-north-9.myhuaweicloud.com",
    "cn-east-3": "https://dwr-lms.cn-east-3.myhuaweicloud.com",
}

# name → (default shown in the README, meaning). Secrets are marked so they are never shown.
SETTINGS_DOC: dict[str, tuple[str, str]] = {
    "WORKFLOW_API": (
        "(inferred)",
        "the workflow API, `dwr` (Data Workshop v3) or `obs` (OBS workflows); unset, it is "
        "`dwr` when `DWR_ENDPOINT` or `DWR_REGION` is set and `obs` when `OBS_ENDPOINT` is "
        "(both or neither stop the start)",
    ),
    "OBS_ENDPOINT": (
        "(required for `obs`)",
        "OBS endpoint URL; `https://` is assumed for a bare host",
    ),
    "DWR_ENDPOINT": ("", "DWR endpoint URL (for `dwr`; or set `DWR_REGION`)"),
    "DWR_REGION": ("", "DWR region, mapped to its endpoint: " + ", ".join(DWR_REGION_HOSTS)),
    "DWR_PROJECT_ID": (
        "(required for `dwr`)",
        "project id in DWR paths (alias: `HUAWEICLOUD_SDK_PROJECT_ID`)",
    ),
    "OBS_ACCESS_KEY_ID": ("", "access key id (aliases: `AccessKeyID`, `HUAWEICLOUD_SDK_AK`)"),
    "OBS_SECRET_ACCESS_KEY": (
        "",
        "secret access key (aliases: `SecretAccessKey`, `HUAWEICLOUD_SDK_SK`)",
    ),
    "OBS_SECURITY_TOKEN": (
        "",
        "security token of temporary credentials (alias: `HUAWEICLOUD_SDK_SECURITY_TOKEN`)",
    ),
    "OBS_CONNECT_TIMEOUT": ("3.05", "seconds to open a connection to OBS"),
    "OBS_READ_TIMEOUT": ("10", "seconds to wait for an OBS answer"),
    "OBS_MAX_ATTEMPTS": ("4", "tries per OBS call (connection errors, timeouts, 429, 5xx)"),
    "OBS_CA_BUNDLE": ("", "CA bundle path for TLS; `false` disables verification (tests only)"),
    "RESTORE_CREDENTIALS_FROM_HEADERS": (
        "false",
        "`true` signs with the `X-CFF-Security-*` keys FunctionGraph passes to HTTP functions",
    ),
    "RESTORE_AUTH_TOKEN": ("", "bearer token that callers of the HTTP URL must present"),
    "RESTORE_ALLOW_UNAUTHENTICATED": ("false", "`true` serves the HTTP URL without a token"),
    "RESTORE_DRY_RUN": ("false", "`true` does everything but the restore call"),
    "RESTORE_GRAPH_ALLOWLIST": ("", "comma-separated fnmatch patterns; empty allows every graph"),
    "RESTORE_EVENT_SINK": ("`$K_SINK`", "URL that receives one result CloudEvent per item"),
    "RESTORE_STATE_URL": (
        "`sqlite:///<tmp>/obs-workflow-restore.db`",
        "state store: `sqlite:///path`, `redis://…` or `memory://`; SQLite commits without an "
        "fsync in WAL mode (a power cut, not a process crash, may lose the last commits): "
        "`?synchronous=full` fsyncs each one",
    ),
    "RESTORE_MAX_RESTORES": ("3", "restores per execution within the budget window"),
    "RESTORE_BUDGET_WINDOW": ("24h", "the restore budget's sliding window (`s`, `m`, `h`, `d`)"),
    "RESTORE_POLICY_FILE": (
        "",
        "restore rules in a YAML or JSON file (see Restore policy); empty: one default rule",
    ),
    "RESTORE_POLICY": ("", "the restore rules as inline JSON (instead of a file)"),
    "RESTORE_CLAIM_TTL": (
        "300s",
        "how long an in-progress marker holds; set to the function timeout",
    ),
    "RESTORE_DEDUPE_RETENTION": (
        "24h",
        "how long a finished outcome answers redeliveries of an event with an id",
    ),
    "RESTORE_PLAIN_DEDUPE_WINDOW": (
        "5m",
        "how long a finished outcome answers a request without an id (same content)",
    ),
    "RESTORE_SWEEP_GRAPHS": (
        "",
        "comma-separated graphs a sweep lists; empty: every graph, filtered by the allowlist",
    ),
    "RESTORE_SWEEP_LOOKBACK": (
        "24h",
        "a sweep restores failures that stopped this recently (60s to 30d)",
    ),
    "RESTORE_SWEEP_MAX_RESTORES": (
        "50",
        "restores per sweep; the rest wait for the next sweep (counted)",
    ),
    "RESTORE_SWEEP_MAX_PAGES": ("100", "list pages a sweep reads per graph"),
    "RESTORE_SWEEP_GRACE": (
        "10m",
        "a sweep leaves an execution restored this recently alone (list answers lag)",
    ),
    "RESTORE_SWEEP_QUIET_INTERVAL": (
        "10m",
        "a graph whose last listing found no failure is listed at least this often, not by "
        "every sweep (0: every sweep lists every graph; at most half the lookback)",
    ),
    # Outage mode (handler/outage.py): the restore rate and the breakers.
    "RESTORE_RATE_LIMIT": (
        DEFAULT_RATE_LIMIT,
        "restores per second, minute or hour across every instance (`N/s`, `N/m`, `N/h`; "
        "sliding); set but empty, or `off`: no limit",
    ),
    "RESTORE_BREAKER_WINDOW": (
        "15m",
        "a graph's re-failures (failed again after a restore) count within this window",
    ),
    "RESTORE_BREAKER_THRESHOLD": (
        str(DEFAULT_BREAKER_THRESHOLD),
        "distinct executions of one graph re-failing within the window open its breaker "
        "(0-1000; 0: no breaker)",
    ),
    "RESTORE_BREAKER_COOLDOWN": (
        "10m",
        "an open breaker restores one canary after this; doubled after a failed canary, up "
        "to 1h (or the cooldown, if longer)",
    ),
    "RESTORE_BREAKER_GLOBAL": (
        str(DEFAULT_BREAKER_GLOBAL),
        "this many graphs open at once hold every graph: a systemic outage (0: never)",
    ),
    "LOG_LEVEL": ("INFO", "DEBUG, INFO, WARNING or ERROR"),
    "RESTORE_REQUIRED_SETTINGS": (
        "",
        "comma-separated settings that must be set: a missing one stops the start naming it "
        "(the template lists its encrypted variables, so one that did not arrive is an error, "
        "not a silent default)",
    ),
}

SECRET_SETTINGS = frozenset(
    {
        "OBS_SECRET_ACCESS_KEY",
        "OBS_SECURITY_TOKEN",
        "RESTORE_AUTH_TOKEN",
        "SecretAccessKey",
        "HUAWEICLOUD_SDK_SK",
        "HUAWEICLOUD_SDK_SECURITY_TOKEN",
    }
)
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class SettingsError(ValueError):
    """A setting is missing or invalid; ``variable`` names it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class Settings:
    """The validated configuration; ``repr`` shows the redacted view, never a secret."""

    endpoint: str
    workflow_api: str = "obs"
    project_id: str | None = None  # DWR only
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    security_token: str | None = field(default=None, repr=False)
    connect_timeout: float = 3.05
    read_timeout: float = 10.0
    max_attempts: int = 4
    verify: bool | str = True
    credentials_from_headers: bool = False
    auth_token: str | None = field(default=None, repr=False)
    allow_unauthenticated: bool = False
    dry_run: bool = False
    graph_allowlist: tuple[str, ...] = ()
    event_sink: str | None = None
    state_url: str = f"sqlite:///{DEFAULT_STATE_FILE}"
    max_restores: int = 3
    budget_window: float = 86400.0
    claim_ttl: float = 300.0
    dedupe_retention: float = 86400.0
    plain_dedupe_window: float = 300.0
    sweep_graphs: tuple[str, ...] = ()
    sweep_lookback: float = 86400.0
    sweep_max_restores: int = 50
    sweep_max_pages: int = 100
    sweep_grace: float = 600.0
    sweep_quiet_interval: float = 600.0
    log_level: str = "INFO"
    outage: OutageSettings = field(default_factory=OutageSettings)  # rate and breakers
    # None: no policy was given, the single default rule of max_restores and budget_window
    restore_policy: RuleSet | None = None
    # None: off (see "Notifications and metrics" below)
    notify: NotifySettings | None = None
    metrics: MetricsSettings | None = None

    def __repr__(self) -> str:
        return f"Settings({self.redacted()})"

    def graph_allowed(self, graph_name: str) -> bool:
        """Whether the allowlist admits ``graph_name`` (an empty allowlist admits all)."""
        return not self.graph_allowlist or any(
            fnmatch.fnmatchcase(graph_name, pattern) for pattern in self.graph_allowlist
        )

    @property
    def rules(self) -> RuleSet:
        """The rules in force: the configured policy, or today's behaviour as one rule."""
        if self.restore_policy is not None:
            return self.restore_policy
        return default_rules(self.max_restores, self.budget_window)

    def redacted(self) -> dict[str, object]:
        """The effective settings for the start-up log line: no secret, only whether it is set."""
        return {
            "workflowApi": self.workflow_api,
            "endpoint": self.endpoint,
            "projectId": self.project_id,
            "accessKeyId": redact(self.access_key_id) or None,
            "secretAccessKey": "set" if self.secret_access_key else "unset",
            "securityToken": "set" if self.security_token else "unset",
            "authToken": "set" if self.auth_token else "unset",
            "allowUnauthenticated": self.allow_unauthenticated,
            "dryRun": self.dry_run,
            "graphAllowlist": list(self.graph_allowlist),
            "eventSink": redact_url(self.event_sink),
            "stateUrl": redact_url(self.state_url),
            "maxRestores": self.max_restores,
            "budgetWindowSeconds": self.budget_window,
            "claimTtlSeconds": self.claim_ttl,
            "dedupeRetentionSeconds": self.dedupe_retention,
            "plainDedupeWindowSeconds": self.plain_dedupe_window,
            "connectTimeout": self.connect_timeout,
            "readTimeout": self.read_timeout,
            "maxAttempts": self.max_attempts,
            "credentialsFromHeaders": self.credentials_from_headers,
            "tlsVerify": self.verify if isinstance(self.verify, bool) else "ca-bundle",
            "sweepGraphs": list(self.sweep_graphs),
            "sweepLookbackSeconds": self.sweep_lookback,
            "sweepMaxRestores": self.sweep_max_restores,
            "sweepMaxPages": self.sweep_max_pages,
            "sweepGraceSeconds": self.sweep_grace,
            "sweepQuietIntervalSeconds": self.sweep_quiet_interval,
            "logLevel": self.log_level,
            "outage": self.outage.summary(),
            "policy": self.rules.summary(),
            "notify": self.notify.redacted() if self.notify else None,
            "metrics": self.metrics.redacted() if self.metrics else None,
        }


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting from ``environ`` (default: the process environment)."""
    env = _Env(os.environ if environ is None else environ)
    _check_required(env)
    api = env.text("WORKFLOW_API").lower() or _inferred_api(env)
    if api not in WORKFLOW_APIS:
        raise SettingsError("WORKFLOW_API", f"must be obs or dwr, got {env.shown('WORKFLOW_API')}")
    endpoint, project_id = _dwr_endpoint(env) if api == "dwr" else (_obs_endpoint(env), None)
    settings = Settings(
        endpoint=endpoint,
        workflow_api=api,
        project_id=project_id,
        access_key_id=env.first("OBS_ACCESS_KEY_ID", "AccessKeyID", "HUAWEICLOUD_SDK_AK"),
        secret_access_key=env.first(
            "OBS_SECRET_ACCESS_KEY", "SecretAccessKey", "HUAWEICLOUD_SDK_SK"
        ),
        security_token=env.first("OBS_SECURITY_TOKEN", "HUAWEICLOUD_SDK_SECURITY_TOKEN"),
        connect_timeout=env.seconds("OBS_CONNECT_TIMEOUT", 3.05, minimum=0.1),
        read_timeout=env.seconds("OBS_READ_TIMEOUT", 10.0, minimum=0.1),
        max_attempts=env.integer("OBS_MAX_ATTEMPTS", 4, minimum=1, maximum=10),
        verify=_verify(env),
        credentials_from_headers=env.flag("RESTORE_CREDENTIALS_FROM_HEADERS"),
        auth_token=env.text("RESTORE_AUTH_TOKEN") or None,
        allow_unauthenticated=env.flag("RESTORE_ALLOW_UNAUTHENTICATED"),
        dry_run=env.flag("RESTORE_DRY_RUN"),
        graph_allowlist=env.names("RESTORE_GRAPH_ALLOWLIST"),
        event_sink=_sink(env),
        state_url=env.text("RESTORE_STATE_URL") or f"sqlite:///{DEFAULT_STATE_FILE}",
        max_restores=env.integer("RESTORE_MAX_RESTORES", 3, minimum=1, maximum=1000),
        budget_window=env.seconds("RESTORE_BUDGET_WINDOW", 86400.0, minimum=1),
        claim_ttl=env.seconds("RESTORE_CLAIM_TTL", 300.0, minimum=1),
        dedupe_retention=env.seconds("RESTORE_DEDUPE_RETENTION", 86400.0, minimum=1),
        plain_dedupe_window=env.seconds("RESTORE_PLAIN_DEDUPE_WINDOW", 300.0, minimum=1),
        sweep_graphs=_graph_names("RESTORE_SWEEP_GRAPHS", env.names("RESTORE_SWEEP_GRAPHS")),
        sweep_lookback=env.seconds(
            "RESTORE_SWEEP_LOOKBACK", 86400.0, minimum=60, maximum=MAX_SWEEP_LOOKBACK
        ),
        sweep_max_restores=env.integer("RESTORE_SWEEP_MAX_RESTORES", 50, minimum=1, maximum=10000),
        sweep_max_pages=env.integer("RESTORE_SWEEP_MAX_PAGES", 100, minimum=1, maximum=100000),
        sweep_grace=env.seconds("RESTORE_SWEEP_GRACE", 600.0, minimum=0),
        sweep_quiet_interval=env.seconds(
            "RESTORE_SWEEP_QUIET_INTERVAL", 600.0, minimum=0, maximum=MAX_SWEEP_LOOKBACK / 2
        ),
        log_level=_log_level(env),
        outage=_outage(env),
    )
    policy = _restore_policy(env, settings.max_restores, settings.budget_window)
    if policy is not None:
        settings = replace(settings, restore_policy=policy)
    if bool(settings.access_key_id) != bool(settings.secret_access_key):
        missing = "OBS_SECRET_ACCESS_KEY" if settings.access_key_id else "OBS_ACCESS_KEY_ID"
        raise SettingsError(missing, "access key id and secret access key must be set together")
    _check_state_url(settings.state_url)
    if settings.sweep_quiet_interval > settings.sweep_lookback / 2:
        # The other half of the lookback is what outages and lagging lists may take before
        # a failure in a quiet graph leaves the lookback unlisted (handler.pipeline.quiet).
        raise SettingsError(
            "RESTORE_SWEEP_QUIET_INTERVAL", "must be at most half of RESTORE_SWEEP_LOOKBACK"
        )
    return replace(settings, **_notify_and_metrics(env, settings))


def parse_duration(text: str, name: str, *, minimum: float, maximum: float | None = None) -> float:
    """Seconds from ``30s``, ``5m``, ``24h``, ``7d`` or a bare number of seconds.

    Public because sweep overrides (a timer's ``user_event``) use the same form; ``name`` is
    the setting or field a :class:`SettingsError` names. ``maximum`` keeps a duration that
    is subtracted from a date (a lookback) inside what dates can hold.
    """
    seconds = duration_seconds(text)
    if seconds is None:
        shown = ascii(text[:40])
        raise SettingsError(name, f"must be a duration like 30s, 5m, 24h or 7d, got {shown}")
    if seconds < minimum:
        raise SettingsError(name, f"must be at least {minimum:g} seconds")
    if maximum is not None and not seconds <= maximum:
        raise SettingsError(name, f"must be at most {_shown_duration(maximum)}")
    return seconds


def _shown_duration(seconds: float) -> str:
    if seconds % 86400 == 0:
        return f"{seconds / 86400:g}d"
    return f"{seconds:g} seconds"


class _Env:
    """Typed readers over the environment that raise SettingsError naming the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str) -> str:
        return self._environ.get(name, "").strip()

    def present(self, name: str) -> bool:
        """Whether ``name`` is set at all (even to an empty value)."""
        return name in self._environ

    def first(self, *names: str) -> str | None:
        """The first of several names (a setting and its aliases) that is set, or None."""
        return next((self.text(name) for name in names if self.text(name)), None)

    def flag(self, name: str) -> bool:
        value = self.text(name).lower()
        if value in ("", "0", "false", "no", "off"):
            return False
        if value in ("1", "true", "yes", "on"):
            return True
        raise SettingsError(name, f"must be true or false, got {self.shown(name)}")

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self.text(name)
        if not value:
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(name, f"must be a whole number, got {self.shown(name)}") from None
        if not minimum <= number <= maximum:
            raise SettingsError(name, f"must be between {minimum} and {maximum}, got {number}")
        return number

    def seconds(
        self, name: str, default: float, *, minimum: float, maximum: float | None = None
    ) -> float:
        value = self.text(name)
        if not value:
            return default
        if name in SECRET_SETTINGS:  # never echoed, whatever parse_duration would say
            raise SettingsError(name, "durations are not secrets")
        return parse_duration(value, name, minimum=minimum, maximum=maximum)

    def names(self, name: str) -> tuple[str, ...]:
        """A comma-separated list, blanks dropped."""
        return tuple(part.strip() for part in self.text(name).split(",") if part.strip())

    def shown(self, name: str) -> str:
        return "a secret value" if name in SECRET_SETTINGS else ascii(self.text(name)[:40])


def _check_required(env: _Env) -> None:
    """Each setting ``RESTORE_REQUIRED_SETTINGS`` names is set, checked before anything else.

    Without it a secret that did not reach the function (an encrypted variable the platform
    left out) would quietly become its default: per-instance SQLite for the state URL, every
    call refused for the auth token.
    """
    for name in env.names("RESTORE_REQUIRED_SETTINGS"):
        if not name.isidentifier() or not name.isascii():
            shown = ascii(name[:40])
            raise SettingsError("RESTORE_REQUIRED_SETTINGS", f"{shown} is not a variable name")
        if not env.text(name):
            raise SettingsError(name, "is required (RESTORE_REQUIRED_SETTINGS) but not set")


def _inferred_api(env: _Env) -> str:
    """The API the endpoint settings name, when ``WORKFLOW_API`` does not say.

    Guessing is refused both ways: with no endpoint the function could only fail on its first
    call, and with both it would call one API while the operator meant the other.
    """
    dwr = [name for name in ("DWR_ENDPOINT", "DWR_REGION") if env.text(name)]
    if dwr and env.text("OBS_ENDPOINT"):
        raise SettingsError(
            "WORKFLOW_API",
            f"OBS_ENDPOINT and {' and '.join(dwr)} are both set: keep the one of the API "
            "your workflows use, or set WORKFLOW_API=obs or dwr",
        )
    if dwr:
        return "dwr"
    if env.text("OBS_ENDPOINT"):
        return "obs"
    raise SettingsError(
        "WORKFLOW_API",
        "no workflow API is configured: set DWR_REGION (or DWR_ENDPOINT) and DWR_PROJECT_ID "
        "for DWR, or OBS_ENDPOINT for the OBS API",
    )


def _obs_endpoint(env: _Env) -> str:
    for name in ("DWR_ENDPOINT", "DWR_REGION", "DWR_PROJECT_ID"):
        if env.text(name):
            raise SettingsError(name, "is a DWR setting, but WORKFLOW_API is obs (set it to dwr)")
    endpoint = env.text("OBS_ENDPOINT")
    if not endpoint:
        raise SettingsError(
            "OBS_ENDPOINT", "is required, e.g. https://obs.cn-north-4.myhuaweicloud.com"
        )
    try:
        return normalise_endpoint(endpoint)
    except ValueError as exc:
        raise SettingsError("OBS_ENDPOINT", str(exc)) from None


def _dwr_endpoint(env: _Env) -> tuple[str, str]:
    """The DWR endpoint (explicit, or the region's) and the project id every path names."""
    if env.text("OBS_ENDPOINT"):
        raise SettingsError("OBS_ENDPOINT", "is an OBS setting, but WORKFLOW_API is dwr")
    endpoint, region = env.text("DWR_ENDPOINT"), env.text("DWR_REGION").lower()
    if endpoint and region:
        raise SettingsError("DWR_REGION", "set DWR_ENDPOINT or DWR_REGION, not both")
    if region:
        if region not in DWR_REGION_HOSTS:
            known = ", ".join(DWR_REGION_HOSTS)
            raise SettingsError("DWR_REGION", f"unknown region {env.shown('DWR_REGION')}: {known}")
        endpoint = DWR_REGION_HOSTS[region]
    if not endpoint:
        raise SettingsError("DWR_ENDPOINT", "DWR_ENDPOINT or DWR_REGION is required for dwr")
    try:
        endpoint = normalise_endpoint(endpoint)
    except ValueError as exc:
        raise SettingsError("DWR_ENDPOINT", str(exc)) from None
    name = "DWR_PROJECT_ID" if env.text("DWR_PROJECT_ID") else "HUAWEICLOUD_SDK_PROJECT_ID"
    project_id = env.text(name)
    if not project_id:
        raise SettingsError("DWR_PROJECT_ID", "is required for dwr (the project's id)")
    try:
        validate_name(project_id, "project id")
    except ValueError as exc:
        raise SettingsError(name, str(exc)) from None
    return endpoint, project_id


def _graph_names(name: str, names: tuple[str, ...]) -> tuple[str, ...]:
    for graph in names:
        try:
            validate_name(graph, "graph name")
        except ValueError as exc:
            raise SettingsError(name, str(exc)) from None
    return names


def _verify(env: _Env) -> bool | str:
    value = env.text("OBS_CA_BUNDLE")
    if not value:
        return True
    if value.lower() == "false":
        return False
    if not os.path.isfile(value):
        raise SettingsError("OBS_CA_BUNDLE", f"no such file: {value[:200]!r}")
    return value


def _sink(env: _Env) -> str | None:
    name = "RESTORE_EVENT_SINK" if env.text("RESTORE_EVENT_SINK") else "K_SINK"
    value = env.text(name)
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(name, "must be an http(s) URL")
    return value


def _log_level(env: _Env) -> str:
    value = env.text("LOG_LEVEL").upper() or "INFO"
    if value not in _LOG_LEVELS:
        raise SettingsError("LOG_LEVEL", f"must be one of {', '.join(_LOG_LEVELS)}")
    return value


def _outage(env: _Env) -> OutageSettings:
    """The restore rate and the breakers (what they mean: :mod:`handler.outage`).

    ``RESTORE_RATE_LIMIT`` unset is the default rate; set but empty is no limit, as the
    issue that asked for it says - unlike the other settings, where empty is the default."""
    given = env.present("RESTORE_RATE_LIMIT")
    try:
        rate = RateLimit.parse(env.text("RESTORE_RATE_LIMIT") if given else DEFAULT_RATE_LIMIT)
    except ValueError as exc:
        raise SettingsError("RESTORE_RATE_LIMIT", str(exc)) from None
    return OutageSettings(
        rate_limit=rate,
        breaker_window=env.seconds("RESTORE_BREAKER_WINDOW", 900.0, minimum=60, maximum=86400),
        breaker_threshold=env.integer(
            "RESTORE_BREAKER_THRESHOLD", DEFAULT_BREAKER_THRESHOLD, minimum=0, maximum=1000
        ),
        breaker_cooldown=env.seconds("RESTORE_BREAKER_COOLDOWN", 600.0, minimum=10, maximum=86400),
        breaker_global=env.integer(
            "RESTORE_BREAKER_GLOBAL", DEFAULT_BREAKER_GLOBAL, minimum=0, maximum=1000
        ),
    )


def _restore_policy(env: _Env, max_restores: int, window: float) -> RuleSet | None:
    """The rules of ``RESTORE_POLICY_FILE`` or ``RESTORE_POLICY``, validated now, so a typo in
    a rule stops the start rather than the first restore it should have governed."""
    path, inline = env.text("RESTORE_POLICY_FILE"), env.text("RESTORE_POLICY")
    if path and inline:
        raise SettingsError("RESTORE_POLICY", "set RESTORE_POLICY_FILE or RESTORE_POLICY, not both")
    if path:
        variable, source = "RESTORE_POLICY_FILE", f"RESTORE_POLICY_FILE={path}"
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read(1_000_001)
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise SettingsError(variable, f"cannot read {path!a}: {reason}") from None
        if len(text) > 1_000_000:
            raise SettingsError(variable, "the policy file is larger than 1 MB")
    elif inline:
        variable, source, text = "RESTORE_POLICY", "RESTORE_POLICY", inline
    else:
        return None
    try:
        return parse_policy_text(
            text,
            source=source,
            yaml_allowed=variable == "RESTORE_POLICY_FILE",
            max_restores=max_restores,
            window=window,
        )
    except PolicyError as exc:
        raise SettingsError(variable, str(exc)) from None


def _check_state_url(url: str) -> None:
    """The whole URL - scheme, path or host, port, database, every option - at load time."""
    try:
        validate_state_url(url)
    except ValueError as exc:
        raise SettingsError("RESTORE_STATE_URL", str(exc)) from None


# --- notifications (SMN) and metrics (Cloud Eye) ------------------------------------------
# One block, so the settings of issue 23 stay together: their table rows, their values and
# their checks. Both are off unless asked for, and need no credentials at start-up (the
# FunctionGraph agency's keys arrive with each call).

from handler.notify_targets import (  # noqa: E402 - kept with the block that uses it
    DEFAULT_METRICS_NAMESPACE,
    ces_endpoint,
    parse_topic_urn,
    smn_endpoint,
    validate_namespace,
)

SETTINGS_DOC.update(
    {
        "RESTORE_NOTIFY_TOPIC_URN": (
            "",
            "SMN topic to tell when the function gives up, "
            "`urn:smn:<region>:<project_id>:<topic>` (checked at start-up; nothing is "
            "published yet, see below the table); empty: no messages",
        ),
        "SMN_ENDPOINT": (
            "(the topic URN's region)",
            "SMN endpoint URL; by default `https://smn.<region>.myhuaweicloud.com`",
        ),
        "RESTORE_NOTIFY_DIGEST": (
            "10",
            "more give-up messages than this within 10 minutes go out as one digest (1-1000)",
        ),
        "CES_ENDPOINT": (
            "(`DWR_REGION`'s)",
            "Cloud Eye endpoint URL for metrics; by default "
            "`https://ces.<region>.myhuaweicloud.com`. Metrics are on when this, "
            "`CES_PROJECT_ID` or `RESTORE_METRICS_NAMESPACE` is set (checked at start-up; "
            "nothing is sent yet, see below the table)",
        ),
        "CES_PROJECT_ID": ("(the DWR project id)", "project the metrics are written to"),
        "RESTORE_METRICS_NAMESPACE": (
            DEFAULT_METRICS_NAMESPACE,
            "Cloud Eye namespace of the metrics, `service.item` (3-32 letters, digits, `_`)",
        ),
    }
)
_NOTIFY_ONLY = ("SMN_ENDPOINT", "RESTORE_NOTIFY_DIGEST")
_METRICS_SWITCHES = ("CES_ENDPOINT", "CES_PROJECT_ID", "RESTORE_METRICS_NAMESPACE")


@dataclass(frozen=True)
class NotifySettings:
    """Where give-up messages go: the topic, its endpoint, the digest threshold."""

    topic_urn: str
    endpoint: str
    digest: int = 10

    def redacted(self) -> dict[str, object]:
        return {"topicUrn": self.topic_urn, "endpoint": self.endpoint, "digest": self.digest}


@dataclass(frozen=True)
class MetricsSettings:
    """Where metrics go: Cloud Eye's endpoint, the project, the namespace."""

    endpoint: str
    project_id: str
    namespace: str = DEFAULT_METRICS_NAMESPACE

    def redacted(self) -> dict[str, object]:
        return {
            "endpoint": self.endpoint,
            "projectId": self.project_id,
            "namespace": self.namespace,
        }


def _notify_and_metrics(env: _Env, settings: Settings) -> dict[str, object]:
    """``notify`` and ``metrics`` for :func:`load_settings`, checked now so a typo in a URN
    stops the start instead of silencing the first give-up."""
    return {"notify": _notify(env), "metrics": _metrics(env, settings)}


def _notify(env: _Env) -> NotifySettings | None:
    text = env.text("RESTORE_NOTIFY_TOPIC_URN")
    if not text:
        for name in _NOTIFY_ONLY:
            if env.text(name):
                raise SettingsError(name, "has no effect without RESTORE_NOTIFY_TOPIC_URN")
        return None
    try:
        topic = parse_topic_urn(text)
    except ValueError as exc:
        raise SettingsError("RESTORE_NOTIFY_TOPIC_URN", str(exc)) from None
    endpoint = _endpoint("SMN_ENDPOINT", env.text("SMN_ENDPOINT")) or smn_endpoint(topic.region)
    digest = env.integer("RESTORE_NOTIFY_DIGEST", 10, minimum=1, maximum=1000)
    return NotifySettings(topic_urn=str(topic), endpoint=endpoint, digest=digest)


def _metrics(env: _Env, settings: Settings) -> MetricsSettings | None:
    if not any(env.text(name) for name in _METRICS_SWITCHES):
        return None
    namespace = env.text("RESTORE_METRICS_NAMESPACE") or DEFAULT_METRICS_NAMESPACE
    try:
        validate_namespace(namespace)
    except ValueError as exc:
        raise SettingsError("RESTORE_METRICS_NAMESPACE", str(exc)) from None
    endpoint = _endpoint("CES_ENDPOINT", env.text("CES_ENDPOINT"))
    if endpoint is None:
        region = env.text("DWR_REGION").lower()  # checked against the DWR regions already
        if not region:
            raise SettingsError(
                "CES_ENDPOINT", "is required for metrics without DWR_REGION (set either)"
            )
        endpoint = ces_endpoint(region)
    project_id = env.text("CES_PROJECT_ID") or settings.project_id
    if not project_id:
        raise SettingsError("CES_PROJECT_ID", "is required for metrics without a DWR project id")
    try:
        validate_name(project_id, "project id")
    except ValueError as exc:
        raise SettingsError("CES_PROJECT_ID", str(exc)) from None
    return MetricsSettings(endpoint=endpoint, project_id=project_id, namespace=namespace)


def _endpoint(name: str, value: str) -> str | None:
    if not value:
        return None
    try:
        return normalise_endpoint(value)
    except ValueError as exc:
        raise SettingsError(name, str(exc)) from None


# --- end of notifications and metrics -------------------------------------------------------


@dataclass(frozen=True)
class StoreSettings:
    """The settings an operator's look at the state store needs, and nothing else."""

    state_url: str
    budget_window: float

    def __repr__(self) -> str:
        return f"StoreSettings(state_url={redact_url(self.state_url)!r})"


def load_store_settings(environ: Mapping[str, str] | None = None) -> StoreSettings:
    """Read only ``RESTORE_STATE_URL`` and ``RESTORE_BUDGET_WINDOW``, validated as in
    :func:`load_settings`: inspecting or editing the store must not need ``OBS_ENDPOINT``
    or credentials."""
    env = _Env(os.environ if environ is None else environ)
    settings = StoreSettings(
        state_url=env.text("RESTORE_STATE_URL") or f"sqlite:///{DEFAULT_STATE_FILE}",
        budget_window=env.seconds("RESTORE_BUDGET_WINDOW", 86400.0, minimum=1),
    )
    _check_state_url(settings.state_url)
    return settings


def state_url_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``RESTORE_STATE_URL`` is set: a command that only reads the store (``policy
    explain``) must not create the default state file where none is configured."""
    return bool(_Env(os.environ if environ is None else environ).text("RESTORE_STATE_URL"))


def load_outage_settings(environ: Mapping[str, str] | None = None) -> OutageSettings:
    """Only the ``RESTORE_RATE_LIMIT`` and ``RESTORE_BREAKER_*`` settings, validated as in
    :func:`load_settings`: ``policy explain`` shows the breaker and rate state without
    needing credentials."""
    return _outage(_Env(os.environ if environ is None else environ))


def load_policy(environ: Mapping[str, str] | None = None, *, file: str | None = None) -> RuleSet:
    """The restore rules in force, validated as in :func:`load_settings`, for the ``policy``
    commands: ``file`` instead of the environment's policy when given; only
    ``RESTORE_MAX_RESTORES`` and ``RESTORE_BUDGET_WINDOW`` are read besides (the defaults of
    rules that do not name their budget)."""
    values = dict(os.environ if environ is None else environ)
    if file is not None:
        values.pop("RESTORE_POLICY", None)
        values["RESTORE_POLICY_FILE"] = file
    env = _Env(values)
    max_restores = env.integer("RESTORE_MAX_RESTORES", 3, minimum=1, maximum=1000)
    window = env.seconds("RESTORE_BUDGET_WINDOW", 86400.0, minimum=1)
    policy = _restore_policy(env, max_restores, window)
    return policy if policy is not None else default_rules(max_restores, window)


# The loopback emulator (handler/devtools/emulator/) is a development tool, not the function,
# but its secret key must not have to sit on a command line, where `ps` shows it to everyone.
EMULATOR_SECRET_VARIABLE = "EMULATOR_SECRET_ACCESS_KEY"  # noqa: S105 - a name, not a secret


def emulator_secret_key(environ: Mapping[str, str] | None = None) -> str | None:
    """The emulator's secret key from ``EMULATOR_SECRET_ACCESS_KEY``, if set.

    Read here because this module is the only one that reads the environment.
    """
    return _Env(os.environ if environ is None else environ).text(EMULATOR_SECRET_VARIABLE) or None
