"""The simulator's memory: config, accounts, upload sessions, the ledger, risk counters.

Nothing here speaks HTTP; the route groups (:mod:`uploader.sim.upos`,
:mod:`uploader.sim.member`, ...) turn requests into calls on :class:`SimState`.
One instance lives as long as the simulator process: ``/_sim/reset`` renews
its contents, never the object, so route groups may keep a reference to it.
Ids come from a seeded generator so a run with the same seed hands out the
same object keys, upload ids and archive ids.
"""

from __future__ import annotations

import collections
import copy
import hmac
import random
import string
import time
import urllib.parse
import uuid
from typing import Any

from uploader.sim.accounts import Accounts, with_builtin
from uploader.sim.bandwidth import TokenBucket
from uploader.sim.config import FailRule, SimConfig
from uploader.sim.facts import BUCKET, av2bv
from uploader.sim.risk import SlidingBudget, SubmissionLimits, SubmissionRules, Throttle, Throttles
from uploader.sim.uploads import Ticket, Upload

REQUEST_RING = 100_000

RiskKey = tuple[str | None, int | None]  # (ip, mid): what a preupload budget counts


class SimState:
    def __init__(self, config: SimConfig) -> None:
        self.initial_config = copy.deepcopy(config)
        # Two clocks, replaceable by tests: windows and holds run on `clock`;
        # auth timestamps and ages (what upos compares) on the wall clock.
        self.clock = time.monotonic
        self.wall_clock = time.time
        self.reset()

    # --- lifecycle ----------------------------------------------------------

    def reset(self) -> None:
        self.config = copy.deepcopy(self.initial_config)
        self.reseed()
        self.accounts: Accounts = with_builtin()
        self.tickets: dict[str, Ticket] = {}
        self.uploads: dict[str, Upload] = {}
        self.ledger: list[dict[str, Any]] = []
        self.submissions: list[dict[str, Any]] = []  # the archives, in submission order
        self.covers: dict[str, dict[str, Any]] = {}  # bfs name -> record (bytes under "image")
        self.seasons: list[dict[str, Any]] = []
        self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=REQUEST_RING)
        self.preuploads = SlidingBudget()
        self.throttles = Throttles()
        self.submit_limits = SubmissionLimits()
        self.buckets: dict[str, TokenBucket] = {}
        self.line_buckets: dict[tuple[str, str], TokenBucket] = {}
        self.next_aid = 114_000_000_000_001
        self.next_season_id = 5_000_001
        self.next_biz_id = 500_001_600_000_001

    def reseed(self) -> None:
        seed = self.config.seed
        self.fault_rng = random.Random(seed)
        self.id_rng = random.Random(f"ids-{seed}")
        self.auth_secret = f"sim-upos-{seed}".encode()

    def set_config(self, config: SimConfig) -> None:
        reseed = config.seed != self.config.seed
        self.config = config
        if reseed:
            self.reseed()

    # --- bookkeeping --------------------------------------------------------

    def record(
        self,
        op: str,
        ip: str,
        *,
        status: int,
        upload_id: str | None = None,
        part: int | None = None,
        code: int | None = None,
        line: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Log one answered request for ``GET /_sim/requests`` (a bounded ring).

        ``reason`` names why upos refused a session (its 403 carries no code).
        """
        entry: dict[str, Any] = {
            "op": op,
            "ip": ip,
            "upload_id": upload_id,
            "part": part,
            "status": status,
            "code": code,
            "time": self.wall_clock(),
        }
        if line is not None:
            entry["line"] = line
        if reason is not None:
            entry["reason"] = reason
        self.requests.append(entry)

    # --- faults -------------------------------------------------------------

    def take_rule(self, op: str, ip: str) -> FailRule | None:
        """Consume one use of the first ``fail_next`` rule matching this request."""
        rules = self.config.faults.fail_next
        for index, rule in enumerate(rules):
            if rule.op == op and (rule.ip is None or rule.ip == ip):
                taken = copy.copy(rule)
                rule.count -= 1
                if rule.count <= 0:
                    del rules[index]
                return taken
        return None

    def roll(self, rate: float) -> bool:
        return rate > 0 and self.fault_rng.random() < rate

    def random_5xx(self) -> int:
        return self.fault_rng.choice((500, 502, 503, 504))

    def bucket_for(self, ip: str) -> TokenBucket | None:
        faults = self.config.faults
        rate = faults.bandwidth_bps_per_ip.get(ip, faults.bandwidth_bps)
        return _bucket(self.buckets, ip, rate)

    def line_bucket_for(self, line: str, ip: str) -> TokenBucket | None:
        """The cap of one source IP's path to one line (each client has its own)."""
        config = self.config.lines.get(line)
        return _bucket(self.line_buckets, (line, ip), config.bandwidth_bps if config else 0)

    # --- risk ---------------------------------------------------------------

    def risk_key(self, ip: str, mid: int | None) -> RiskKey | None:
        """What the preupload budget counts for this request (None: nothing to count by)."""
        key = self.config.risk.key
        if key == "ip":
            return (ip, None)
        if mid is None:  # not logged in: answered -101 anyway
            return None
        return (None, mid) if key == "account" else (ip, mid)

    def preupload_refusal(self, ip: str, mid: int | None) -> Throttle | None:
        """The throttle refusing this preupload, or None: then `count_preupload` on success.

        A key over its budget starts a throttle; it lasts while the window is
        full, ``hold_seconds``, or until its voucher is solved, and every refusal
        it causes carries the same voucher.
        """
        key = self.risk_key(ip, mid)
        if key is None:
            return None
        risk = self.config.risk
        now = self.clock()
        throttle = self.throttles.current(key, now=now)
        if throttle is not None:
            return throttle
        limit, window = risk.preupload_budget, risk.window_seconds
        if self.preuploads.allows(key, limit=limit, window=window, now=now):
            return None
        if risk.until_solved:
            until = None
        elif risk.hold_seconds > 0:
            until = now + risk.hold_seconds
        else:
            until = self.preuploads.frees_at(key, limit=limit, window=window, now=now)
        voucher = self.new_voucher() if risk.reply == "601" else None
        return self.throttles.start(key, now=now, until=until, voucher=voucher)

    def count_preupload(self, ip: str, mid: int | None) -> None:
        key = self.risk_key(ip, mid)
        if key is not None:
            self.preuploads.count(key, now=self.clock())

    def new_voucher(self) -> str:
        return f"voucher_{uuid.UUID(int=self.id_rng.getrandbits(128), version=4)}"

    def solve_captcha(self, voucher: str) -> Throttle | None:
        """The captcha behind ``voucher`` is solved: its key may preupload again, afresh."""
        throttle = self.throttles.solve(voucher)
        if throttle is not None:
            self.preuploads.clear(throttle.key)
        return throttle

    def submit_refusal(self, mid: int, flavour: str) -> int | None:
        """The code refusing this account's submission now (None: accept, then count it)."""
        submit = self.config.submit
        if flavour in submit.tool_disabled:
            return 21590
        rules = SubmissionRules(
            min_gap=submit.min_gap_seconds,
            max_per_window=submit.max_per_window,
            window=submit.window_seconds,
            cadence_count=submit.cadence_count,
            cadence_tolerance=submit.cadence_tolerance_seconds,
        )
        return self.submit_limits.refusal(mid, rules, now=self.clock())

    def count_submission(self, mid: int) -> None:
        self.submit_limits.count(mid, now=self.clock())

    def risk_view(self) -> dict[str, Any]:
        """``GET /_sim/risk``: who is throttled now, with what voucher, and who is penalised."""
        now = self.clock()
        return {
            "throttled": [
                {
                    "ip": t.key[0],
                    "mid": t.key[1],
                    "voucher": t.voucher,
                    "seconds_left": None if t.until is None else round(t.until - now, 3),
                }
                for t in self.throttles.all(now=now)
            ],
            "penalised": sorted(self.submit_limits.penalised),
        }

    # --- upos ---------------------------------------------------------------

    def _random_token(self, length: int) -> str:
        alphabet = string.ascii_lowercase + string.digits
        return "".join(self.id_rng.choice(alphabet) for _ in range(length))

    def new_ticket(
        self, *, name: str, size: int | None, mid: int, ip: str, host: str, line: str
    ) -> Ticket:
        self.purge_expired()
        ext = name.rsplit(".", 1)[1].lower() if "." in name else "mp4"
        ext = "".join(c for c in ext if c.isalnum())[:8] or "mp4"
        key = f"n{time.strftime('%y%m%d')}{self._random_token(25)}.{ext}"
        biz_id = self.next_biz_id
        self.next_biz_id += self.id_rng.randint(1, 97)
        now = self.wall_clock()
        fields = {
            "ak": "1494471752",
            "cdn": f"//{host}",
            "os": "upos",
            "timestamp": f"{now:.3f}",
            "uid": str(mid),
            "uip": ip,
            "uport": str(self.id_rng.randint(20000, 60000)),
            "use_dqp": "0",
        }
        message = f"{BUCKET}/{key}|{fields['timestamp']}|{mid}".encode()
        fields["sign"] = hmac.new(self.auth_secret, message, "md5").hexdigest()
        order = ("ak", "cdn", "os", "sign", "timestamp", "uid", "uip", "uport", "use_dqp")
        auth = urllib.parse.urlencode([(k, fields[k]) for k in order])
        ticket = Ticket(
            key=key,
            auth=auth,
            biz_id=biz_id,
            name=name,
            size=size,
            chunk_size=self.config.chunk_size,
            mid=mid,
            ip=ip,
            line=line,
            created_at=now,
        )
        self.tickets[key] = ticket
        return ticket

    def expired(self, ticket: Ticket) -> bool:
        return self.wall_clock() > ticket.created_at + self.config.session_ttl_seconds

    def auth_too_old(self, ticket: Ticket) -> bool:
        lifetime = self.config.upos.auth_lifetime_seconds
        return lifetime > 0 and self.wall_clock() > ticket.created_at + lifetime

    def purge_expired(self) -> None:
        """Forget expired, unfinished sessions (and the parts they held)."""
        for upload_id, upload in list(self.uploads.items()):
            if upload.completed is None and self.expired(upload.ticket):
                del self.uploads[upload_id]
        for key, ticket in list(self.tickets.items()):
            if self.expired(ticket) and not any(u.ticket is ticket for u in self.uploads.values()):
                del self.tickets[key]

    def new_upload(self, ticket: Ticket, size: int | None) -> Upload:
        upload_id = str(uuid.UUID(int=self.id_rng.getrandbits(128), version=4))
        upload = Upload(
            upload_id=upload_id,
            ticket=ticket,
            size=ticket.size if ticket.size is not None else size,
            chunk_size=ticket.chunk_size,
            created_at=self.wall_clock(),
        )
        self.uploads[upload_id] = upload
        return upload

    def complete(self, upload: Upload, name: str, ip: str) -> dict[str, Any]:
        """Put an assembled upload in the ledger: from now on it can be submitted."""
        record = {
            "filename": upload.ticket.filename,
            "size": upload.size,
            "md5": upload.file_md5.hexdigest(),
            "source_ip": upload.ticket.ip,
            "complete_ip": ip,
            "mid": upload.ticket.mid,
            "time": self.wall_clock(),
            "upload_id": upload.upload_id,
            "biz_id": upload.ticket.biz_id,
            "parts": upload.chunks,
            "name": name,
            "line": upload.ticket.line,
        }
        upload.completed = record
        upload.held.clear()
        self.ledger.append(record)
        return record

    def completed_upload(self, filename: str) -> dict[str, Any] | None:
        for record in self.ledger:
            if record["filename"] == filename:
                return record
        return None

    # --- submissions --------------------------------------------------------

    def new_archive(self) -> tuple[int, str]:
        aid = self.next_aid
        self.next_aid += self.id_rng.randint(1, 997)
        return aid, av2bv(aid)

    def archive(self, aid: int | None = None, bvid: str | None = None) -> dict[str, Any] | None:
        for record in self.submissions:
            if (aid is not None and record["aid"] == aid) or (bvid and record["bvid"] == bvid):
                return record
        return None

    # --- collections --------------------------------------------------------

    def new_season(self, mid: int, title: str, sections: int) -> dict[str, Any]:
        """A collection of ``mid`` with ``sections`` sections (正片 first, as Bilibili makes it)."""
        season_id = self.next_season_id
        self.next_season_id += 1 + sections
        names = ["正片", *(f"第{n}节" for n in range(2, sections + 1))]
        season = {
            "season_id": season_id,
            "mid": mid,
            "title": title,
            "ctime": int(self.wall_clock()),
            "sections": [
                {"section_id": season_id + n, "title": name, "episodes": []}
                for n, name in enumerate(names, start=1)
            ],
        }
        self.seasons.append(season)
        return season

    def section(self, section_id: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
        for season in self.seasons:
            for section in season["sections"]:
                if section["section_id"] == section_id:
                    return season, section
        return None

    def episode_of(self, aid: int) -> dict[str, Any] | None:
        """The collection entry of archive ``aid`` (an archive is in one collection at most)."""
        for season in self.seasons:
            for section in season["sections"]:
                for episode in section["episodes"]:
                    if episode["aid"] == aid:
                        return episode
        return None

def _bucket(buckets: dict[Any, TokenBucket], key: Any, rate: int) -> TokenBucket | None:
    """The shared bucket for ``key`` at ``rate`` (which may change), or None when uncapped."""
    if rate <= 0:
        return None
    bucket = buckets.get(key)
    if bucket is None:
        bucket = buckets[key] = TokenBucket(rate)
    bucket.rate = rate
    return bucket
