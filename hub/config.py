"""Hub settings, decoded by ``bupmesh.config.load_config``.

Every key of the public config is declared here with its default, and
unknown keys are refused, so a typo in ``hub.yml`` is an error naming the key
instead of a silently ignored setting. ``validate`` adds the checks msgspec
cannot express: required secrets, TLS-or-insecure, HOST:PORT shapes.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from bupmesh.config import ConfigError, load_config, parse_host_port
from hub.core import templates
from uploader.client import DEFAULT_MEMBER_URL


class _S(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


HOUR = 3600
DAY = 86400


# Every setting carries a description, and every number its valid range: msgspec
# checks the range while decoding, so a value outside it stops startup with one line
# naming the key, and docs/reference.md's settings table is drawn from both
# (bupmesh/reference.py).
def _n(kind: type, lo: float | None, hi: float | None, doc: str, *, gt: bool = False) -> Any:
    meta = Meta(gt=lo, le=hi, description=doc) if gt else Meta(ge=lo, le=hi, description=doc)
    return Annotated[kind, meta]


def _d(kind: Any, doc: str) -> Any:
    return Annotated[kind, Meta(description=doc)]


class TLSSettings(_S):
    cert_file: _d(str | None, "the hub's certificate (PEM, with the CA chain) for gRPC and "
                  "HTTP") = None
    key_file: _d(str | None, "its private key") = None


class BilibiliSettings(_S):
    member_url: _d(str, "Bilibili's member API (preupload, submission); agents get it in "
                   "each Offer") = DEFAULT_MEMBER_URL
    passport_url: _d(str, "passport API (TV QR login)") = "https://passport.bilibili.com"
    api_url: _d(str, "web API (x/web-interface/nav: is an account still logged in)") = \
        "https://api.bilibili.com"


class HeartbeatSettings(_S):
    interval_seconds: _n(float, 0, HOUR, "how often agents send a heartbeat", gt=True) = 30
    offline_after_seconds: _n(float, 0, DAY, "an agent silent this long is offline and its "
                              "stream closed (must exceed interval_seconds)", gt=True) = 90
    held_grace_seconds: _n(float, 0, HOUR, "how long a lost stream's uploading leases wait "
                           "for their agent to dial back and hold them (0: re-queue at once)") = 0


class ReconnectSettings(_S):
    """The reconnect window agents are told in Welcome (hub/agents/reconnect_window.py):
    after losing the hub they dial at a random moment of each window, so a fleet
    returns at about the rate the hub admits sessions."""

    window_min_seconds: _n(float, 0, HOUR, "narrowest reconnect window agents are told "
                           "(a small fleet's)") = 5
    window_max_seconds: _n(float, 0, HOUR, "widest reconnect window agents are told (0: "
                           "none: agents keep their own 1-60 s backoff)") = 60
    admission_rate: _n(float, 0, 100_000, "sessions per second the window is sized for (0: "
                       "measured from what admitting a session costs the hub)") = 0


class SchedulerSettings(_S):
    strategy: _d(Literal["round_robin", "least_connections", "weighted_round_robin",
                         "ip_diversity", "locality"],
                 "which agent uploads a part next; every strategy honours the risk "
                 "ledger") = "ip_diversity"


class RiskSettings(_S):
    min_interval_seconds: _n(float, 0, DAY, "least time between two upload starts on one "
                             "IP") = 300
    max_uploads_per_hour: _n(int, 0, 1_000_000, "upload starts per IP in any hour (0: no cap)") = 6
    cooldown_seconds: _n(float, 0, 7 * DAY, "first cooldown of an IP after a risk-control "
                         "answer (it grows with repeats)") = 3600
    disable_after_events: _n(int, 0, 1000, "risk events after which an IP is disabled until "
                             "an admin re-enables it (0: never)") = 3


class RetrySettings(_S):
    network_retries: _n(int, 0, 100, "retries on the same agent after a network error") = 3
    backoff_initial_seconds: _n(float, 0, HOUR, "first retry delay (doubles each time)") = 1
    backoff_max_seconds: _n(float, 0, DAY, "longest retry delay") = 60


class IngestSettings(_S):
    bililive_recorder_work_dir: _d(str | None, "BililiveRecorder's work directory: its "
                                   "webhooks' paths must lie inside") = None
    blrec_work_dir: _d(str | None, "blrec's work directory: its webhooks' paths must lie "
                       "inside") = None
    watch_dirs: _d(list[str], "directories the folder watcher polls for finished files "
                   "(recorders without webhooks)") = []
    webhook_secret: _d(str | None, "secret the recorder webhooks must present (?secret=, "
                       "X-Webhook-Secret or a bearer token)") = None
    blrec_file_event: _d(Literal["VideoFileCompletedEvent", "VideoPostprocessingCompletedEvent"],
                         "which blrec event brings a finished file (the post-processed one "
                         "when blrec remuxes)") = "VideoFileCompletedEvent"
    watch_interval_seconds: _n(float, 0, HOUR, "how often the folder watcher polls",
                               gt=True) = 5
    watch_stable_seconds: _n(float, 0, DAY, "how long a file must hold still to count as "
                             "finished") = 30
    watch_session_gap_seconds: _n(float, 0, 7 * DAY, "a pause longer than this starts a new "
                                  "recording and ends the old one") = 1800


_API = Literal["auto", "web", "app"]


class SubmissionSettings(_S):
    auto_submit: _d(bool, "submit a recording by itself once its session ended and every "
                    "part is up") = False
    account: _d(str | None, "account to upload and submit as (unset: the only one)") = None
    title_template: _d(str, "archive title; placeholders such as ${title} ${uname} "
                       "${yyyy}") = "${title}"
    part_title_template: _d(str, "title of each part") = "P${index}"
    desc_template: _d(str, "archive description") = ""
    tags: _d(str | list[str], "tags, comma-separated or a list") = ""
    tid: _n(int, 1, 100_000, "Bilibili category (分区) id") = 171
    copyright: _n(int, 1, 2, "1: original work, 2: repost") = 2
    source_template: _d(str, "source of a repost (empty: the live room's URL)") = ""
    api: _d(_API, "web (add/v3, cookies), app (app/add, access key), or auto (web when the "
            "cookies carry bili_jct)") = "auto"
    settle_seconds: _n(float, 0, DAY, "a recording is submitted once unchanged this long "
                       "after its session ended") = 10
    unknown_wait_seconds: _n(float, 0, DAY, "after a Submit whose outcome is unknown, wait "
                             "this long before looking for the archive") = 30
    agent_deadline_seconds: _n(float, 1, HOUR, "an agent abandons a Submit this long after "
                               "receiving it; a lost answer is retried only after this plus "
                               "unknown_wait_seconds") = 90
    retry_seconds: _n(float, 0, DAY, "delay before another Submit after a risk-control "
                      "answer or a network failure") = 60


class RoomSettings(_S):
    """Per-room overrides: the submission keys, unset ones fall back to ``submission``."""

    auto_submit: _d(bool | None, "as submission.auto_submit, for this room") = None
    account: _d(str | None, "as submission.account") = None
    title_template: _d(str | None, "as submission.title_template") = None
    part_title_template: _d(str | None, "as submission.part_title_template") = None
    desc_template: _d(str | None, "as submission.desc_template") = None
    tags: _d(str | list[str] | None, "as submission.tags") = None
    tid: _n(int, 1, 100_000, "as submission.tid") | None = None
    copyright: _n(int, 1, 2, "as submission.copyright") | None = None
    source_template: _d(str | None, "as submission.source_template") = None


class AlertSettings(_S):
    """When the hub raises an alert (hub/alerts/rules.py) and where it goes (the log, and a
    JSON POST to ``webhook_url`` when set; the URL may carry a token: never logged)."""

    webhook_url: _d(str | None, "where alerts are POSTed as JSON (may carry a token; never "
                    "logged)") = None
    agent_offline_seconds: _n(float, 0, 7 * DAY, "alert when an agent is offline this long",
                              gt=True) = 300
    failure_rate: _n(float, 0, 1, "alert when more than this share of ended tasks failed",
                     gt=True) = 0.1
    failure_window_seconds: _n(float, 0, 7 * DAY, "the window failure_rate counts over",
                               gt=True) = 3600
    min_failures: _n(int, 1, 100_000, "failures needed in the window before failure_rate "
                     "alerts") = 3
    low_speed_bps: _n(float, 0, None, "alert when an upload stays below this speed, bytes/s "
                      "(0: off)") = 100 * 1024
    low_speed_seconds: _n(float, 0, DAY, "how long an upload must stay slow to alert",
                          gt=True) = 300
    evaluate_interval_seconds: _n(float, 0, HOUR, "how often the alert rules run",
                                  gt=True) = 15
    webhook_timeout_seconds: _n(float, 0, 600, "timeout of one webhook POST", gt=True) = 10
    webhook_retries: _n(int, 0, 10, "retries of a failed webhook POST") = 3


class HubConfig(_S):
    http_listen: _d(str, "admin HTTP API, web UI, webhooks, /metrics (HOST:PORT)") = \
        "0.0.0.0:12380"
    grpc_listen: _d(str, "the gRPC link agents dial (HOST:PORT)") = "0.0.0.0:12382"
    data_dir: _d(str, "SQLite database and key material (made 0700)") = "./data"
    psk: _d(str, "pre-shared key agents register with (required)") = ""
    admin_token: _d(str, "bearer token of the admin API and web UI (required)") = ""
    tls: TLSSettings = msgspec.field(default_factory=TLSSettings)
    insecure: _d(bool, "serve plaintext on a non-loopback address anyway") = False
    compression: _d(Literal["none", "gzip"], "gRPC compression of the link") = "none"
    token_ttl_seconds: _n(float, 10, 30 * DAY, "lifetime of an agent's JWT (refreshed "
                          "before it expires)") = 86400
    bilibili: BilibiliSettings = msgspec.field(default_factory=BilibiliSettings)
    heartbeat: HeartbeatSettings = msgspec.field(default_factory=HeartbeatSettings)
    reconnect: ReconnectSettings = msgspec.field(default_factory=ReconnectSettings)
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


ENV_KEYS = {
    "BUPMESH_PSK": "psk",
    "BUPMESH_ADMIN_TOKEN": "admin_token",
    "BUPMESH_DATA_DIR": "data_dir",
    "BUPMESH_BILI_MEMBER_URL": "bilibili.member_url",
    "BUPMESH_ALERT_WEBHOOK_URL": "alerts.webhook_url",
}


def validate(config: HubConfig) -> HubConfig:
    """Checks beyond types; each failure names the setting."""
    if not config.psk.strip():
        raise ConfigError("psk: required setting is missing (--psk or BUPMESH_PSK)")
    if not config.admin_token.strip():
        raise ConfigError(
            "admin_token: required setting is missing (--admin-token or BUPMESH_ADMIN_TOKEN)"
        )
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
    if hb.offline_after_seconds <= hb.interval_seconds:
        raise ConfigError("heartbeat.offline_after_seconds: must exceed interval_seconds")
    rc = config.reconnect
    if rc.window_max_seconds and rc.window_min_seconds > rc.window_max_seconds:
        raise ConfigError("reconnect.window_min_seconds: must not exceed window_max_seconds")
    _validate_templates(config)
    url = config.alerts.webhook_url
    if url is not None and not url.startswith(("http://", "https://")):
        # The URL may hold a token: the message never quotes it.
        raise ConfigError("alerts.webhook_url: expected an http(s) URL")
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


def load_hub_config(
    *, file: str | None = None, env: Any = None, flags: dict[str, Any] | None = None
) -> HubConfig:
    return validate(load_config(HubConfig, file=file, env=env, env_keys=ENV_KEYS, flags=flags))
