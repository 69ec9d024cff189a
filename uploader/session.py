"""Everything needed to resume one upos upload, and the part arithmetic on it.

A session is saved after every accepted part (``on_commit``), so a crash, a
lost agent or a hub restart costs at most the parts in flight. It holds the
upos ``auth`` token: treat its JSON as a secret (encrypted at rest, never
logged); its ``repr`` is redacted for that reason.
"""

from __future__ import annotations

import msgspec


class SessionError(ValueError):
    """Saved session bytes are not a valid session."""


class UposSession(msgspec.Struct, kw_only=True):
    name: str
    size: int
    upos_uri: str
    endpoint: str
    upload_url: str
    auth: str
    biz_id: int
    chunk_size: int
    threads: int
    upload_id: str
    parts_done: list[int] = msgspec.field(default_factory=list)
    created_at: float = 0.0
    line: str = ""  # the zone_upcdn line it was opened on ("": Bilibili's choice)

    def __post_init__(self) -> None:
        if self.size < 0:
            raise SessionError("session size must not be negative")
        if self.chunk_size <= 0:
            raise SessionError("session chunk_size must be positive")

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def from_json(cls, b: bytes | str) -> UposSession:
        try:
            session = msgspec.json.decode(b, type=cls)
        except msgspec.MsgspecError as exc:
            raise SessionError(f"not a valid upload session: {exc}") from None
        count = session.part_count()
        if any(not 1 <= n <= count for n in session.parts_done):
            raise SessionError("upload session lists parts outside the file")
        return session

    def part_count(self) -> int:
        """Number of parts; an empty file is one empty part."""
        return max(1, -(-self.size // self.chunk_size))

    def part_range(self, part: int) -> tuple[int, int]:
        """``(start, end)`` byte range of 1-based ``part``, end exclusive."""
        if not 1 <= part <= self.part_count():
            raise ValueError(f"part {part} outside 1..{self.part_count()}")
        start = (part - 1) * self.chunk_size
        return start, min(self.size, start + self.chunk_size)

    def missing_parts(self) -> list[int]:
        done = set(self.parts_done)
        return [n for n in range(1, self.part_count() + 1) if n not in done]

    def committed_offset(self) -> int:
        """Bytes below which every part is done (where a resumed stream starts)."""
        missing = self.missing_parts()
        if not missing:
            return self.size
        return self.part_range(missing[0])[0]

    def done_bytes(self) -> int:
        total = 0
        for n in set(self.parts_done):
            start, end = self.part_range(n)
            total += end - start
        return total

    def with_part_done(self, part: int) -> UposSession:
        """A copy with ``part`` recorded (copies, so callers may keep old snapshots)."""
        parts = sorted(set(self.parts_done) | {part})
        return msgspec.structs.replace(self, parts_done=parts)

    def __repr__(self) -> str:
        return (
            f"UposSession(name={self.name!r}, size={self.size}, upload_id=<redacted>, "
            f"auth=<redacted>, parts_done={len(self.parts_done)}/{self.part_count()})"
        )

    __str__ = __repr__
