"""The cover image a submission carries: a configured file, or the recorder's live cover.

The hub reads the bytes and the agent uploads them from its own IP with the
submission (``Submit.cover``), so one message carries them: at most
:data:`protocol.grpc_options.MAX_SUBMIT_COVER`.

``submission.cover: live`` takes what the recorder saved of the live room's
cover: blrec announces it (``CoverImageDownloadedEvent``, kept on the
recording), BililiveRecorder writes it beside the file it belongs to as
``<file>.cover.<ext>`` (its "save stream cover" option) without telling its
webhook. A live cover that is missing or unusable is only logged: the archive
goes out without one (Bilibili picks a frame), while a configured file that
cannot be sent stops the submission with a message naming it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hub.config import LIVE_COVER
from protocol.grpc_options import MAX_SUBMIT_COVER
from uploader.covers import image_type

log = logging.getLogger("bupmesh.hub.submission")

COVER_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif")


class CoverError(ValueError):
    """A configured cover cannot be sent (the message names the file and why)."""


def read_cover(path: Path) -> bytes:
    """The image at ``path``, or :class:`CoverError` (unreadable, too big, not an image)."""
    try:
        size = path.stat().st_size
        if size > MAX_SUBMIT_COVER:
            raise CoverError(f"cover {path} is {size} bytes; at most {MAX_SUBMIT_COVER} "
                             "travel with a submission")
        data = path.read_bytes()
    except OSError as exc:
        raise CoverError(f"cover {path}: {exc.strerror or exc}") from None
    if image_type(data) is None:
        raise CoverError(f"cover {path} is not a PNG, JPEG, GIF or WebP image")
    return data


def live_cover_path(recording: dict[str, Any], parts: list[dict[str, Any]]) -> Path | None:
    """Where the recorder left this session's live cover, if anywhere."""
    if recording.get("live_cover"):
        return Path(recording["live_cover"])
    for part in parts:
        video = Path(part["path"])
        for suffix in COVER_SUFFIXES:
            candidate = video.with_name(f"{video.stem}.cover{suffix}")
            if candidate.is_file():
                return candidate
    return None


def cover_for(setting: str, recording: dict[str, Any], parts: list[dict[str, Any]]
              ) -> bytes | None:  # fmt: skip
    """The cover bytes for ``recording`` under ``setting`` (None: no cover).

    Blocking file IO: call it from a worker thread.
    """
    if not setting:
        return None
    if setting != LIVE_COVER:
        return read_cover(Path(setting))
    path = live_cover_path(recording, parts)
    if path is None:
        log.info("recording %s: no live cover from the recorder; submitting without one",
                 recording.get("id"))
        return None
    try:
        return read_cover(path)
    except CoverError as exc:
        log.warning("recording %s: live cover unusable (%s); submitting without one",
                    recording.get("id"), exc)
        return None
