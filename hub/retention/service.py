"""Retention in a running hub: gather the facts, decide (policy), act (executor), record.

Every ``retention.interval_seconds`` (or sooner, when a part finishes uploading) it
walks the recordings whose room has a rule. For each file of a recording it:

1. records the identity the file was uploaded with, once, when it is first seen
   uploaded: the part's own stat fingerprint when the upload was checked against
   one; otherwise the file is hashed and must match the part's digest (or, for a
   part an older hub hashed, its MD5: the bytes Bilibili got) before its identity
   is taken; a mismatch is kept and flagged;
2. reads the recording's archive (``RecordingStore.archive_of``: which parts it
   holds, its review as last read) and asks :func:`hub.retention.policy.blocked`
   whether the recording reached its trigger (the hub's clock notes when it first did: ``delay_days`` counts from
   there), and :func:`hub.retention.policy.decide` what becomes of each file;
3. acts through :mod:`hub.retention.executor` under a journal row, finished or rolled
   back by :meth:`RetentionService.start` after a restart;
4. writes every action and every refusal to the audit log (actor ``retention``) and
   the recording's history, once each, and to the hub's log.

Nothing is done while the hub's data directory is full: an action could not be
recorded. The disk guard lives here too: the free bytes of every recorder
directory, for the metrics (the alert rule reads them itself).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import anyio
import anyio.to_thread

from hub.core.errors import StorageFull
from hub.ingest.files import recorder_dirs
from hub.retention import executor as ex
from hub.retention import policy as p
from hub.retention.store import RetentionStore
from hub.store.database import free_bytes
from hub.store.recordings import RecordingStore
from protocol.integrity import new_part_digest

log = logging.getLogger("bupmesh.hub.retention")

ACTOR = "retention"
RECENT = 200  # file rows the overview lists


class AuditSink(Protocol):
    """The hub's audit log (hub/api/audit.py)."""

    async def record_event(self, *, actor: str, action: str, subject: str,
                           targets: dict[str, Any], outcome: str) -> None: ...


class RetentionService:
    def __init__(self, config: Any, recordings: RecordingStore, store: RetentionStore, *,
                 clock: Callable[[], float], audit: AuditSink | None = None,
                 space: Any = None) -> None:
        self.config = config
        self.recordings = recordings
        self.store = store
        self.clock = clock
        self.audit = audit
        self.space = space
        self.interval = config.retention.interval_seconds
        self._wake = anyio.Event()
        # For the metrics, refreshed every pass.
        self.pending_bytes: Counter[str] = Counter()  # stage (trigger, delay, kept) -> bytes
        self.disk_free: dict[str, int | None] = {}
        self.actions: Counter[tuple[str, str]] = Counter()  # (action, outcome) -> count
        self._recovered = False  # the journal a stopped hub left is settled

    # -- running --------------------------------------------------------------------------

    def poke(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        """Finish or roll back what a stopped hub left between two steps. On a full data
        directory the journal stays as it is and the first pass after space returns does
        it (finishing or rolling back is idempotent)."""
        try:
            await self._recover()
        except StorageFull as exc:
            log.warning("retention journal not settled yet: %s", exc)

    async def _recover(self) -> None:
        for row in await self.store.journal():
            outcome, note = await anyio.to_thread.run_sync(ex.recover, row)
            state = p.DONE if outcome == ex.DONE else p.WAITING
            destination = row["destination"] if outcome == ex.DONE else None
            await self.store.finish(row["part_id"], state=state, note=note,
                                    action=row["op"] if outcome == ex.DONE else "",
                                    destination=destination)
            files = {f["part_id"]: f for f in await self.store.files()}
            f = files.get(row["part_id"])
            if f is not None:
                await self._record(f["recording_id"], f, row["op"], note,
                                   "ok" if outcome == ex.DONE else "rolled_back", destination)
        self._recovered = True

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except StorageFull:
                pass  # the space alarm is raised; the pass after it clears goes on
            except Exception:  # one bad recording must not end retention for all
                log.exception("retention pass failed")
            # A burst of finished uploads wakes it many times: one pass a second at most.
            await anyio.sleep(min(self.interval, 1.0))
            with anyio.move_on_after(self.interval):
                await self._wake.wait()
            self._wake = anyio.Event()

    async def tick(self) -> None:
        await self._sample_disks()
        if self.space is not None and self.space.raised:
            return  # an action could not be recorded now
        if not self._recovered:
            await self._recover()
        rooms = ["", *self.config.rooms]
        if not any(p.rule_for(self.config, room).active for room in rooms):
            self.pending_bytes = Counter()
            return  # retention is off everywhere (the default): nothing to look at
        now = self.clock()
        pending: Counter[str] = Counter()
        for rec in await self.recordings.list():
            rule = p.rule_for(self.config, rec["room_id"])
            tracked = {f["part_id"]: f for f in await self.store.files(rec["id"])}
            if not rule.active and not tracked:
                continue
            await self._step(rec, rule, tracked, now, pending)
        self.pending_bytes = pending

    # -- one recording --------------------------------------------------------------------

    async def _step(self, rec: dict[str, Any], rule: p.Rule, tracked: dict[int, dict[str, Any]],
                    now: float, pending: Counter[str]) -> None:
        parts = await self.recordings.parts(rec["id"])
        if rule.active:
            for part in parts:
                if part["upload_state"] == "uploaded" and part["part_id"] not in tracked:
                    tracked[part["part_id"]] = await self._track(rec, part)
        archive = await self.recordings.archive_of(rec["id"])
        in_archive = archive.parts if archive is not None else {}
        files = [await self._facts(part, tracked.get(part["part_id"]), in_archive)
                 for part in parts]
        facts = p.RecordingFacts(
            recording_id=rec["id"], room_id=rec["room_id"], ended=rec["ended_at"] is not None,
            submit_state=rec["submit_state"], aid=archive.aid if archive else None,
            review_state=archive.review if archive else "",
            review_reason=archive.reason if archive else "")
        state = await self.store.recording(rec["id"]) or {}
        block = p.blocked(rule, facts, files)
        if block is not None:
            # Not (or no longer) there: a later return to the trigger starts the delay anew.
            if state.get("note") != block.reason or state.get("trigger") != rule.trigger:
                await self.store.set_recording(rec["id"], trigger=rule.trigger,
                                               reached_at=None, note=block.reason)
                if block.refusal:
                    await self._refused(rec["id"], None, block.reason)
        else:
            await self._reached(rec, rule, state, files, tracked, now)
        # What still waits, for the metrics: before the trigger, in the delay, or kept.
        rows = {r["part_id"]: r for r in await self.store.files(rec["id"])}
        for f in files:
            row_state = rows[f.part_id]["state"] if f.part_id in rows else p.WAITING
            if row_state == p.WAITING and rule.active:
                pending["trigger" if block is not None else "delay"] += f.size
            elif row_state == p.KEPT:
                pending["kept"] += f.size

    async def _reached(self, rec: dict[str, Any], rule: p.Rule, state: dict[str, Any],
                       files: list[p.FileFacts], tracked: dict[int, dict[str, Any]],
                       now: float) -> None:
        reached_at = state.get("reached_at") if state.get("trigger") == rule.trigger else None
        if reached_at is None:
            reached_at = now
            await self.store.set_recording(rec["id"], trigger=rule.trigger,
                                           reached_at=now, note="")
            await self.recordings.add_history(
                rec["id"], ACTOR, f"every part reached the retention trigger {rule.trigger!r}")
        by_id = {f.part_id: f for f in files}
        for decision in p.decide(rule, files, float(reached_at), now):
            f = by_id[decision.part_id]
            if decision.kind == "gone":
                await self.store.set_file(f.part_id, state=p.GONE, note=decision.reason)
                await self.recordings.add_history(rec["id"], ACTOR, f"{f.path}: "
                                                  f"{decision.reason}", part_id=f.part_id)
            elif decision.kind == "keep":
                await self.store.set_file(f.part_id, state=p.KEPT, note=decision.reason)
                await self._refused(rec["id"], f, decision.reason)
            elif decision.kind == "act":
                note = tracked.get(f.part_id, {}).get("note") or ""
                await self._act(rec["id"], f, decision, note)

    async def _track(self, rec: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
        """Record the identity the file was uploaded with (see the module docstring)."""
        path, size = part["path"], int(part["size"])
        uploaded = p.parse_fingerprint(part.get("part_fingerprint") or "")
        state, note = p.WAITING, ""
        if uploaded is None or uploaded.size != size:
            uploaded, note = await anyio.to_thread.run_sync(
                _identity_by_content, path, part.get("digest") or "", part.get("md5") or "", size)
            if note:
                state = p.KEPT if uploaded is not None else p.GONE
                note = f"{note}: kept and flagged" if state == p.KEPT else note
        await self.store.track(part["part_id"], recording_id=rec["id"], room_id=rec["room_id"],
                               path=path, size=size, uploaded=uploaded, state=state, note=note)
        row = (await self.store.files(rec["id"]))
        tracked = next(r for r in row if r["part_id"] == part["part_id"])
        if state == p.KEPT:
            await self._refused(rec["id"], _facts_of(tracked), note)
        return tracked

    async def _facts(self, part: dict[str, Any], tracked: dict[str, Any] | None,
                     in_archive: dict[int, bool]) -> p.FileFacts:
        uploaded = None
        if tracked is not None and tracked.get("uploaded_fingerprint"):
            uploaded = p.Identity(size=int(tracked["size"]),
                                  mtime_ns=int(tracked["uploaded_mtime_ns"]),
                                  fingerprint=tracked["uploaded_fingerprint"])
        state = tracked["state"] if tracked is not None else p.WAITING
        current = None
        if state not in p.FINAL:
            current = await anyio.to_thread.run_sync(ex.identity_of, part["path"])
        return p.FileFacts(part_id=part["part_id"], path=part["path"], size=int(part["size"]),
                           upload_state=part["upload_state"] or "",
                           in_archive=in_archive.get(part["part_id"], False),
                           kept_out=part.get("archived") == -1,
                           state=state, uploaded=uploaded, current=current)

    # -- acting ---------------------------------------------------------------------------

    async def _act(self, recording_id: int, f: p.FileFacts, d: p.Decision,
                   previous_note: str) -> None:
        what = f"delete {f.path}" if d.action == "delete" else f"move {f.path} to {d.destination}"
        if d.dry_run:
            await self.store.set_file(f.part_id, state=p.DRY_RUN, action=d.action,
                                      destination=d.destination, note=f"dry run: would {what}")
            await self._record(recording_id, _row(f), d.action, f"dry run: would {what}",
                               "dry_run", d.destination)
            return
        assert f.uploaded is not None
        temporary = ex.temporary_for(d.destination) if d.destination else None
        await self.store.begin(f.part_id, op=d.action, source=f.path, destination=d.destination,
                               temporary=temporary, size=f.size,
                               fingerprint=f.uploaded.fingerprint)
        try:
            if d.action == "delete":
                await anyio.to_thread.run_sync(ex.delete, f.path, f.uploaded)
            else:
                assert d.destination is not None and temporary is not None
                await self._move(f, d.destination, temporary)
        except ex.Refused as exc:
            await anyio.to_thread.run_sync(ex.remove_temporary, temporary)
            note = f"not done ({exc}): kept and flagged"
            await self.store.finish(f.part_id, state=p.KEPT, note=note, action="",
                                    destination=None)
            await self._refused(recording_id, f, note, action=d.action)
            return
        except FileNotFoundError:
            await self.store.finish(f.part_id, state=p.GONE, action="", destination=None,
                                    note="the file is no longer there")
            return
        except OSError as exc:
            # Not done, and nothing lost (the source is untouched): tried again next pass,
            # recorded once per distinct error.
            await anyio.to_thread.run_sync(ex.remove_temporary, temporary)
            note = f"could not {d.action}: {exc.strerror or exc}"
            await self.store.finish(f.part_id, state=p.WAITING, note=note, action="",
                                    destination=None)
            if previous_note != note:
                await self._record(recording_id, _row(f), d.action, note, "error",
                                    d.destination)
            return
        await self.store.finish(f.part_id, state=p.DONE, action=d.action,
                                destination=d.destination, note=f"{d.action}d" if
                                d.action == "delete" else f"moved to {d.destination}")
        await self._record(recording_id, _row(f), d.action, what, "ok", d.destination)

    async def _move(self, f: p.FileFacts, destination: str, temporary: str) -> None:
        assert f.uploaded is not None
        run = anyio.to_thread.run_sync
        await run(ex.prepare, destination)
        if not await run(ex.link, f.path, destination, f.uploaded):
            await run(ex.copy, f.path, temporary, f.uploaded)
            await self.store.phase(f.part_id, "copied")
            await run(ex.place, temporary, destination)
        await self.store.phase(f.part_id, "placed")
        await run(ex.drop_source, f.path, destination, f.size)

    # -- recording ------------------------------------------------------------------------

    async def _refused(self, recording_id: int, f: p.FileFacts | None, reason: str, *,
                       action: str = "keep") -> None:
        row = _row(f) if f is not None else {"part_id": None, "path": "", "size": 0}
        await self._record(recording_id, row, action, reason, "refused", None)

    async def _record(self, recording_id: int, f: dict[str, Any], action: str, message: str,
                      outcome: str, destination: str | None) -> None:
        self.actions[(action, outcome)] += 1
        path = f.get("path") or ""
        subject = path or f"recording {recording_id}"
        line = message if not path or path in message else f"{path}: {message}"
        level = logging.INFO if outcome in ("ok", "dry_run") else logging.WARNING
        log.log(level, "recording %d: %s: %s", recording_id, outcome, line)
        kind = ACTOR if outcome in ("ok", "dry_run") else f"{ACTOR}_{outcome}"
        await self.recordings.add_history(recording_id, kind, line, part_id=f.get("part_id"))
        if self.audit is not None:
            targets: dict[str, Any] = {"recording_id": recording_id}
            if f.get("part_id") is not None:
                targets["part_id"] = f["part_id"]
            if destination:
                targets["destination"] = destination
            if outcome != "ok":
                targets["reason"] = message[:500]
            await self.audit.record_event(actor=ACTOR, action=action, subject=subject,
                                          targets=targets, outcome=outcome)

    # -- disks and the overview -----------------------------------------------------------

    async def _sample_disks(self) -> None:
        found = {}
        for path in recorder_dirs(self.config.ingest):
            found[path] = await anyio.to_thread.run_sync(free_bytes, path)
        self.disk_free = found

    async def overview(self) -> dict[str, Any]:
        """For the API and the web UI: the rules, what waits, what was done and refused."""
        files = await self.store.files()
        totals: dict[str, dict[str, int]] = {}
        for f in files:
            t = totals.setdefault(f["state"], {"files": 0, "bytes": 0})
            t["files"] += 1
            t["bytes"] += int(f["size"])
        recent = sorted((f for f in files if f["state"] != p.WAITING or f["note"]),
                        key=lambda f: f["updated_at"], reverse=True)[:RECENT]
        rooms = {room: _rule_json(p.rule_for(self.config, room)) for room in self.config.rooms}
        min_free = self.config.retention.min_free_gb * (1 << 30)
        return {
            "rule": _rule_json(p.rule_for(self.config, "")), "rooms": rooms,
            "totals": totals, "pending_bytes": dict(self.pending_bytes),
            "disks": [{"path": path, "free_bytes": free,
                       "low": bool(min_free) and free is not None and free < min_free}
                      for path, free in self.disk_free.items()],
            "min_free_bytes": int(min_free),
            "files": [{k: f[k] for k in ("part_id", "recording_id", "room_id", "path", "size",
                                         "state", "action", "destination", "note",
                                         "updated_at")} for f in recent],
            # Why each recording's files are not acted on yet ("" once the trigger is met).
            "recordings": [{k: r[k] for k in ("recording_id", "trigger", "reached_at", "note")}
                           for r in await self.store.recordings(limit=RECENT)],
        }


def _identity_by_content(path: str, digest: str, md5: str, size: int
                         ) -> tuple[p.Identity | None, str]:
    """The file's identity, once its bytes are shown to be the uploaded ones (worker
    thread): they must have the part's digest (``md5`` only for a part an older hub
    hashed); ``(identity, "")`` or ``(identity or None, why not)``."""
    before = ex.identity_of(path)
    if before is None:
        return None, "the file was gone before retention saw it uploaded"
    if before.size != size:
        return before, f"the file has {before.size} bytes, {size} were uploaded"
    want = digest or md5
    if not want:
        return before, ""  # nothing to compare with: the identity as first seen
    hasher = new_part_digest() if digest else hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(4 << 20), b""):
            hasher.update(block)
    if ex.identity_of(path) != before:
        return before, "the file changed while retention read it"
    if hasher.hexdigest() != want.lower():
        return before, "the file's content differs from the uploaded bytes"
    return before, ""


def _facts_of(row: dict[str, Any]) -> p.FileFacts:
    return p.FileFacts(part_id=row["part_id"], path=row["path"], size=int(row["size"]),
                       upload_state="uploaded", in_archive=False, state=row["state"])


def _row(f: p.FileFacts) -> dict[str, Any]:
    return {"part_id": f.part_id, "path": f.path, "size": f.size}


def _rule_json(rule: p.Rule) -> dict[str, Any]:
    return {"trigger": rule.trigger, "action": rule.action, "move_to": rule.move_to,
            "delay_days": rule.delay_days, "dry_run": rule.dry_run}
