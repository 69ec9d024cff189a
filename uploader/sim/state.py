"""The simulator's memory: accounts, upload sessions, the ledger, risk counters.

Nothing here speaks HTTP; `uploader.sim.app` turns requests into calls on
`SimState`. File bytes are never stored: each part's MD5 is computed as it
arrives and the file's MD5 is fed in part order. A part that arrives before
the parts below it is held in memory until the in-order prefix reaches it.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import hmac
import math
import random
import string
import time
import urllib.parse
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread

from uploader.sim.config import FailRule, SimConfig
from uploader.sim.facts import BUCKET, av2bv

REQUEST_RING = 100_000
BUILTIN_COOKIES = "SESSDATA=sim-sessdata; bili_jct=sim-csrf; DedeUserID=10001"
BUILTIN_ACCESS_KEY = "sim-access-key"
BUILTIN_MID = 10001


def parse_cookie_string(text: str) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for piece in text.split(";"):
        name, sep, value = piece.strip().partition("=")
        if sep and name:
            cookies[name.strip()] = value.strip()
    return cookies


def _norm(value: str) -> str:
    return urllib.parse.unquote(value)


@dataclass
class Account:
    mid: int
    sessdata: str | None
    bili_jct: str | None
    access_key: str | None
    expired: bool = False

    def public(self) -> dict[str, Any]:
        return {
            "mid": self.mid,
            "sessdata": self.sessdata,
            "bili_jct": self.bili_jct,
            "access_key": self.access_key,
            "expired": self.expired,
        }


@dataclass
class Ticket:
    """What one preupload handed out: the object path, its auth, biz_id, sizes."""

    key: str  # object key without the leading slash, e.g. n240728ad1p51if4g3ke4s3o95sz.mp4
    auth: str
    biz_id: int
    name: str
    size: int | None
    chunk_size: int
    mid: int
    ip: str
    line: str
    created_at: float

    @property
    def filename(self) -> str:
        return self.key.rsplit(".", 1)[0]


@dataclass
class PartPrint:
    """How one hashed part is recognised when it is sent again.

    `before` is the file MD5 state just before the part, `after` the digest
    just after it. A re-sent part carries the same bytes exactly when feeding
    them into a copy of `before` gives `after` again: the same guarantee as
    keeping each part's own MD5, without hashing every byte twice.
    """

    before: Any
    after: bytes


@dataclass
class Upload:
    """One multipart upload (one upload_id) of a ticket's object."""

    upload_id: str
    ticket: Ticket
    size: int | None
    chunk_size: int
    created_at: float
    received: set[int] = field(default_factory=set)  # parts that arrived at least once
    prints: dict[int, PartPrint] = field(default_factory=dict)  # parts hashed into the file
    held: dict[int, list[bytes]] = field(default_factory=dict)
    held_bytes: int = 0
    next_part: int = 1  # every part below this one is in file_md5 (or being fed)
    file_md5: Any = field(default_factory=hashlib.md5)
    corrupt: str | None = None
    completed: dict[str, Any] | None = None
    lock: anyio.Lock = field(default_factory=anyio.Lock)

    @property
    def chunks(self) -> int | None:
        if self.size is None:
            return None
        return max(1, math.ceil(self.size / self.chunk_size))

    def public(self) -> dict[str, Any]:
        return {
            "upload_id": self.upload_id,
            "filename": self.ticket.filename,
            "size": self.size,
            "chunk_size": self.chunk_size,
            "chunks": self.chunks,
            "parts_received": sorted(self.received),
            "next_part": self.next_part,
            "held_parts": sorted(self.held),
            "corrupt": self.corrupt,
            "completed": self.completed is not None,
            "source_ip": self.ticket.ip,
            "mid": self.ticket.mid,
        }


class TokenBucket:
    """Bytes-per-second cap shared by every body read from one source IP."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.tokens = 0.0
        self.last = time.monotonic()

    async def consume(self, amount: int) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        burst = max(self.rate / 20, 65536)
        self.tokens = min(burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= amount
        if self.tokens < 0:
            await anyio.sleep(-self.tokens / self.rate)


class PartError(Exception):
    """The PUT's query does not fit the upload (HTTP 400)."""


class SimState:
    def __init__(self, config: SimConfig) -> None:
        self.initial_config = copy.deepcopy(config)
        self.reset()

    # --- lifecycle ----------------------------------------------------------

    def reset(self) -> None:
        self.config = copy.deepcopy(self.initial_config)
        self.reseed()
        self.accounts: list[Account] = []
        self.add_account(cookies=BUILTIN_COOKIES, access_key=BUILTIN_ACCESS_KEY, mid=BUILTIN_MID)
        self.tickets: dict[str, Ticket] = {}
        self.uploads: dict[str, Upload] = {}
        self.ledger: list[dict[str, Any]] = []
        self.submissions: list[dict[str, Any]] = []
        self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=REQUEST_RING)
        self.preupload_times: dict[str, collections.deque[float]] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self.next_aid = 114_000_000_000_001
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

    # --- accounts -----------------------------------------------------------

    def add_account(
        self,
        *,
        cookies: str | None = None,
        access_key: str | None = None,
        mid: int | None = None,
        expired: bool = False,
    ) -> Account:
        parsed = parse_cookie_string(cookies or "")
        sessdata = parsed.get("SESSDATA")
        bili_jct = parsed.get("bili_jct")
        if mid is None and parsed.get("DedeUserID", "").isdigit():
            mid = int(parsed["DedeUserID"])
        if mid is None:
            raise ValueError("mid: required (or DedeUserID in cookies)")
        if sessdata is None and access_key is None:
            raise ValueError("cookies with SESSDATA, or access_key, is required")
        if sessdata is not None and bili_jct is None:
            raise ValueError("cookies: bili_jct is required with SESSDATA")
        # The same SESSDATA or access_key names the same account: update it.
        for account in self.accounts:
            same_cookie = (
                sessdata is not None
                and account.sessdata is not None
                and (_norm(account.sessdata) == _norm(sessdata))
            )
            same_key = access_key is not None and account.access_key == access_key
            if same_cookie or same_key:
                account.mid = mid
                account.expired = expired
                if sessdata is not None:
                    account.sessdata, account.bili_jct = sessdata, bili_jct
                if access_key is not None:
                    account.access_key = access_key
                return account
        account = Account(mid, sessdata, bili_jct, access_key, expired)
        self.accounts.append(account)
        return account

    def account_by_cookie(self, sessdata: str | None) -> Account | None:
        if not sessdata:
            return None
        for account in self.accounts:
            if account.sessdata is not None and _norm(account.sessdata) == _norm(sessdata):
                return None if account.expired else account
        return None

    def account_by_access_key(self, access_key: str | None) -> Account | None:
        if not access_key:
            return None
        for account in self.accounts:
            if account.access_key == access_key:
                return None if account.expired else account
        return None

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
    ) -> None:
        entry: dict[str, Any] = {
            "op": op,
            "ip": ip,
            "upload_id": upload_id,
            "part": part,
            "status": status,
            "code": code,
            "time": time.time(),
        }
        if line is not None:
            entry["line"] = line
        self.requests.append(entry)

    def take_rule(self, op: str, ip: str) -> FailRule | None:
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
        if rate <= 0:
            return None
        bucket = self.buckets.get(ip)
        if bucket is None:
            bucket = self.buckets[ip] = TokenBucket(rate)
        bucket.rate = rate
        return bucket

    # --- risk ---------------------------------------------------------------

    def preupload_allowed(self, ip: str) -> bool:
        """Budget check; a successful preupload must then call `count_preupload`."""
        risk = self.config.risk
        if risk.preupload_budget <= 0:
            return True
        times = self.preupload_times.setdefault(ip, collections.deque())
        horizon = time.monotonic() - risk.window_seconds
        while times and times[0] <= horizon:
            times.popleft()
        return len(times) < risk.preupload_budget

    def count_preupload(self, ip: str) -> None:
        self.preupload_times.setdefault(ip, collections.deque()).append(time.monotonic())

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
        now = time.time()
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
        return time.time() > ticket.created_at + self.config.session_ttl_seconds

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
            created_at=time.time(),
        )
        self.uploads[upload_id] = upload
        return upload

    @staticmethod
    def check_part(upload: Upload, query: dict[str, str], content_length: int | None) -> int:
        """Validate a chunk PUT's query against the upload; returns the part size."""
        values: dict[str, int] = {}
        for name in ("partNumber", "chunk", "chunks", "size", "start", "end", "total"):
            raw = query.get(name)
            if raw is None or raw == "":
                raise PartError(f"missing {name}")
            try:
                values[name] = int(raw)
            except ValueError:
                raise PartError(f"{name} is not an integer: {raw!r}") from None
        total = values["total"]
        if total < 0:
            raise PartError("total is negative")
        if upload.size is None:
            upload.size = total
        if total != upload.size:
            raise PartError(f"total {total} != file size {upload.size}")
        chunks = upload.chunks
        assert chunks is not None
        part = values["partNumber"]
        if not 1 <= part <= chunks:
            raise PartError(f"partNumber {part} outside 1..{chunks}")
        if values["chunk"] != part - 1:
            raise PartError(f"chunk {values['chunk']} != partNumber - 1 ({part - 1})")
        if values["chunks"] != chunks:
            raise PartError(f"chunks {values['chunks']} != {chunks}")
        start = (part - 1) * upload.chunk_size
        end = min(start + upload.chunk_size, upload.size)
        if values["start"] != start:
            raise PartError(f"start {values['start']} != {start}")
        if values["end"] != end:
            raise PartError(f"end {values['end']} != {end}")
        if values["size"] != end - start:
            raise PartError(f"size {values['size']} != end - start ({end - start})")
        if content_length is not None and content_length != end - start:
            raise PartError(f"Content-Length {content_length} != size {end - start}")
        return end - start

    async def accept_part(self, upload: Upload, part: int, chunks: list[bytes]) -> None:
        """Record one received part; feed the file MD5 as far as parts allow."""
        if part < upload.next_part:
            # Already hashed into the file (or being hashed): a repeat must
            # carry the same bytes, else the object cannot be assembled.
            async with upload.lock:
                known = upload.prints[part]
                candidate = known.before.copy()
                await anyio.to_thread.run_sync(_feed, candidate, chunks)
                if candidate.digest() != known.after:
                    upload.corrupt = f"part {part} sent again with different bytes"
            return
        previous = upload.held.pop(part, None)  # a held part may still be replaced
        if previous is not None:
            upload.held_bytes -= sum(map(len, previous))
        upload.received.add(part)
        upload.held[part] = chunks
        upload.held_bytes += sum(map(len, chunks))
        await self.feed_ready(upload)

    @staticmethod
    async def feed_ready(upload: Upload) -> None:
        """Hash held parts into the file MD5, in order, as far as the prefix reaches."""
        async with upload.lock:
            while upload.next_part in upload.held:
                part = upload.next_part
                data = upload.held.pop(part)
                upload.held_bytes -= sum(map(len, data))
                upload.next_part += 1
                before = upload.file_md5.copy()
                await anyio.to_thread.run_sync(_feed, upload.file_md5, data)
                upload.prints[part] = PartPrint(before, upload.file_md5.digest())

    def complete(self, upload: Upload, name: str, ip: str) -> dict[str, Any]:
        record = {
            "filename": upload.ticket.filename,
            "size": upload.size,
            "md5": upload.file_md5.hexdigest(),
            "source_ip": upload.ticket.ip,
            "complete_ip": ip,
            "mid": upload.ticket.mid,
            "time": time.time(),
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


def _feed(md5: Any, chunks: Iterable[bytes]) -> None:
    for chunk in chunks:
        md5.update(chunk)
