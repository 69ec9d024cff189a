"""Hub settings, decoded by ``bupmesh.config.load_config``.

Every key of the public config is declared here with its default, and
unknown keys are refused, so a typo in ``hub.yml`` is an error naming the key
instead of a silently ignored setting. ``validate`` adds the checks msgspec
cannot express: required secrets, TLS-or-insecure, HOST:PORT shapes.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

import msgspec

from bupmesh.config import ConfigError, load_config, parse_host_port
from hub.submission import templates
from uploader.client import DEFAULT_MEMBER_URL


class _S(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class TLSSettings(_S):
    cert_file: str | None = None
    key_file: str | None = None


class BilibiliSettings(_S):
    member_url: str = DEFAULT_MEMBER_URL
    passport_url: str = "https://passport.bilibili.com"  # TV QR login
    api_url: str = "https://api.bilibili.com"  # x/web-interface/nav: account validity


class HeartbeatSettings(_S):
    interval_seconds: float = 30
    offline_after_seconds: float = 90
    # After an agent's stream ends, its streaming leases wait this long for the agent
    # to dial back and hold them (Hello.held_tasks) before they are re-queued; 0: at once.
    held_grace_seconds: float = 0


class SchedulerSettings(_S):
    strategy: Literal[
        "round_robin", "least_connections", "weighted_round_robin", "ip_diversity", "locality"
    ] = "ip_diversity"


class RiskSettings(_S):
    min_interval_seconds: float = 300
    max_uploads_per_hour: int = 6
    cooldown_seconds: float = 3600
    disable_after_events: int = 3


class RetrySettings(_S):
    network_retries: int = 3
    backoff_initial_seconds: float = 1
    backoff_max_seconds: float = 60


class IngestSettings(_S):
    bililive_recorder_work_dir: str | None = None
    blrec_work_dir: str | None = None
    watch_dirs: list[str] = []
    webhook_secret: str | None = None
    # Which blrec event brings a finished file: with blrec's remuxing (flv -> mp4, source
    # deleted) the file to upload is the post-processed one.
    blrec_file_event: Literal["VideoFileCompletedEvent", "VideoPostprocessingCompletedEvent"] = \
        "VideoFileCompletedEvent"
    # Folder watcher (hub/ingest/watcher.py): poll period, how long a file must hold
    # still to count as finished, and the pause that separates two live sessions.
    watch_interval_seconds: float = 5
    watch_stable_seconds: float = 30
    watch_session_gap_seconds: float = 1800


class SubmissionSettings(_S):
    auto_submit: bool = False
    account: str | None = None
    # Placeholders: hub/submission/templates.py (${title}, ${uname}, ${yyyy}, ...).
    title_template: str = "${title}"
    part_title_template: str = "P${index}"
    desc_template: str = ""
    tags: str | list[str] = ""
    tid: int = 171
    copyright: int = 2
    source_template: str = ""
    # web (add/v3, cookies) | app (app/add, access key) | auto (web if cookies have bili_jct)
    api: Literal["auto", "web", "app"] = "auto"
    # A recording is submitted once it has been unchanged this long after its session
    # ended (a recorder may deliver the last FileClosed after SessionEnded).
    settle_seconds: float = 10
    # After a Submit whose outcome is unknown (agent lost, hub restart), wait this long
    # before looking for the archive and maybe submitting again.
    unknown_wait_seconds: float = 30
    # An agent abandons a Submit this long after receiving it. A lost answer is retried
    # only after sent + this + unknown_wait_seconds: by then the first attempt has
    # either reached Bilibili (and the retry finds its archive) or never will.
    agent_deadline_seconds: float = 90
    # Delay before another try after a risk-control answer or a network failure.
    retry_seconds: float = 60


class RoomSettings(_S):
    """Per-room overrides: the submission keys, unset ones fall back to ``submission``."""

    auto_submit: bool | None = None
    account: str | None = None
    title_template: str | None = None
    part_title_template: str | None = None
    desc_template: str | None = None
    tags: str | list[str] | None = None
    tid: int | None = None
    copyright: int | None = None
    source_template: str | None = None


class AlertSettings(_S):
    """When the hub raises an alert (hub/alerts/rules.py) and where it goes (the log, and a
    JSON POST to ``webhook_url`` when set; the URL may carry a token: never logged)."""

    webhook_url: str | None = None
    agent_offline_seconds: float = 300
    failure_rate: float = 0.1
    failure_window_seconds: float = 3600
    min_failures: int = 3
    low_speed_bps: float = 100 * 1024  # 0 turns the low-speed alert off
    low_speed_seconds: float = 300
    evaluate_interval_seconds: float = 15
    webhook_timeout_seconds: float = 10
    webhook_retries: int = 3


class AgentsSettings(_S):
    """How agents are admitted (hub/agents/auth.py, hub/agents/admission.py)."""

    # The shared PSK registers any agent id; off, only per-agent tokens do
    # (``bupmesh hub agent-token create ID``).
    allow_psk: bool = True
    # An id first seen through the PSK waits as "pending" (no work) until an admin
    # approves it.
    require_approval: bool = False
    # agent id -> the accounts (names or ids) whose credentials it may receive;
    # an agent not listed may use every account (or what the API set for it).
    allowed_accounts: dict[str, list[str]] = {}


class HubConfig(_S):
    http_listen: str = "0.0.0.0:12380"
    grpc_listen: str = "0.0.0.0:12382"
    data_dir: str = "./data"
    psk: str = ""
    admin_token: str = ""
    # Read-only role: the API's GETs, the web UI, /metrics and the event stream.
    viewer_token: str = ""
    # Directories the hub uploads files from (plus the ingest directories), after
    # symlinks are resolved; never the data directory. Unset: the directory the hub
    # was started in. A string is a list separated by os.pathsep (the environment).
    media_roots: list[str] | str | None = None
    agents: AgentsSettings = msgspec.field(default_factory=AgentsSettings)
    tls: TLSSettings = msgspec.field(default_factory=TLSSettings)
    insecure: bool = False
    compression: Literal["none", "gzip"] = "none"
    token_ttl_seconds: float = 86400
    bilibili: BilibiliSettings = msgspec.field(default_factory=BilibiliSettings)
    heartbeat: HeartbeatSettings = msgspec.field(default_factory=HeartbeatSettings)
    scheduler: SchedulerSettings = msgspec.field(default_factory=SchedulerSettings)
    risk: RiskSettings = msgspec.field(default_factory=RiskSettings)
    retry: RetrySettings = msgspec.field(default_factory=RetrySettings)
    ingest: IngestSettings = msgspec.field(default_factory=IngestSettings)
    submission: SubmissionSettings = msgspec.field(default_factory=SubmissionSettings)
    rooms: dict[str, RoomSettings] = {}
    alerts: AlertSettings = msgspec.field(default_factory=AlertSettings)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def http_address(self) -> tuple[str, int]:
        return parse_host_port(self.http_listen, key="http_listen")

    @property
    def grpc_address(self) -> tuple[str, int]:
        return parse_host_port(self.grpc_listen, key="grpc_listen")

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls.cert_file)

    @property
    def media_root_list(self) -> list[str]:
        """The configured media roots, or the working directory when none are."""
        roots = self.media_roots
        if isinstance(roots, str):
            roots = [r for r in roots.split(os.pathsep) if r.strip()]
        return list(roots) if roots else [os.getcwd()]


ENV_KEYS = {
    "BUPMESH_PSK": "psk",
    "BUPMESH_ADMIN_TOKEN": "admin_token",
    "BUPMESH_VIEWER_TOKEN": "viewer_token",
    "BUPMESH_MEDIA_ROOTS": "media_roots",
    "BUPMESH_DATA_DIR": "data_dir",
    "BUPMESH_BILI_MEMBER_URL": "bilibili.member_url",
    "BUPMESH_ALERT_WEBHOOK_URL": "alerts.webhook_url",
}


def validate(config: HubConfig) -> HubConfig:
    """Checks beyond types; each failure names the setting."""
    if config.agents.allow_psk and not config.psk.strip():
        raise ConfigError("psk: required setting is missing (--psk or BUPMESH_PSK; or "
                          "agents.allow_psk: false to admit agents by per-agent tokens only)")
    if not config.admin_token.strip():
        raise ConfigError(
            "admin_token: required setting is missing (--admin-token or BUPMESH_ADMIN_TOKEN)"
        )
    viewer = config.viewer_token.strip()
    if viewer and viewer in (config.admin_token.strip(), config.psk.strip()):
        raise ConfigError("viewer_token: must differ from admin_token and psk")
    _validate_media_roots(config)
    _validate_agents(config.agents)
    config.http_address  # noqa: B018 - raises ConfigError naming the key
    config.grpc_address  # noqa: B018
    cert, key = config.tls.cert_file, config.tls.key_file
    if bool(cert) != bool(key):
        raise ConfigError("tls: cert_file and key_file go together (--tls-cert and --tls-key)")
    if cert and config.insecure:
        raise ConfigError("insecure: cannot be combined with tls.cert_file/key_file")
    if not cert and not config.insecure:
        # Plaintext is fine where nobody else can listen (loopback: local use, tests);
        # anywhere else the PSK, JWTs and cookies would cross the network in clear.
        exposed = [f"{key} {host}" for key, (host, _) in
                   (("http_listen", config.http_address), ("grpc_listen", config.grpc_address))
                   if not is_loopback(host)]
        if exposed:
            raise ConfigError(
                f"tls: refusing plaintext on a non-loopback address ({', '.join(exposed)}); "
                "pass --tls-cert/--tls-key (bupmesh hub gen-cert makes them), "
                "or --insecure to serve plaintext anyway"
            )
    for name, path in (("tls.cert_file", cert), ("tls.key_file", key)):
        if path and not Path(path).is_file():
            raise ConfigError(f"{name}: no such file: {path}")
    for key in ("member_url", "passport_url", "api_url"):
        if not getattr(config.bilibili, key).startswith(("http://", "https://")):
            raise ConfigError(f"bilibili.{key}: expected an http(s) URL")
    hb = config.heartbeat
    if hb.interval_seconds <= 0:
        raise ConfigError("heartbeat.interval_seconds: must be positive")
    if hb.offline_after_seconds <= hb.interval_seconds:
        raise ConfigError("heartbeat.offline_after_seconds: must exceed interval_seconds")
    if not 0 <= hb.held_grace_seconds <= 3600:
        raise ConfigError("heartbeat.held_grace_seconds: must be within 0..3600")
    if config.token_ttl_seconds < 10:
        raise ConfigError("token_ttl_seconds: must be at least 10")
    if config.retry.network_retries < 0:
        raise ConfigError("retry.network_retries: must not be negative")
    _validate_templates(config)
    _validate_alerts(config.alerts)
    return config


def is_loopback(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` or ``localhost``; a wildcard (0.0.0.0, ::) is not loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: may resolve anywhere


def _validate_templates(config: HubConfig) -> None:
    """Every template of ``submission`` and each room is valid: a typo in a placeholder
    stops startup instead of surprising a submission later."""
    scopes: list[tuple[str, Any]] = [("submission", config.submission)]
    scopes += [(f"rooms.{room}", s) for room, s in config.rooms.items()]
    for prefix, settings in scopes:
        for key in templates.TEMPLATE_KEYS:
            value = getattr(settings, key)
            if value is not None:
                try:
                    templates.check(value, f"{prefix}.{key}")
                except templates.TemplateError as exc:
                    raise ConfigError(str(exc)) from None
        tags = settings.tags
        if tags is not None:
            for tag in templates.split_tags(tags):
                try:
                    templates.check(tag, f"{prefix}.tags")
                except templates.TemplateError as exc:
                    raise ConfigError(str(exc)) from None
    for room in config.rooms:
        if not str(room).isdigit():
            raise ConfigError(f"rooms.{room}: room ids are numbers")


_AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")


def _validate_media_roots(config: HubConfig) -> None:
    for root in config.media_root_list:
        if Path(root).expanduser().resolve() == Path("/"):
            where = "" if config.media_roots else " (unset: the directory the hub runs in)"
            raise ConfigError(
                f"media_roots{where}: / would let the hub upload every file it can read; "
                "set media_roots (--media-root, BUPMESH_MEDIA_ROOTS) to the directories "
                "that hold your recordings")


def _validate_agents(agents: AgentsSettings) -> None:
    for agent_id, accounts in agents.allowed_accounts.items():
        if not _AGENT_ID.fullmatch(str(agent_id)):
            raise ConfigError(f"agents.allowed_accounts.{agent_id}: not an agent id "
                              "(1-128 letters, digits or ._:@-)")
        if any(not str(a).strip() or len(str(a)) > 64 for a in accounts):
            raise ConfigError(f"agents.allowed_accounts.{agent_id}: account names are 1-64 "
                              "characters")


def _validate_alerts(alerts: AlertSettings) -> None:
    url = alerts.webhook_url
    if url is not None and not url.startswith(("http://", "https://")):
        # The URL may hold a token: the message never quotes it.
        raise ConfigError("alerts.webhook_url: expected an http(s) URL")
    for name in ("agent_offline_seconds", "failure_window_seconds", "low_speed_seconds",
                 "evaluate_interval_seconds", "webhook_timeout_seconds"):
        if getattr(alerts, name) <= 0:
            raise ConfigError(f"alerts.{name}: must be positive")
    if not 0 < alerts.failure_rate <= 1:
        raise ConfigError("alerts.failure_rate: must be in (0, 1]")
    if alerts.min_failures < 1:
        raise ConfigError("alerts.min_failures: must be at least 1")
    if alerts.low_speed_bps < 0:
        raise ConfigError("alerts.low_speed_bps: must not be negative (0 turns it off)")
    if not 0 <= alerts.webhook_retries <= 10:
        raise ConfigError("alerts.webhook_retries: must be between 0 and 10")


def load_hub_config(
    *, file: str | None = None, env: Any = None, flags: dict[str, Any] | None = None
) -> HubConfig:
    return validate(load_config(HubConfig, file=file, env=env, env_keys=ENV_KEYS, flags=flags))
