"""Simulator settings: the shape of `GET|POST /_sim/config` and of `--config FILE`."""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

import msgspec

from bupmesh.config import ConfigError, decode
from uploader.sim.facts import DEFAULT_LINES

NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Rate = Annotated[float, msgspec.Meta(ge=0, le=1)]
Count = Annotated[int, msgspec.Meta(ge=0)]

Op = Literal[
    "preupload", "init", "put", "complete", "probe", "submit", "cover",
    "edit", "season", "view", "archives", "zone",
]  # fmt: skip
# lose_reply: the request takes effect as usual, then the connection is reset
# instead of answering (submit, edit, season, cover): the lost answer that
# reconciliation exists for.
Action = Literal["status", "drop", "stall", "code", "lose_reply"]
Flavour = Literal["web", "app"]


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class RiskConfig(Strict):
    """Preupload throttling: a budget per key and window, and how a refusal looks and lasts.

    Reports disagree on what Bilibili counts (the IP, the account, or the two
    together), so ``key`` chooses. A refusal is the old HTTP 406 or, since late
    2025, a non-2xx JSON 601 whose ``v_voucher`` names a captcha; it lasts while
    the window is full, for ``hold_seconds``, or until the captcha is solved.
    """

    preupload_budget: Count = 0  # successful preuploads per key per window; 0 = unlimited
    window_seconds: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    key: Literal["ip", "account", "pair"] = "ip"  # what the budget is counted by
    reply: Literal["406", "601"] = "406"  # how a throttled preupload is answered
    status_601: Annotated[int, msgspec.Meta(ge=400, le=599)] = 406  # the 601 reply's HTTP status
    hold_seconds: NonNegative = 0.0  # a refusal lasts this long; 0 = while the window is full
    until_solved: bool = False  # a refusal lasts until /_sim/captcha/{voucher}/solve (601 only)
    always_406: list[str] = []  # 406 on preupload and on chunk PUTs from these IPs
    code_601: list[str] = []  # JSON 601 (HTTP 200) on preupload, 21540 on submissions

    def __post_init__(self) -> None:
        if self.until_solved and self.reply != "601":
            raise ValueError("until_solved needs reply 601 (only a 601 carries a voucher)")


class UposConfig(Strict):
    """What an upload session is bound to: the preupload's address, and a lifetime.

    ``X-Upos-Auth`` carries the uploader's IP (``uip``) and a timestamp. With
    ``binding: ip`` upos requests from another address get 403; past
    ``auth_lifetime_seconds`` every upos request gets 403 ``AUTH_TS_GT_5DAY``.
    """

    binding: Literal["off", "ip"] = "off"
    auth_lifetime_seconds: NonNegative = 0.0  # 0 = no limit (session_ttl_seconds still applies)


class SubmitConfig(Strict):
    """Submission limits per account, whatever the IP (the codes users report).

    21566: sooner than ``min_gap_seconds`` after the account's last archive;
    137022: more than ``max_per_window`` archives in ``window_seconds``;
    21515: ``cadence_count`` gaps in a row within ``cadence_tolerance_seconds``
    of each other (a machine's regular beat), sticky until ``/_sim/reset``;
    21590: every submission through a route in ``tool_disabled``.
    """

    min_gap_seconds: NonNegative = 0.0  # 0 = off
    max_per_window: Count = 0  # 0 = off
    window_seconds: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    cadence_count: Count = 0  # 0 = off; otherwise at least 2
    cadence_tolerance_seconds: NonNegative = 30.0
    tool_disabled: list[Flavour] = []

    def __post_init__(self) -> None:
        if self.cadence_count == 1:
            raise ValueError("cadence_count: a cadence needs at least 2 gaps (or 0: off)")


class FailRule(Strict):
    """One deterministic fault, consumed by the next `count` matching requests."""

    op: Op
    action: Action = "status"
    status: Annotated[int, msgspec.Meta(ge=100, le=599)] = 503
    code: int = 601
    seconds: NonNegative = 0.0  # stall length; 0 = stall until the client gives up
    count: Annotated[int, msgspec.Meta(ge=1)] = 1
    ip: str | None = None  # None = any source IP


class FaultConfig(Strict):
    status_5xx_rate: Rate = 0.0  # preupload/init/put/complete answered with a random 5xx
    delay_seconds: NonNegative = 0.0  # added before answering preupload/init/put/complete
    drop_put_rate: Rate = 0.0  # chunk PUTs whose connection is reset mid-body
    bandwidth_bps: Count = 0  # body read cap for every source IP (bytes/s); 0 = none
    bandwidth_bps_per_ip: dict[str, Count] = {}  # overrides bandwidth_bps for one IP
    fail_next: list[FailRule] = []


class LineConfig(Strict):
    delay_seconds: NonNegative = 0.0  # added to this line's probe reply (its latency)
    bandwidth_bps: Count = 0  # chunk bodies on this line, per source IP (bytes/s); 0 = no cap


class ReviewConfig(Strict):
    """How archives pass review: pending this long after a submission or an edit, then decided."""

    delay_seconds: NonNegative = 0.0  # 0: approved at once, as before review existed here
    outcome: Literal["approve", "reject"] = "approve"
    reason: str = "视频内容不符合社区规范"  # the reject reason a rejected archive shows
    # Where a rejection's reason appears in archive view and list replies; public
    # sources show both fields and do not say which one the view fills.
    reason_field: Literal["reject_reason", "state_desc"] = "reject_reason"


class ArchiveConfig(Strict):
    # x/web/archives carries each archive's "Videos" (false: "Videos": null, as
    # a sibling endpoint answers; public sources do not say which this one does).
    list_videos: bool = True
    max_parts: Annotated[int, msgspec.Meta(ge=1)] = 100  # videos one add or edit may add (21058)
    dtime_min_seconds: NonNegative = 7200.0  # scheduled publishing window (21006)
    dtime_max_seconds: NonNegative = 15 * 86400.0
    # Collections take only approved archives (unconfirmed; the refusal's code is a guess).
    season_needs_approval: bool = False
    review: ReviewConfig = msgspec.field(default_factory=ReviewConfig)


def _default_lines() -> dict[str, LineConfig]:
    return {name: LineConfig() for name in DEFAULT_LINES}


class SimConfig(Strict):
    chunk_size: Annotated[int, msgspec.Meta(ge=1)] = 10 * 1024 * 1024
    threads: Annotated[int, msgspec.Meta(ge=1)] = 3
    session_ttl_seconds: Annotated[float, msgspec.Meta(gt=0)] = 86400.0
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)
    upos: UposConfig = msgspec.field(default_factory=UposConfig)
    submit: SubmitConfig = msgspec.field(default_factory=SubmitConfig)
    faults: FaultConfig = msgspec.field(default_factory=FaultConfig)
    lines: dict[str, LineConfig] = msgspec.field(default_factory=_default_lines)
    archive: ArchiveConfig = msgspec.field(default_factory=ArchiveConfig)
    seed: int = 0


class SimFileConfig(SimConfig):
    """`bupmesh sim-bili --config FILE`: the simulator config plus where to listen."""

    listen: str = "127.0.0.1:12390"


def to_builtins(config: SimConfig) -> dict[str, Any]:
    return msgspec.to_builtins(config)


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; everything else (lists included) is replaced."""
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def merge_config(current: SimConfig, changes: Any) -> SimConfig:
    """Apply a `POST /_sim/config` body; raises ConfigError naming the bad key."""
    if not isinstance(changes, dict):
        raise ConfigError("(top level): expected a JSON object")
    return decode(SimConfig, deep_merge(to_builtins(current), changes))
