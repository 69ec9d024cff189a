"""The address Bilibili sees this client at: ``GET {api}/x/web-interface/zone``.

Bilibili's web interface answers anyone (no cookies)
``{"code":0,"message":"0","ttl":1,"data":{"addr":"1.2.3.4","country":..,
"province":..,"city":..,"isp":..,...}}``, ``addr`` being the address the
request came from. Asked through the same :class:`~uploader.client.BiliClient`
as the uploads (same proxy, same source address), it names the egress whose
uploads Bilibili counts together: behind a proxy the proxy's outgoing
address, not this host's. The risk ledger is keyed on it.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from uploader.client import BiliClient
from uploader.errors import ErrorKind, UploadError

ZONE_PATH = "x/web-interface/zone"


def read_zone(payload: Any) -> str:
    """The ``data.addr`` of a zone reply, normalised; a malformed reply is ``bad_request``."""
    data = payload.get("data") if isinstance(payload, dict) else None
    addr = data.get("addr") if isinstance(data, dict) else None
    if not isinstance(addr, str):
        raise UploadError(ErrorKind.BAD_REQUEST, "malformed reply on zone: no data.addr")
    try:
        return str(ipaddress.ip_address(addr.strip()))
    except ValueError:
        raise UploadError(
            ErrorKind.BAD_REQUEST, f"malformed reply on zone: addr {addr[:60]!r} is not an IP"
        ) from None


async def egress_address(client: BiliClient, *, request_timeout: float = 15.0) -> str:
    """The address Bilibili sees ``client``'s requests come from.

    Raises :class:`~uploader.errors.UploadError`: ``network`` when the request
    fails (the proxy is down, say), ``bad_request`` on an odd reply.
    """
    payload = await client.call(
        "zone", "GET", client.api(ZONE_PATH), request_timeout=request_timeout
    )
    return read_zone(payload)
