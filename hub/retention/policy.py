"""What retention does with which file, and when: the decisions alone (pure, no IO).

A room's rule (:func:`rule_for`) is the global ``retention`` with the room's keys
over it. For one recording, :func:`blocked` says whether its files may go at all
and why not, and :func:`decide` turns every file into one :class:`Decision`.

The safety rules, each a line below:

- a recording acts only when **every** part reached the trigger: ``uploaded``
  (every part uploaded and the live session over), ``submitted`` (its archive
  exists and holds every part: a late part appended counts once it is in),
  ``approved`` (that, and the archive passed review since its last change);
- a failed or cancelled upload in the recording, a submission that failed, a part
  kept out of the archive, an archive rejected in review: nothing is done, and the
  refusal is recorded;
- a file acts only while it still has the size, mtime and stat identity it was
  uploaded with; a file changed since is kept and flagged, for good;
- ``delay_days`` counts from when the hub saw the trigger reached, on its own clock;
- ``dry_run`` decides the same and records what it would have done, once.

The executor (hub/retention/executor.py) checks the identity again right before it
acts and never overwrites a destination; the service (hub/retention/service.py)
gathers the facts, records every action and refusal, and runs the executor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Literal

NEVER, UPLOADED, SUBMITTED, APPROVED = "never", "uploaded", "submitted", "approved"
DAY = 86400.0

# A file's retention state (table retention_files).
WAITING = "waiting"  # under a policy, not acted on yet
DONE = "done"  # deleted or moved
DRY_RUN = "dry_run"  # would have been deleted or moved; left in place
KEPT = "kept"  # refused for good (changed since upload, destination taken): flagged
GONE = "gone"  # removed by someone else before retention acted
FINAL = frozenset({DONE, DRY_RUN, KEPT, GONE})


@dataclass(frozen=True)
class Rule:
    trigger: str = NEVER
    action: str = "delete"
    move_to: str | None = None
    delay_days: float = 0.0
    dry_run: bool = False

    @property
    def active(self) -> bool:
        return self.trigger != NEVER


def rule_for(config: Any, room_id: str) -> Rule:
    """``retention`` with ``rooms.<room_id>.retention`` over it, key by key."""
    base = config.retention
    room = config.rooms.get(str(room_id))
    over = room.retention if room is not None else None

    def pick(key: str) -> Any:
        value = getattr(over, key, None) if over is not None else None
        return getattr(base, key) if value is None else value

    return Rule(trigger=pick("trigger"), action=pick("action"), move_to=pick("move_to"),
                delay_days=float(pick("delay_days")), dry_run=bool(pick("dry_run")))


@dataclass(frozen=True)
class Identity:
    """What a file looked like when it was uploaded: size, mtime and the stat identity
    (device, inode, size, mtime, ctime; hub/core/file_identity.py)."""

    size: int
    mtime_ns: int
    fingerprint: str


@dataclass(frozen=True)
class FileFacts:
    part_id: int
    path: str
    size: int  # the size the part was uploaded with
    upload_state: str  # the hub part's state: uploaded, failed, cancelled, queued, ...
    in_archive: bool  # the archive holds it (RecordingStore.archive_of)
    kept_out: bool = False  # it arrived after the submission and stays out of the archive
    state: str = WAITING  # its retention state so far
    uploaded: Identity | None = None  # None: not recorded yet
    current: Identity | None = None  # None: the file is not there


@dataclass(frozen=True)
class RecordingFacts:
    recording_id: int
    room_id: str
    ended: bool
    submit_state: str
    aid: int | None  # the archive's, when it exists
    review_state: str  # "" | pending | approved | rejected, as last read
    review_reason: str = ""


@dataclass(frozen=True)
class Block:
    """Why a recording's files may not go (yet). ``refusal``: a reason to record (the
    hub refuses to act on this recording as it stands), not just not there yet."""

    reason: str
    refusal: bool = False


def blocked(rule: Rule, rec: RecordingFacts, files: list[FileFacts]) -> Block | None:
    """None when every part of the recording reached the rule's trigger."""
    if not rule.active:
        return Block("retention is off for this room")
    if not files:
        return Block("no parts yet")
    bad = [f for f in files if f.upload_state in ("failed", "cancelled")]
    if bad:
        which = ", ".join(f"part {f.part_id} {f.upload_state}" for f in bad)
        return Block(f"an upload failed or was cancelled ({which}): the files stay", True)
    if not rec.ended:
        return Block("live session not ended")
    waiting = [f for f in files if f.upload_state != "uploaded"]
    if waiting:
        return Block(f"{len(waiting)} of {len(files)} part(s) not uploaded yet")
    if rule.trigger == UPLOADED:
        return None
    kept = [f for f in files if f.kept_out]
    if kept:
        return Block(f"{len(kept)} part(s) kept out of the archive (arrived after the "
                     "submission): the files stay", True)
    missing = [f for f in files if not f.in_archive]
    if not rec.aid or missing:
        if rec.submit_state == "failed":
            return Block("the submission failed: not every part is in an archive, the "
                         "files stay", True)
        if not rec.aid:
            return Block("no archive yet")
        return Block(f"{len(missing)} part(s) not in the archive yet")
    if rule.trigger == SUBMITTED:
        return None
    if rec.review_state == "rejected":
        why = f": {rec.review_reason}" if rec.review_reason else ""
        return Block(f"the archive was rejected in review{why}: the files stay", True)
    if rec.review_state != "approved":
        return Block("the archive has not passed review yet")
    return None


Kind = Literal["act", "keep", "gone", "wait"]


@dataclass(frozen=True)
class Decision:
    kind: Kind
    part_id: int
    reason: str = ""
    action: str = ""  # delete | move (kind act)
    destination: str | None = None  # for a move
    dry_run: bool = False
    not_before: float | None = None  # kind wait: the delay ends then


def destination(rule: Rule, path: str) -> str:
    """Where a move puts a file: ``move_to/<its folder's name>/<its name>`` (recorders
    keep one folder per room, so rooms stay apart)."""
    p = PurePath(path)
    assert rule.move_to is not None
    return str(PurePath(rule.move_to) / p.parent.name / p.name)


def decide(rule: Rule, files: list[FileFacts], reached_at: float, now: float
           ) -> list[Decision]:
    """For a recording whose trigger was reached at ``reached_at`` (hub clock): what
    becomes of each of its files that is not settled yet."""
    out: list[Decision] = []
    due = reached_at + rule.delay_days * DAY
    for f in files:
        if f.state in FINAL:
            continue
        if f.current is None:
            out.append(Decision("gone", f.part_id, "the file is no longer there"))
            continue
        changed = _changed(f)
        if changed:
            out.append(Decision("keep", f.part_id, f"{changed}: kept and flagged"))
            continue
        if now < due:
            out.append(Decision("wait", f.part_id, "delay", not_before=due))
            continue
        dest = destination(rule, f.path) if rule.action == "move" else None
        out.append(Decision("act", f.part_id, action=rule.action, destination=dest,
                            dry_run=rule.dry_run))
    return out


def _changed(f: FileFacts) -> str:
    """Why the file is not the one that was uploaded ("" when it is)."""
    up, now = f.uploaded, f.current
    if up is None or now is None:
        return "no record of the file as uploaded"
    if now.size != f.size or up.size != f.size:
        return f"the file has {now.size} bytes, {f.size} were uploaded"
    if now.mtime_ns != up.mtime_ns:
        return "the file was modified after it was uploaded"
    if now.fingerprint != up.fingerprint:
        return "the file was replaced or changed after it was uploaded"
    return ""


def parse_fingerprint(fingerprint: str) -> Identity | None:
    """The :class:`Identity` a stat fingerprint (``dev:ino:size:mtime_ns:ctime_ns``)
    describes; None for an empty or foreign one."""
    fields = fingerprint.split(":")
    if len(fields) != 5:
        return None
    try:
        return Identity(size=int(fields[2]), mtime_ns=int(fields[3]), fingerprint=fingerprint)
    except ValueError:
        return None
