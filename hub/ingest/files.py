"""Pure helpers about recording files: where they may be, which room and session.

- :func:`recorder_dirs` lists the directories recordings come from.
- :func:`resolve_under` keeps webhook paths inside the configured recorder
  directory (a webhook must not make the hub upload ``/etc/shadow``).
- :func:`describe_file` derives a file's room, start time, streamer and title
  from its name, for the folder watcher. Recognised, in this order:
  BililiveRecorder's default ``录制-<room>-<yyyyMMdd>-<HHmmss>-<fff>-<title>.flv``,
  blrec's default ``blive_<room>_<yyyy>-<MM>-<dd>-<HHmmss>.flv``, then a parent
  directory named ``<room>`` or ``<room>-<streamer>`` / ``<room> - <streamer>``
  (both recorders' default folder). A file matching none of these is skipped.
  Times in names are the recorder's local time, read in the hub's time zone.
- :class:`Stability` decides when a watched file has stopped growing.
- :func:`same_session` groups a file with the room's open recording.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

VIDEO_SUFFIXES = frozenset({".flv", ".mp4", ".mkv", ".ts"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif"})  # recorders' covers


class PathRefused(ValueError):
    """The path is outside the configured directory, or no directory is configured."""


def recorder_dirs(ingest: Any) -> list[str]:
    """Every directory recordings come from (``hub.config.IngestSettings``): the
    recorders' work directories and the watched folders, each once."""
    found = [ingest.bililive_recorder_work_dir, ingest.blrec_work_dir, *ingest.watch_dirs]
    return list(dict.fromkeys(str(Path(d).expanduser()) for d in found if d))


def resolve_under(base: str | None, given: str, *, setting: str,
                  suffixes: frozenset[str] = VIDEO_SUFFIXES, what: str = "a video file"
                  ) -> Path:  # fmt: skip
    """``given`` (relative to ``base``, or absolute inside it), resolved, inside ``base``,
    with one of ``suffixes``."""
    if not base:
        raise PathRefused(f"{setting} is not configured: the hub accepts no recorder paths")
    root = Path(base).expanduser().resolve()
    candidate = Path(given)
    path = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if not path.is_relative_to(root):
        raise PathRefused(f"path {given!r} is outside {setting} ({root})")
    if path.suffix.lower() not in suffixes:
        raise PathRefused(f"path {given!r} is not {what} ({', '.join(sorted(suffixes))})")
    return path


@dataclass(frozen=True)
class FileFacts:
    room_id: str
    started_at: float | None  # from the name; None if the name has no time
    streamer: str = ""
    title: str = ""


_BREC_NAME = re.compile(r"^录制-(\d+)-(\d{8})-(\d{6})(?:-\d{3})?(?:-(.*))?$")
_BLREC_NAME = re.compile(r"^blive_(\d+)_(\d{4})-(\d{2})-(\d{2})-(\d{6})")
_ROOM_DIR = re.compile(r"^(\d+)(?:\s*-\s*(.+))?$")


def _local(date: str, hms: str) -> float | None:
    try:
        return time.mktime(time.strptime(date + hms, "%Y%m%d%H%M%S"))
    except (ValueError, OverflowError):
        return None


def describe_file(path: PurePath) -> FileFacts | None:
    """Room, start time, streamer, title of a recording file; None when no room is known."""
    stem = path.stem
    folder = _ROOM_DIR.match(path.parent.name)
    streamer = (folder.group(2) or "").strip() if folder else ""
    m = _BREC_NAME.match(stem)
    if m:
        return FileFacts(m.group(1), _local(m.group(2), m.group(3)), streamer,
                         (m.group(4) or "").strip())
    m = _BLREC_NAME.match(stem)
    if m:
        return FileFacts(m.group(1), _local(m.group(2) + m.group(3) + m.group(4), m.group(5)),
                         streamer)
    if folder:
        return FileFacts(folder.group(1), None, streamer)
    return None


class Stability:
    """A file is ready once its size and mtime held still for ``quiet`` seconds.

    Fed the directory listing every poll (``observe``); pure, driven by ``now``.
    """

    def __init__(self, quiet: float) -> None:
        self.quiet = quiet
        self._seen: dict[str, tuple[int, float, float]] = {}  # path -> (size, mtime, since)

    def observe(self, listing: dict[str, tuple[int, float]], now: float) -> list[str]:
        ready = []
        for path, (size, mtime) in listing.items():
            old = self._seen.get(path)
            if old is None or old[:2] != (size, mtime):
                self._seen[path] = (size, mtime, now)
                continue
            if size > 0 and now - old[2] >= self.quiet and now - mtime >= self.quiet:
                ready.append(path)
        for gone in set(self._seen) - set(listing):
            del self._seen[gone]
        return sorted(ready)


def same_session(previous_end: float | None, started: float, gap: float) -> bool:
    """Whether a file that started at ``started`` continues a recording whose last file
    ended at ``previous_end`` (a recorder splits one live session into segments that
    start as the previous one closes; a longer pause is a new live session)."""
    return previous_end is not None and started - previous_end <= gap
