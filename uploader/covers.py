"""Cover images: ``POST {member}/x/vu/web/cover/up`` turns image bytes into the URL an archive names.

The request is a form with ``cover=data:image/...;base64,...`` and ``csrf``
(``bili_jct``), sent with the cookies; the reply is
``{"code":0,"data":{"url":"https://archive.biliimg.com/bfs/archive/....jpg"}}``
(as biliup and biliup-rs send and read it). The URL then goes into
:attr:`uploader.submit.Submission.cover`.

Only images are sent: the format is read from the bytes, so a recorder that
hands over an HTML error page or an empty file gets a clear error here, not a
refused archive later.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

from uploader.client import BiliClient
from uploader.errors import ErrorKind, UploadError

# Bilibili's cover editor takes up to a few MB; a recording's cover far beyond
# that is a mistake (a video frame dump, the wrong file), not a cover.
MAX_COVER_BYTES = 10 * 1024 * 1024

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def image_type(data: bytes) -> str | None:
    """The MIME type of an image Bilibili takes as a cover, from its first bytes."""
    for signature, mime in _SIGNATURES:
        if data.startswith(signature):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def cover_data_url(data: bytes) -> str:
    """``data:{mime};base64,...`` for ``data``, or a ``bad_request`` when it is no image."""
    if not data:
        raise UploadError(ErrorKind.BAD_REQUEST, "cover image is empty")
    if len(data) > MAX_COVER_BYTES:
        raise UploadError(
            ErrorKind.BAD_REQUEST,
            f"cover image is {len(data)} bytes; at most {MAX_COVER_BYTES} are sent",
        )
    mime = image_type(data)
    if mime is None:
        raise UploadError(ErrorKind.BAD_REQUEST, "cover is not a PNG, JPEG, GIF or WebP image")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


async def upload_cover(
    client: BiliClient, data: bytes, *, now: Callable[[], float] = time.time
) -> str:
    """Upload one cover image; returns its URL for :attr:`Submission.cover`."""
    cover = cover_data_url(data)
    csrf = client.csrf()
    payload = await client.call(
        "cover",
        "POST",
        client.member("x/vu/web/cover/up"),
        params={"t": int(now() * 1000)},
        data={"cover": cover, "csrf": csrf},
        with_cookies=True,
    )
    data_field = payload.get("data") if isinstance(payload, dict) else None
    url = data_field.get("url") if isinstance(data_field, dict) else None
    if not isinstance(url, str) or not url:
        raise UploadError(ErrorKind.BAD_REQUEST, "malformed reply on cover: no url")
    return url
