"""The SQL behind one page of the task list (hub/core/task_pages.py holds the query).

Kept apart from the store's writes because it is the one read that must cost the
same with ten tasks or a hundred thousand: every filter is an indexed column, and
the page's ids are chosen from the indexes alone (a time range may hold thousands
of rows to order) before only those rows are read.
"""

from __future__ import annotations

import sqlite3

from hub.core.lifecycle import Status
from hub.core.task_pages import TaskQuery

_ENDED = tuple(s.value for s in Status if s.terminal)


def page_rows(c: sqlite3.Connection, query: TaskQuery) -> list[sqlite3.Row]:
    """Up to ``query.limit + 1`` rows, newest first (one more than a page says whether
    another follows)."""
    clauses: list[str] = []
    args: list[object] = []
    if query.statuses:
        clauses.append(f"status IN ({','.join('?' * len(query.statuses))})")
        args += query.statuses
    for column, value in (("agent_id", query.agent_id), ("account", query.account)):
        if value is not None:
            clauses.append(f"{column}=?")
            args.append(value)
    if query.since is not None:
        clauses.append("created_at>=?")
        args.append(query.since)
    if query.until is not None:
        clauses.append("created_at<?")
        args.append(query.until)
    if query.before_id is not None:
        clauses.append("id<?")
        args.append(query.before_id)
    if query.recording_id is not None:
        # The recording pipeline's table (hub/store/recordings.py), in this file
        # whenever the pipeline runs; a hub without it has no recordings.
        if c.execute("SELECT 1 FROM sqlite_master WHERE type='table' "
                     "AND name='recording_parts'").fetchone() is None:
            return []
        clauses.append("part_id IN (SELECT part_id FROM recording_parts WHERE recording_id=?)")
        args.append(query.recording_id)
    ids = "SELECT id FROM agent_tasks"
    if clauses:
        ids += " WHERE " + " AND ".join(clauses)
    ids += " ORDER BY id DESC LIMIT ?"
    sql = f"SELECT * FROM agent_tasks WHERE id IN ({ids}) ORDER BY id DESC"
    return c.execute(sql, [*args, query.limit + 1]).fetchall()


def recent_ended_rows(c: sqlite3.Connection, limit: int) -> list[sqlite3.Row]:
    """The ``limit`` newest finished tasks' rows."""
    return c.execute(
        f"SELECT * FROM agent_tasks WHERE status IN ({','.join('?' * len(_ENDED))}) "
        "ORDER BY id DESC LIMIT ?", (*_ENDED, limit)).fetchall()
