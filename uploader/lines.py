"""Upload line selection: a configured ``zone_upcdn`` line, or the fastest probed one.

A line is a set of preupload query parameters (``zone``, ``upcdn``,
``probe_version``) that makes Bilibili hand out an endpoint on that CDN.
``auto`` asks ``{member}/preupload?r=probe`` for the current lines and their
probe URLs, times one small request to each (as biliup does: a 100 KiB POST,
or a GET when the reply's ``probe.get`` is set) and keeps the fastest.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import anyio

from uploader.client import BiliClient
from uploader.errors import ErrorKind, UploadError

PROBE_VERSION = "20221109"
PROBE_BODY_SIZE = 100 * 1024
_LINE_NAME = re.compile(r"(?:(?P<zone>[a-z]+)_)?(?P<upcdn>[a-z0-9]+)")


@dataclass(frozen=True)
class Line:
    name: str  # e.g. "cs_bda2"
    query: tuple[tuple[str, str], ...]  # preupload parameters that select the line
    probe_url: str | None = field(default=None, compare=False)

    def params(self) -> dict[str, str]:
        return dict(self.query)


def parse_line(name: str) -> Line:
    """``cs_bda2`` (or just ``bda2``, zone ``cs``) -> the preupload parameters for it."""
    match = _LINE_NAME.fullmatch(name.strip().lower())
    if not match:
        raise ValueError(f"line must look like cs_bda2 or auto, got {name!r}")
    zone = match.group("zone") or "cs"
    upcdn = match.group("upcdn")
    return Line(
        name=f"{zone}_{upcdn}",
        query=(("zone", zone), ("upcdn", upcdn), ("probe_version", PROBE_VERSION)),
    )


def parse_probe_reply(payload: Any) -> tuple[list[Line], bool]:
    """Lines (with probe URLs) from a ``preupload?r=probe`` reply, and whether to probe by GET."""
    if not isinstance(payload, dict) or not isinstance(payload.get("lines"), list):
        raise UploadError(ErrorKind.BAD_REQUEST, "malformed reply on probe: no lines")
    lines: list[Line] = []
    for item in payload["lines"]:
        if not isinstance(item, dict):
            continue
        query_text = item.get("query")
        probe_url = item.get("probe_url")
        if not isinstance(query_text, str) or not isinstance(probe_url, str):
            continue
        query = tuple(parse_qsl(query_text.lstrip("?&"), keep_blank_values=True))
        params = dict(query)
        name = f"{params.get('zone', 'cs')}_{params.get('upcdn', '?')}"
        lines.append(Line(name=name, query=query, probe_url=probe_url))
    if not lines:
        raise UploadError(ErrorKind.BAD_REQUEST, "malformed reply on probe: no usable lines")
    probe = payload.get("probe")
    use_get = isinstance(probe, dict) and probe.get("get") is not None
    return lines, use_get


def pick_fastest(costs: dict[Line, float | None]) -> Line | None:
    """The line with the lowest probe time; ``None`` cost means the probe failed."""
    answered = [
        (cost, index, line) for index, (line, cost) in enumerate(costs.items()) if cost is not None
    ]
    if not answered:
        return None
    return min(answered)[2]


async def probe_lines(
    client: BiliClient, *, probe_timeout: float = 10.0
) -> dict[Line, float | None]:
    """Time one probe request per line, one after another (concurrent probes would share
    the uplink and skew each other)."""
    payload = await client.call(
        "probe", "GET", client.member("preupload"), params={"r": "probe"}, with_cookies=True
    )
    lines, use_get = parse_probe_reply(payload)
    body = bytes(PROBE_BODY_SIZE)
    costs: dict[Line, float | None] = {}
    for line in lines:
        url = client.absolute(line.probe_url or "")
        started = time.perf_counter()
        cost: float | None = None
        with anyio.move_on_after(probe_timeout):
            try:
                if use_get:
                    status, _ = await client.send(
                        "probe", "GET", url, request_timeout=probe_timeout
                    )
                else:
                    status, _ = await client.send(
                        "probe", "POST", url, content=body, request_timeout=probe_timeout
                    )
            except UploadError:
                status = 0
            if 200 <= status < 300:
                cost = time.perf_counter() - started
        costs[line] = cost
    return costs


async def select_line(
    client: BiliClient, line: str = "auto", *, probe_timeout: float = 10.0
) -> Line | None:
    """The line to upload on; ``None`` means "let Bilibili choose" (every probe failed)."""
    if line.strip().lower() != "auto":
        return parse_line(line)
    costs = await probe_lines(client, probe_timeout=probe_timeout)
    return pick_fastest(costs)
