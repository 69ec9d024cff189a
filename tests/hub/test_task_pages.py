"""The task list a page at a time: the query string, the cursor, and the store's walk."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from hub.core.errors import BadRequest
from hub.core.lifecycle import Status, TaskRecord
from hub.core.task_pages import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    TaskQuery,
    decode_cursor,
    encode_cursor,
    parse_query,
)
from hub.store.recordings import RecordingStore
from hub.store.tasks import Store


def test_a_cursor_round_trips_and_a_forged_one_is_refused() -> None:
    assert decode_cursor(encode_cursor(12345)) == 12345
    for bad in ("", "abc", encode_cursor(1)[:-2] + "!!", "dDE6LTU", "eDE6NQ"):
        with pytest.raises(BadRequest, match="cursor"):
            decode_cursor(bad or "=")


def test_the_query_string_is_checked_and_defaults_to_a_bounded_page() -> None:
    assert parse_query({}) == TaskQuery(limit=DEFAULT_LIMIT)
    q = parse_query({"status": "completed,failed,completed", "agent": "a1", "account": "main",
                     "recording": "7", "since": "100.5", "until": "200", "limit": "5",
                     "cursor": encode_cursor(40)})
    assert q == TaskQuery(statuses=("completed", "failed"), agent_id="a1", account="main",
                          recording_id=7, since=100.5, until=200.0, before_id=40, limit=5)
    for params, word in [({"status": "done"}, "status"), ({"limit": "0"}, "limit"),
                         ({"limit": str(MAX_LIMIT + 1)}, "limit"), ({"since": "yesterday"}, "since"),
                         ({"since": "nan"}, "since"), ({"recording": "x"}, "recording"),
                         ({"page": "2"}, "page")]:
        with pytest.raises(BadRequest, match=word):
            parse_query(params)


async def _store_with_history(tmp_path: Path, n: int) -> Store:
    store = Store(tmp_path / "bupmesh.db", Fernet(Fernet.generate_key()))
    await store.open()
    parts = [await store.insert_part(file_path=f"/r{i}.flv", size=10, md5="m", account=None,
                                      title="t") for i in range(2)]
    statuses = [Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.PENDING]
    for i in range(n):
        task = TaskRecord(task_id=f"t{i:03d}", part_id=parts[i % 2], file_path="/r.flv",
                          file_size=10, file_md5="m", created_at=1000.0 + i,
                          account="main" if i % 3 == 0 else "other",
                          agent_id=f"agent-{i % 4}", status=statuses[i % 4])
        await store.insert_task(task)
    return store


@pytest.mark.anyio
async def test_walking_the_pages_visits_every_task_once_newest_first(tmp_path: Path) -> None:
    store = await _store_with_history(tmp_path, 53)
    seen, before = [], None
    while True:
        page, before = await store.page_tasks(TaskQuery(limit=10, before_id=before))
        seen += [t.task_id for t in page]
        assert len(page) <= 10
        if before is None:
            break
    assert seen == [f"t{i:03d}" for i in reversed(range(53))]
    store.close()


@pytest.mark.anyio
async def test_filters_narrow_the_walk(tmp_path: Path) -> None:
    store = await _store_with_history(tmp_path, 40)

    async def ids(**kw: object) -> list[int]:
        page, _ = await store.page_tasks(TaskQuery(limit=100, **kw))  # type: ignore[arg-type]
        return sorted(int(t.task_id[1:]) for t in page)

    assert await ids(statuses=("failed",)) == [i for i in range(40) if i % 4 == 1]
    assert await ids(statuses=("failed", "pending")) == [i for i in range(40) if i % 4 in (1, 3)]
    assert await ids(agent_id="agent-2") == [i for i in range(40) if i % 4 == 2]
    assert await ids(account="main") == [i for i in range(40) if i % 3 == 0]
    assert await ids(since=1010.0, until=1013.0) == [10, 11, 12]
    assert await ids(recording_id=1) == []  # no recording tables: no recordings
    # A recording's parts (the pipeline's table in the same file).
    recordings = RecordingStore(tmp_path / "bupmesh.db")
    await recordings.open()
    rec = await recordings.get_or_create(source="watcher", session_key="k", room_id="1",
                                         started_at=0.0, info={})
    await recordings.add_part(rec["id"], part_id=1, path="/r0.flv", size=10, started_at=None,
                              ended_at=None)
    assert await ids(recording_id=rec["id"]) == [i for i in range(40) if i % 2 == 0]
    assert await ids(recording_id=rec["id"], agent_id="agent-2") == \
        [i for i in range(40) if i % 4 == 2]
    recordings.close()
    # The newest finished, for the live view.
    recent = await store.recent_ended_tasks(5)
    assert [t.task_id for t in recent] == ["t038", "t037", "t036", "t034", "t033"]
    store.close()


@pytest.mark.anyio
async def test_every_filter_walks_an_index(tmp_path: Path) -> None:
    """The cost of a page follows the page, not the history: no full scan, no sort."""
    store = await _store_with_history(tmp_path, 5)
    store.close()
    conn = sqlite3.connect(tmp_path / "bupmesh.db")
    for where, args in [("status IN (?)", ("failed",)), ("agent_id=?", ("a",)),
                        ("account=?", ("main",)), ("created_at>=? AND created_at<?", (1, 2))]:
        # The shape Store.page_tasks uses: the page's ids from an index, then their rows.
        sql = (f"SELECT * FROM agent_tasks WHERE id IN (SELECT id FROM agent_tasks WHERE {where} "
               "ORDER BY id DESC LIMIT 10) ORDER BY id DESC")
        plan = " ".join(str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args))
        assert "COVERING INDEX" in plan and "SCAN agent_tasks" not in plan, (where, plan)
    conn.close()


@pytest.mark.anyio
async def test_the_live_view_reads_only_the_newest_recordings(tmp_path: Path) -> None:
    recordings = RecordingStore(tmp_path / "bupmesh.db")
    await recordings.open()
    for n in range(5):
        await recordings.get_or_create(source="watcher", session_key=f"k{n}", room_id="1",
                                       started_at=float(n), info={})
    every = [r["id"] for r in await recordings.list()]
    assert len(every) == 5
    assert [r["id"] for r in await recordings.list(newest=2)] == every[-2:]  # oldest first
    assert [r["id"] for r in await recordings.list(newest=10)] == every
    recordings.close()


@pytest.mark.anyio
async def test_a_submit_answer_and_a_restart_find_their_recordings_through_an_index(
        tmp_path: Path) -> None:
    """A SubmitResult, the restart's look for Submits in flight and the watcher's quiet
    rooms read the recordings they are about, not the whole history."""
    recordings = RecordingStore(tmp_path / "bupmesh.db")
    await recordings.open()
    ids = []
    for n in range(6):
        rec = await recordings.get_or_create(source="watcher" if n % 2 else "blrec",
                                             session_key=f"k{n}", room_id="1",
                                             started_at=float(n), info={})
        ids.append(rec["id"])
    await recordings.update_submission(ids[1], submit_state="submitting", submit_id="s-1")
    await recordings.update_submission(ids[4], submit_state="submitting", submit_id="s-4")
    await recordings.end(ids[3], 10.0)
    assert (await recordings.with_submit_id("s-4"))["id"] == ids[4]
    assert await recordings.with_submit_id("s-9") is None
    assert await recordings.with_submit_id("") is None  # a recording never sent has ""
    assert [r["id"] for r in await recordings.in_state("submitting")] == [ids[1], ids[4]]
    assert [r["id"] for r in await recordings.still_open("watcher")] == [ids[1], ids[5]]
    recordings.close()
    conn = sqlite3.connect(tmp_path / "bupmesh.db")
    for where in ("submit_id=?", "submit_state=?"):
        plan = " ".join(str(r[-1]) for r in conn.execute(
            f"EXPLAIN QUERY PLAN SELECT * FROM recordings WHERE {where} ORDER BY id", ("x",)))
        assert "INDEX" in plan and "SCAN recordings" not in plan, (where, plan)
    conn.close()
