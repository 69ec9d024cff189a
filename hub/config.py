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
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from bupmesh.config import ConfigError, load_config, parse_host_port
from hub.core import templates
from protocol.grpc_options import MAX_SUBMIT_COVER
from uploader.client import DEFAULT_MEMBER_URL
from uploader.covers import image_type
from uploader.limits import DTIME_MIN_AHEAD


class _S(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


HOUR = 3600
DAY = 86400
LIVE_COVER = "live"  # submission.cover: the recorder's live cover
# A scheduled time must still be 2 h ahead when the agent checks it, after the Submit
# crossed the link and waited for its turn: the shortest delay leaves 5 minutes for that.
PUBLISH_DELAY_MIN = DTIME_MIN_AHEAD + 300


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
                           "for their agent to dial back and hold them (0: re-queue at once; "
                           "keep it no shorter than the agents' agent.held_grace)") = 60


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


class AccountRiskSettings(_S):
    """The account ledger (hub/core/account_risk.py): what one Bilibili account may do,
    whatever IP it does it from. 0 turns a gap or a cap off.

    The defaults are conservative figures from what users of public uploaders
    report: preupload throttling somewhere between 6 and about 20 uploads an hour;
    137022 after about 15 submissions 10 minutes apart; 21515 (a penalty) after
    about 30 submissions 5 minutes apart, i.e. for a machine's regular beat, which
    ``submit_gap_jitter`` avoids.
    """

    preupload_min_gap_seconds: _n(float, 0, DAY, "least time between two preuploads of "
                                  "the account, on any IP") = 10
    preuploads_per_hour: _n(int, 0, 1_000_000, "preuploads of the account in any sliding "
                            "hour (0: no cap)") = 20
    preuploads_per_day: _n(int, 0, 10_000_000, "preuploads of the account in any sliding "
                           "day (0: no cap)") = 300
    submit_min_gap_seconds: _n(float, 0, DAY, "least time between two submissions of the "
                               "account") = 600
    submit_gap_jitter: _n(float, 0, 4, "each gap between submissions is stretched by up to "
                          "this fraction of submit_min_gap_seconds, varying, so a backlog "
                          "never goes out on a regular beat") = 0.5
    submits_per_hour: _n(int, 0, 100_000, "submissions of the account in any sliding hour "
                         "(0: no cap)") = 4
    submits_per_day: _n(int, 0, 1_000_000, "submissions of the account in any sliding day "
                        "(0: no cap)") = 12
    throttle_cooldown_seconds: _n(float, 1, 7 * DAY, "first wait after 21566/137022 when "
                                  "Bilibili names none; doubles on a repeat") = 1800
    throttle_cooldown_max_seconds: _n(float, 1, 7 * DAY, "longest wait after "
                                      "21566/137022") = DAY
    suspect_ips: _n(int, 2, 1000, "risk-control answers to one account from this many IPs "
                    "within suspect_window_seconds, with none of its uploads accepted in "
                    "between, put the account, not the IPs, at fault (one 601 voucher, or "
                    "406s their IPs do not explain)") = 2
    suspect_window_seconds: _n(float, 60, DAY, "see suspect_ips") = 3600
    cooldown_seconds: _n(float, 1, 7 * DAY, "preupload pause of an account found at "
                         "fault") = 3600


class RiskSettings(_S):
    min_interval_seconds: _n(float, 0, DAY, "least time between two upload starts on one "
                             "IP") = 300
    max_uploads_per_hour: _n(int, 0, 1_000_000, "upload starts per IP in any hour (0: no cap)") = 6
    cooldown_seconds: _n(float, 0, 7 * DAY, "first cooldown of an IP after a risk-control "
                         "answer (it grows with repeats)") = 3600
    disable_after_events: _n(int, 0, 1000, "risk events after which an IP is disabled until "
                             "an admin re-enables it (0: never)") = 3
    learned_clean_seconds: _n(float, 60, 30 * DAY, "a limit learned from risk-control "
                              "answers is forgotten after this long without a new one") = DAY
    mesh_quorum: _n(int, 2, 1000, "IPs whose learned limits must agree before every IP is "
                    "held to that limit") = 3
    account: AccountRiskSettings = msgspec.field(default_factory=AccountRiskSettings)


class RetrySettings(_S):
    network_retries: _n(int, 0, 100, "retries on the same agent after a network error") = 3
    backoff_initial_seconds: _n(float, 0, HOUR, "first retry delay (doubles each time)") = 1
    backoff_max_seconds: _n(float, 0, DAY, "longest retry delay") = 60
    completion_wait_seconds: _n(float, 0, 7 * DAY, "a part whose completion the hub "
                                "granted, with no answer since (its agent or the hub "
                                "died), waits this long for that agent or another on the "
                                "IP it was granted on, the only ones that can repeat it "
                                "when upos binds a session to its IP; then any IP may take it, and "
                                "a fresh session may leave a second copy at Bilibili "
                                "(0: any IP at once)") = 3600


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
    # The archive beyond title, tags and description.
    cover: _d(str, "cover image: a PNG/JPEG/GIF/WebP file (at most 768 KiB), or `live` for "
              "the recorder's live cover (blrec's downloaded cover, BililiveRecorder's "
              "<file>.cover.jpg); empty: Bilibili picks a frame") = ""
    dynamic_template: _d(str, "text of the dynamic (动态) posted with the archive") = ""
    publish_delay_seconds: _n(float, 0, 15 * DAY, "schedule publishing (dtime) this long after "
                              "the submission: 0 publishes once approved, else 2 h to 15 "
                              "days") = 0
    season_id: _n(int, 0, None, "collection (合集) the archive joins once created (0: none)") = 0
    section_id: _n(int, 0, None, "section of that collection (0: its first)") = 0
    no_reprint: _d(bool, "forbid reposts (未经作者授权禁止转载)") = False
    is_only_self: _d(bool, "archive visible to its owner only (仅自己可见)") = False
    up_close_reply: _d(bool, "close comments") = False
    up_close_danmu: _d(bool, "close danmaku") = False
    append_late_parts: _d(bool, "a part that arrives after its recording was submitted is "
                          "appended to the archive (an edit, which sends it back to "
                          "review)") = True
    parts_per_request: _n(int, 1, 100, "videos one submission or edit carries; a longer "
                          "recording is submitted with the first ones and the rest appended "
                          "(Bilibili refuses more than 100 with 21058)") = 100
    review_poll_seconds: _n(float, 0, 7 * DAY, "how often the review state of each archive "
                            "still pending is read (0: never)") = 300
    review_poll_batch: _n(int, 1, 100, "archives one review poll asks about, at most") = 20


Trigger = Literal["never", "uploaded", "submitted", "approved"]


class RoomRetention(_S):
    """A room's retention keys; each unset one falls back to the global ``retention``."""

    trigger: _d(Trigger | None, "as retention.trigger, for this room") = None
    action: _d(Literal["delete", "move"] | None, "as retention.action") = None
    move_to: _d(str | None, "as retention.move_to") = None
    delay_days: _n(float, 0, 3650, "as retention.delay_days") | None = None
    dry_run: _d(bool | None, "as retention.dry_run") = None


class RetentionSettings(_S):
    """What happens to a recording's files once the hub is done with them
    (hub/retention/): nothing by default."""

    trigger: _d(Trigger, "when a recording's files may go: never; uploaded (every part "
                "uploaded); submitted (its archive exists); approved (the archive passed "
                "review)") = "never"
    action: _d(Literal["delete", "move"], "what happens to them then") = "delete"
    move_to: _d(str | None, "for action move: an absolute directory; a file keeps its "
                "folder's name under it and never replaces another") = None
    delay_days: _n(float, 0, 3650, "days after the trigger (on the hub's clock) before "
                   "acting") = 0
    dry_run: _d(bool, "decide and record every action, but leave the files where they "
                "are") = False
    min_free_gb: _n(float, 0, 1_000_000, "alert when a recorder directory has less free "
                    "space, GB (0: no alert)") = 0
    interval_seconds: _n(float, 0, HOUR, "how often retention looks at the recordings",
                         gt=True) = 60


class StorageSettings(_S):
    """The hub's own data directory running out of space (hub/store/space.py)."""

    resume_free_mb: _n(float, 0, 1_048_576, "after the data directory was full, writes "
                       "resume once this many MiB are free") = 64
    probe_interval_seconds: _n(float, 0, 300, "how often a full data directory is looked "
                               "at", gt=True) = 5


class RoomSettings(_S):
    """Per-room overrides: the submission keys, unset ones fall back to ``submission``;
    ``retention`` keys fall back to the global ``retention`` one by one."""

    auto_submit: _d(bool | None, "as submission.auto_submit, for this room") = None
    account: _d(str | None, "as submission.account") = None
    title_template: _d(str | None, "as submission.title_template") = None
    part_title_template: _d(str | None, "as submission.part_title_template") = None
    desc_template: _d(str | None, "as submission.desc_template") = None
    tags: _d(str | list[str] | None, "as submission.tags") = None
    tid: _n(int, 1, 100_000, "as submission.tid") | None = None
    copyright: _n(int, 1, 2, "as submission.copyright") | None = None
    source_template: _d(str | None, "as submission.source_template") = None
    cover: _d(str | None, "as submission.cover (empty: no cover for this room)") = None
    dynamic_template: _d(str | None, "as submission.dynamic_template") = None
    publish_delay_seconds: _n(float, 0, 15 * DAY, "as submission.publish_delay_seconds") | None \
        = None
    season_id: _n(int, 0, None, "as submission.season_id (0: no collection for this room)") \
        | None = None
    section_id: _n(int, 0, None, "as submission.section_id") | None = None
    no_reprint: _d(bool | None, "as submission.no_reprint") = None
    is_only_self: _d(bool | None, "as submission.is_only_self") = None
    up_close_reply: _d(bool | None, "as submission.up_close_reply") = None
    up_close_danmu: _d(bool | None, "as submission.up_close_danmu") = None
    append_late_parts: _d(bool | None, "as submission.append_late_parts") = None
    retention: RoomRetention = msgspec.field(default_factory=RoomRetention)


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


class AgentsSettings(_S):
    """How agents are admitted (hub/agents/auth.py, hub/agents/admission.py)."""

    allow_psk: _d(bool, "the shared PSK registers any agent id; false: only per-agent "
                  "tokens (bupmesh hub agent-token create ID)") = True
    require_approval: _d(bool, "an agent id first seen through the PSK waits as pending, "
                         "with no work, until an admin approves it") = False
    allowed_accounts: _d(dict[str, list[str]], "agent id -> the accounts (names or ids) "
                         "whose credentials it may receive; an agent not listed may use "
                         "every account, or what the API set for it") = {}


class HubConfig(_S):
    http_listen: _d(str, "admin HTTP API, web UI, webhooks, /metrics (HOST:PORT)") = \
        "0.0.0.0:12380"
    grpc_listen: _d(str, "the gRPC link agents dial (HOST:PORT)") = "0.0.0.0:12382"
    data_dir: _d(str, "SQLite database and key material (made 0700; never uploaded)") = \
        "./data"
    psk: _d(str, "pre-shared key agents register with (required unless "
            "agents.allow_psk is false)") = ""
    admin_token: _d(str, "bearer token of the admin API and web UI (required)") = ""
    viewer_token: _d(str, "read-only bearer token: the API's reads, the web UI, /metrics "
                     "and the event stream; every change is refused (empty: no viewer)") = ""
    media_roots: _d(list[str] | str | None,
                    "directories whose files the hub may upload, after symlinks, besides the "
                    "ingest directories; never the data directory (unset: the directory the "
                    "hub runs in; a string is split on the path separator)") = None
    agents: AgentsSettings = msgspec.field(default_factory=AgentsSettings)
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
    retention: RetentionSettings = msgspec.field(default_factory=RetentionSettings)
    storage: StorageSettings = msgspec.field(default_factory=StorageSettings)

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
    if hb.offline_after_seconds <= hb.interval_seconds:
        raise ConfigError("heartbeat.offline_after_seconds: must exceed interval_seconds")
    rc = config.reconnect
    if rc.window_max_seconds and rc.window_min_seconds > rc.window_max_seconds:
        raise ConfigError("reconnect.window_min_seconds: must not exceed window_max_seconds")
    _validate_templates(config)
    _validate_archive(config)
    url = config.alerts.webhook_url
    if url is not None and not url.startswith(("http://", "https://")):
        # The URL may hold a token: the message never quotes it.
        raise ConfigError("alerts.webhook_url: expected an http(s) URL")
    _validate_retention(config)
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
    check_scope(config.submission, "submission")
    for room, settings in config.rooms.items():
        check_room(str(room), settings, config, f"rooms.{room}")


def check_room(room_id: str, room: RoomSettings, config: HubConfig, prefix: str = "") -> None:
    """What msgspec cannot check in one room's settings, by the rules ``hub.yml`` follows
    (the same for a room from ``hub.yml`` and one from the admin API); a ConfigError
    names the key under ``prefix`` (``rooms.<id>`` at startup, nothing for the admin
    API, whose body is the room itself). ``config``: the settings the room inherits."""
    if not room_id.isdigit():
        raise ConfigError(f"{prefix or 'room_id'}: room ids are numbers")
    check_scope(room, prefix)
    submission = config.submission
    season = room.season_id if room.season_id is not None else submission.season_id
    section = room.section_id if room.section_id is not None else submission.section_id
    if section and not season:
        raise ConfigError(f"{_key(prefix, 'section_id')}: needs a season_id")
    _check_retention(room.retention, config, _key(prefix, "retention"))


def check_scope(settings: Any, prefix: str) -> None:
    """Templates, tags, schedule and cover of ``submission`` or of one room."""
    try:
        for key in templates.TEMPLATE_KEYS:
            value = getattr(settings, key)
            if value is not None:
                templates.check(value, _key(prefix, key))
        if settings.tags is not None:
            for tag in templates.split_tags(settings.tags):
                templates.check(tag, _key(prefix, "tags"))
    except templates.TemplateError as exc:
        raise ConfigError(str(exc)) from None
    delay = settings.publish_delay_seconds
    if delay is not None and 0 < delay < PUBLISH_DELAY_MIN:
        raise ConfigError(
            f"{_key(prefix, 'publish_delay_seconds')}: Bilibili publishes at least 2 h after "
            f"submission; use 0 (publish once approved) or at least {PUBLISH_DELAY_MIN:.0f}")
    if settings.cover:
        check_cover_file(settings.cover, _key(prefix, "cover"))


def _key(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


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
def _validate_retention(config: HubConfig) -> None:
    """The global retention rule (each room's is checked with the room)."""
    _check_retention(RoomRetention(), config, "retention")


def _check_retention(over: Any, config: HubConfig, where: str) -> None:
    """A move needs somewhere to go, outside every watched directory (the watcher would
    import a moved file again as a new one). ``over``: a room's retention keys, each
    unset one falling back to ``config.retention``."""
    watched = [Path(d).expanduser().resolve() for d in config.ingest.watch_dirs]
    for prefix, settings in ((where, over), ("retention", config.retention)):
        if settings.move_to is not None:
            target = Path(settings.move_to).expanduser()
            if not target.is_absolute():
                raise ConfigError(f"{prefix}.move_to: expected an absolute path")
            inside = [d for d in watched if target.resolve().is_relative_to(d)]
            if inside:
                raise ConfigError(f"{prefix}.move_to: {target} is inside the watched directory "
                                  f"{inside[0]}: moved files would be imported again")
    trigger = over.trigger or config.retention.trigger
    action = over.action or config.retention.action
    if trigger != "never" and action == "move" and not (over.move_to
                                                         or config.retention.move_to):
        raise ConfigError(f"{where}.move_to: required with action: move")


def _validate_archive(config: HubConfig) -> None:
    """The collection of ``submission`` (its schedule and cover are checked with its
    templates, each room's with the room)."""
    if config.submission.section_id and not config.submission.season_id:
        raise ConfigError("submission.section_id: needs a season_id")


def check_cover_file(cover: str, setting: str) -> None:
    """A cover setting names ``live`` or a readable image small enough for one Submit."""
    if cover == LIVE_COVER:
        return
    path = Path(cover)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {cover}: {exc.strerror or exc}") from None
    if size > MAX_SUBMIT_COVER:
        raise ConfigError(f"{setting}: {cover} is {size} bytes; a cover travels in one "
                          f"message of at most {MAX_SUBMIT_COVER} (save it as a JPEG)")
    if image_type(head) is None:
        raise ConfigError(f"{setting}: {cover} is not a PNG, JPEG, GIF or WebP image")


def load_hub_config(
    *, file: str | None = None, env: Any = None, flags: dict[str, Any] | None = None
) -> HubConfig:
    return validate(load_config(HubConfig, file=file, env=env, env_keys=ENV_KEYS, flags=flags))
