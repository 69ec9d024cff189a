"""The campaign's verdict: a pure function from what the witnesses recorded to findings.

Two witnesses count. The simulator's ledger says which upos objects were
completed, with the MD5 and size of the bytes it actually assembled, and which
archives were submitted; the hub's SQLite database says what the hub believes
about every part and task. The campaign knows what it asked for (the source
files and their MD5s). :func:`check` compares the three and names every
breach of the invariants in docs/architecture.md, in the spirit of Jepsen's lost/duplicated checkers:

* ``lost``: a source whose part did not end ``uploaded`` in the hub, or whose
  recorded object is missing from the ledger (the hub believes a lie);
* ``duplicate_completions``: a source with more than one completed object
  (two upos sessions finished for one part), or a part row given twice;
* ``duplicate_submissions``: an object that appears in more than one archive,
  or a recording submitted as more than one archive;
* ``lost_submissions``: a recording with no archive, or whose archive does not
  list exactly its parts' objects;
* ``byte_mismatches``: an object whose size or MD5 is not its source's, an
  object that matches no source, or an upos session the simulator flagged
  corrupt (a part sent twice with different bytes);
* ``non_terminal``: a task not ``completed`` / ``failed`` / ``cancelled``;
* ``failed``: a task that ended ``failed``. The nemesis only injects faults that
  heal, and the campaign heals everything before it waits, so no failure here
  has a legitimate reason: every one is a finding (see docs/internals.md).

A completion request repeated on the *same* upload id is not a duplicate:
upos answers it idempotently with the same object (the hub's re-offer after a
granted Proceed does exactly that); the report counts them for information.

No IO here, so the checker is tested on synthetic histories (tests/chaos/test_checker.py).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TERMINAL = frozenset({"completed", "failed", "cancelled"})
PART_DONE = "uploaded"  # the hub's `parts.state` once its object is complete


@dataclass(frozen=True)
class Source:
    """A file the campaign handed to the hub."""

    path: str
    size: int
    md5: str


@dataclass
class Findings:
    lost: list[str] = field(default_factory=list)
    duplicate_completions: list[str] = field(default_factory=list)
    duplicate_submissions: list[str] = field(default_factory=list)
    lost_submissions: list[str] = field(default_factory=list)
    byte_mismatches: list[str] = field(default_factory=list)
    non_terminal: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    # information, not findings
    objects: int = 0
    repeated_completion_requests: int = 0

    CATEGORIES = ("lost", "duplicate_completions", "duplicate_submissions",
                  "lost_submissions", "byte_mismatches", "non_terminal", "failed")

    @property
    def ok(self) -> bool:
        return not any(getattr(self, name) for name in self.CATEGORIES)

    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in self.CATEGORIES}

    def render(self) -> str:
        lines = [f"{self.objects} objects, {self.repeated_completion_requests} repeated "
                 f"completion requests (idempotent); findings: {self.counts()}"]
        for name in self.CATEGORIES:
            lines += [f"  {name}: {item}" for item in getattr(self, name)]
        return "\n".join(lines)


def check(
    sources: Iterable[Source],
    parts: Iterable[Mapping[str, Any]],
    tasks: Iterable[Mapping[str, Any]],
    uploads: Iterable[Mapping[str, Any]],
    submissions: Iterable[Mapping[str, Any]] = (),
    complete_requests: Iterable[Mapping[str, Any]] = (),
    sessions: Iterable[Mapping[str, Any]] = (),
    recordings: Iterable[Sequence[str]] = (),
) -> Findings:
    """Compare the campaign's sources with the hub's rows and the simulator's records.

    ``parts``: hub ``parts`` rows (``id, file_path, size, state, filename``);
    ``tasks``: hub ``agent_tasks`` rows (``task_id, part_id, status, error_message``);
    ``uploads``: ``GET /_sim/uploads``; ``submissions``: ``GET /_sim/submissions``;
    ``complete_requests``: ``GET /_sim/requests?op=complete``; ``sessions``: ``GET /_sim/sessions``;
    ``recordings``: the source paths of each live session handed over by webhook, whose
    archive must be submitted exactly once, listing exactly those parts' objects.
    """
    sources = list(sources)
    parts = list(parts)
    tasks = list(tasks)
    uploads = list(uploads)
    found = Findings(objects=len(uploads))

    by_path = {s.path: s for s in sources}
    parts_by_path: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for part in parts:
        parts_by_path[part["file_path"]].append(part)
    uploads_by_name: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    uploads_by_md5: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for upload in uploads:
        uploads_by_name[upload["filename"]].append(upload)
        uploads_by_md5[upload["md5"]].append(upload)

    for path, rows in sorted(parts_by_path.items()):
        if path not in by_path:
            found.lost.append(f"hub has a part for {path}, which the campaign never added")
        elif len(rows) > 1:
            found.duplicate_completions.append(
                f"{path}: {len(rows)} part rows (ids {[r['id'] for r in rows]})")

    for source in sources:
        rows = parts_by_path.get(source.path, [])
        done = [r for r in rows if r.get("state") == PART_DONE]
        if not done:
            states = [r.get("state") for r in rows] or ["no part row"]
            found.lost.append(f"{source.path}: never completed (part state {states})")
        for row in done:
            if not row.get("filename") or not uploads_by_name.get(row["filename"]):
                found.lost.append(
                    f"{source.path}: hub says uploaded as {row.get('filename')!r}, "
                    "but the simulator has no such object")
        same_bytes = uploads_by_md5.get(source.md5, [])
        if len(same_bytes) > 1:
            found.duplicate_completions.append(
                f"{source.path}: {len(same_bytes)} objects with its bytes "
                f"({sorted(u['filename'] for u in same_bytes)})")
        for row in done:
            for upload in uploads_by_name.get(row.get("filename") or "", []):
                if upload["md5"] != source.md5 or upload["size"] != source.size:
                    found.byte_mismatches.append(
                        f"{source.path}: object {upload['filename']} has {upload['size']} B "
                        f"md5 {upload['md5']}, source has {source.size} B md5 {source.md5}")

    source_md5s = {s.md5 for s in sources}
    for name, objects in sorted(uploads_by_name.items()):
        if len(objects) > 1:
            found.duplicate_completions.append(f"object {name} completed {len(objects)} times")
        for upload in objects:
            if upload["md5"] not in source_md5s:
                found.byte_mismatches.append(
                    f"object {name} ({upload['size']} B, md5 {upload['md5']}) "
                    "matches no source file")

    for session in sessions:
        if session.get("corrupt"):
            found.byte_mismatches.append(
                f"upos session {session.get('upload_id')} ({session.get('filename')}) "
                f"corrupt: {session['corrupt']}")

    in_archives: Counter[str] = Counter()
    for submission in submissions:
        for video in {v["filename"] for v in submission.get("videos", [])}:
            in_archives[video] += 1
    found.duplicate_submissions = [
        f"object {name} submitted in {count} archives"
        for name, count in sorted(in_archives.items()) if count > 1
    ]

    for number, paths in enumerate(recordings):
        names = {r.get("filename") for p in paths for r in parts_by_path.get(p, [])}
        names.discard(None)
        archives = [sub for sub in submissions
                    if names & {v["filename"] for v in sub.get("videos", [])}]
        if not archives:
            found.lost_submissions.append(f"recording {number} ({len(paths)} parts): no archive")
        elif len(archives) > 1:
            found.duplicate_submissions.append(
                f"recording {number}: {len(archives)} archives "
                f"(aids {[a.get('aid') for a in archives]})")
        for archive in archives:
            listed = {v["filename"] for v in archive.get("videos", [])}
            if listed != names or len(names) != len(paths):
                found.lost_submissions.append(
                    f"recording {number}: archive {archive.get('aid')} lists {sorted(listed)}, "
                    f"its parts are {sorted(names)} ({len(paths)} handed over)")

    for task in tasks:
        status = task.get("status")
        if status not in TERMINAL:
            found.non_terminal.append(f"task {task['task_id']} (part {task['part_id']}) {status}")
        elif status == "failed":
            found.failed.append(
                f"task {task['task_id']} (part {task['part_id']}): {task.get('error_message')}")

    ok_completes = Counter(
        r.get("upload_id") for r in complete_requests if r.get("status") == 200)
    found.repeated_completion_requests = sum(n - 1 for n in ok_completes.values() if n > 1)
    return found
