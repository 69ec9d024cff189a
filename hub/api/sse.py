"""``GET /api/manage/events``: the hub's live state as Server-Sent Events.

A page opens one stream and gets, in this order:

- ``event: snapshot``: ``{agents, tasks, ips, verdicts, server_time}``: everything it
  shows (of the tasks: every unfinished one and the newest finished ones; older
  history is paged in from ``GET /api/manage/tasks`` when the page asks for it;
  ``verdicts``: learned limits, captchas and accounts' standing, see
  ``HubService.risk_overview``);
- ``event: history`` (the console's chart data, ``HubService.chart_history``) and
  ``event: recordings`` (``{recordings}``, the newest ``SNAPSHOT_RECORDINGS``, as
  ``GET /api/manage/recordings`` shows them), when the hub has them;
- then deltas, each the *current* row of what changed since the last send:
  ``event: task`` (one task, as ``GET /api/manage/tasks/{id}`` shows it),
  ``event: agent`` (one agent row),
  ``event: ips`` (``{ips, verdicts, server_time}``, the whole risk picture: it is
  small, and every ledger event changes the IP table),
  ``event: recording`` (one recording);
- ``event: history`` again every ``history_every`` seconds: charts move with time, and
  a bucket's worth of progress reports is one number, not one event each;
- a comment line after ``heartbeat`` seconds without a send, so proxies keep the
  stream open (the IP table rides along: a cooldown ends with time, not with an event);
- ``event: snapshot`` again if it fell so far behind that its changes were dropped
  (``hub.core.events``), and ``event: shutdown`` when the hub stops, after which the
  stream ends cleanly.

Sends are spaced at least ``min_gap`` seconds apart, so a burst of progress reports
costs one render per page, not one per report. A row that fails to render is
logged and skipped: a page never takes the hub, or its own stream, down with it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import msgspec
from starlette.responses import StreamingResponse

from hub.core.events import AGENT, IPS, RECORDING, TASK, Batch, EventBus

if TYPE_CHECKING:
    from hub.service import HubService

log = logging.getLogger("bupmesh.hub.http")

HEARTBEAT_SECONDS = 15.0
HISTORY_SECONDS = 10.0
SNAPSHOT_RECORDINGS = 200
MIN_GAP_SECONDS = 0.2
# A snapshot carries every unfinished task and this many of the latest finished ones.
SNAPSHOT_ENDED_TASKS = 200
ACTIVE_STATUSES = frozenset({"pending", "assigned", "uploading"})

Redact = Callable[[Any], Any]


class RecordingViews(Protocol):
    """The recording pipeline's read side (``hub.submission.manager.SubmissionManager``)."""

    async def list(self, *, newest: int | None = None) -> list[dict[str, Any]]: ...

    async def describe(self, recording_id: int) -> dict[str, Any]: ...


def recordings_of(service: Any) -> RecordingViews | None:
    """The recording pipeline's read side (``HubService.recording_views``); None for a
    hub without one (tests' hubs)."""
    return getattr(service, "recording_views", None)


def history_of(service: Any) -> Callable[[], dict[str, Any]] | None:
    return getattr(service, "chart_history", None)


async def extras(service: Any) -> list[tuple[str, Any]]:
    """What follows a snapshot: chart history and recent recordings, where the hub has them."""
    out: list[tuple[str, Any]] = []
    history = history_of(service)
    if history is not None:
        out.append(("history", history()))
    recordings = recordings_of(service)
    if recordings is not None:
        rows = await recordings.list(newest=SNAPSHOT_RECORDINGS)
        out.append(("recordings", {"recordings": rows}))
    return out


def encode_event(event: str, data: Any) -> bytes:
    """One SSE event. msgspec's JSON has no raw newlines, so one ``data:`` line suffices."""
    return b"event: " + event.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


def encode_comment(text: str) -> bytes:
    return b": " + text.encode() + b"\n\n"


def trim_tasks(tasks: list[dict[str, Any]], ended: int = SNAPSHOT_ENDED_TASKS
               ) -> list[dict[str, Any]]:
    """Unfinished tasks plus the ``ended`` most recent finished ones, newest first."""
    ordered = sorted(tasks, key=lambda t: t.get("created_at") or 0, reverse=True)
    live = [t for t in ordered if t.get("status") in ACTIVE_STATUSES]
    done = [t for t in ordered if t.get("status") not in ACTIVE_STATUSES][:ended]
    return sorted(live + done, key=lambda t: t.get("created_at") or 0, reverse=True)


async def snapshot(service: HubService) -> dict[str, Any]:
    return {
        "agents": await service.list_agents(),
        "tasks": trim_tasks(await service.live_and_recent_tasks(SNAPSHOT_ENDED_TASKS)),
        "ips": await service.list_ips(),
        "verdicts": await service.risk_overview(),
        "server_time": service.clock(),
    }


async def render(service: HubService, batch: Batch) -> list[tuple[str, Any]]:
    """The events for one batch of changes: each changed object as it is now."""
    out: list[tuple[str, Any]] = []
    agent_ids = {key for kind, key in batch.changes if kind == AGENT}
    if agent_ids:
        for row in await service.list_agents():
            if row["agent_id"] in agent_ids:
                out.append((AGENT, row))
    for kind, key in batch.changes:
        if kind != TASK:
            continue
        try:
            out.append((TASK, await service.get_task(key)))
        except Exception as exc:  # gone (NotFound) or unreadable: skip this row only
            log.debug("live view: task %s not rendered: %s", key, exc)
    if any(kind == IPS for kind, _ in batch.changes):
        out.append((IPS, await _ips(service)))
    recordings = recordings_of(service)
    for kind, key in batch.changes:
        if kind != RECORDING or recordings is None:
            continue
        try:
            out.append((RECORDING, await recordings.describe(int(key))))
        except Exception as exc:
            log.debug("live view: recording %s not rendered: %s", key, exc)
    return out


async def _ips(service: HubService) -> dict[str, Any]:
    return {"ips": await service.list_ips(), "verdicts": await service.risk_overview(),
            "server_time": service.clock()}


async def event_stream(
    service: HubService,
    bus: EventBus,
    redact: Redact,
    *,
    heartbeat: float = HEARTBEAT_SECONDS,
    min_gap: float = MIN_GAP_SECONDS,
    history_every: float = HISTORY_SECONDS,
) -> AsyncIterator[bytes]:
    """The body of one SSE response; ends when the bus closes (hub shutdown)."""
    history = history_of(service)
    with bus.subscribe() as sub:
        # Subscribed before the snapshot is read: a change that lands meanwhile is sent
        # again as a delta rather than lost between the two.
        first = [("snapshot", await snapshot(service)), *await extras(service)]
        yield b"".join(encode_event(name, redact(data)) for name, data in first)
        last_send = last_history = anyio.current_time()
        while True:
            due = last_send + heartbeat
            if history is not None:
                due = min(due, last_history + history_every)
            batch: Batch | None = None
            with anyio.move_on_after(max(0.0, due - anyio.current_time())) as waited:
                batch = await sub.next_batch()
            now = anyio.current_time()
            events: list[tuple[str, Any]] = []
            if waited.cancelled_caught:
                if now >= last_send + heartbeat:
                    yield encode_comment("keep-alive")
                    events.append((IPS, await _ips(service)))
            elif batch is None:
                yield encode_event("shutdown", {"reason": "hub stopping"})
                return
            else:
                try:
                    if batch.resync:
                        events = [("snapshot", await snapshot(service)), *await extras(service)]
                    else:
                        events = await render(service, batch)
                except Exception:
                    log.exception("live view: rendering changes failed")
            if history is not None and now >= last_history + history_every:
                events.append(("history", history()))
                last_history = now
            if events:
                yield b"".join(encode_event(name, redact(data)) for name, data in events)
                last_send = now
            if not waited.cancelled_caught:
                await anyio.sleep(min_gap)


def event_stream_response(service: HubService, redact: Redact) -> StreamingResponse:
    return StreamingResponse(
        event_stream(service, service.events, redact),
        media_type="text/event-stream",
        headers={
            "Cache-Control": "no-cache, no-store",
            "X-Accel-Buffering": "no",  # nginx: do not buffer a stream
        },
    )
