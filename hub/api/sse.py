"""``GET /api/manage/events``: the hub's live state as Server-Sent Events.

A page opens one stream and gets, in this order:

- ``event: snapshot``: ``{agents, tasks, ips, server_time}``: everything it shows
  (of the tasks: every unfinished one and the newest finished ones; older history
  is paged in from ``GET /api/manage/tasks`` when the page asks for it);
- then deltas, each the *current* row of what changed since the last send:
  ``event: task`` (one task, as ``GET /api/manage/tasks/{id}`` shows it),
  ``event: agent`` (one agent row),
  ``event: ips`` (``{ips, server_time}``, the whole risk table: it is small);
- a comment line every ``heartbeat`` seconds so proxies keep the stream open (the IP
  table rides along: a cooldown ends with time, not with an event);
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
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from starlette.responses import StreamingResponse

from hub.core.events import AGENT, IPS, TASK, Batch, EventBus

if TYPE_CHECKING:
    from hub.service import HubService

log = logging.getLogger("bupmesh.hub.http")

HEARTBEAT_SECONDS = 15.0
MIN_GAP_SECONDS = 0.2
# A snapshot carries every unfinished task and this many of the latest finished ones.
SNAPSHOT_ENDED_TASKS = 200
ACTIVE_STATUSES = frozenset({"pending", "assigned", "uploading"})

Redact = Callable[[Any], Any]


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
    return out


async def _ips(service: HubService) -> dict[str, Any]:
    return {"ips": await service.list_ips(), "server_time": service.clock()}


async def event_stream(
    service: HubService,
    bus: EventBus,
    redact: Redact,
    *,
    heartbeat: float = HEARTBEAT_SECONDS,
    min_gap: float = MIN_GAP_SECONDS,
) -> AsyncIterator[bytes]:
    """The body of one SSE response; ends when the bus closes (hub shutdown)."""
    with bus.subscribe() as sub:
        # Subscribed before the snapshot is read: a change that lands meanwhile is sent
        # again as a delta rather than lost between the two.
        yield encode_event("snapshot", redact(await snapshot(service)))
        while True:
            batch: Batch | None = None
            with anyio.move_on_after(heartbeat) as waited:
                batch = await sub.next_batch()
            if waited.cancelled_caught:
                yield encode_comment("keep-alive")
                yield encode_event(IPS, redact(await _ips(service)))
                continue
            if batch is None:
                yield encode_event("shutdown", {"reason": "hub stopping"})
                return
            try:
                if batch.resync:
                    events = [("snapshot", await snapshot(service))]
                else:
                    events = await render(service, batch)
            except Exception:
                log.exception("live view: rendering changes failed")
                events = []
            if events:
                yield b"".join(encode_event(name, redact(data)) for name, data in events)
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
