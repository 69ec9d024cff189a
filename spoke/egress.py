"""What Bilibili sees of this agent: its egress address, and the line it uploads on.

Bilibili counts uploads by the address they arrive from. Behind a proxy that
is the proxy's outgoing address, not the agent's own, and two agents behind
one proxy are one address to Bilibili. So the agent asks Bilibili itself
(``x/web-interface/zone``, :func:`uploader.zone.egress_address`) through a
client built exactly like its upload clients (same ``proxy``, same
``source_ip``), and reports the answer in ``Hello.egress_ip`` and
``Heartbeat.egress_ip``; the hub keys its IP ledger on it.

:class:`EgressWatch` asks at start, every ``egress_check_interval`` seconds,
and soon after a network or proxy error (:meth:`EgressWatch.poke`: the route
may have changed). A failed lookup keeps the last known address and is
retried sooner, backing off up to the interval. An interval of 0 switches
the lookups off (the hub then keys the agent by its link address).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from spoke.config import AgentSettings
from uploader.client import BiliClient
from uploader.credentials import Credentials
from uploader.errors import UploadError
from uploader.zone import egress_address

RETRY_FIRST = 5.0  # after a failed lookup: 5 s, 10 s, 20 s ... up to the interval
POKE_GAP = 10.0  # lookups asked for by errors: at most one per this many seconds


@dataclass(frozen=True)
class Reach:
    """What Hello and Heartbeat say of the agent's Bilibili side ("" / 0.0: not known)."""

    egress_ip: str = ""
    line: str = ""
    line_bps: float = 0.0


def zone_lookup(
    settings: AgentSettings, client_factory: Callable[..., Any] = BiliClient
) -> Callable[[], Awaitable[str]]:
    """One egress lookup through a fresh client with the agent's proxy and source address.

    Fresh each time: a rotating proxy may leave from another address on a new
    connection, and that is what the next upload will do too.
    """

    async def lookup() -> str:
        client = client_factory(
            Credentials(cookies={}),  # zone needs no login; none is sent
            api_url=settings.api_url,
            source_ip=settings.source_ip,
            proxy=settings.proxy,
            timeout=30,
        )
        async with client:
            return await egress_address(client)

    return lookup


class EgressWatch:
    """Keeps :attr:`address` current; :meth:`run` until cancelled."""

    def __init__(
        self,
        interval: float,
        lookup: Callable[[], Awaitable[str]],
        *,
        on_change: Callable[[str], None] = lambda address: None,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        self.interval = interval
        self.lookup = lookup
        self.on_change = on_change
        self.clock = clock
        self.log = log or logging.getLogger("bupmesh.agent")
        self.address = ""
        self.failures = 0
        self.retry_first = RETRY_FIRST
        self.poke_gap = POKE_GAP
        self.first_answer = anyio.Event()  # the first lookup ended (either way)
        self._poked = anyio.Event()
        self._last_lookup: float | None = None

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def poke(self) -> None:
        """A network or proxy error happened: look again soon (rate-limited)."""
        self._poked.set()

    async def run(self) -> None:
        if not self.enabled:
            self.first_answer.set()
            return
        while True:
            wait = await self.check()
            self.first_answer.set()
            with anyio.move_on_after(wait):
                await self._poked.wait()
            self._poked = anyio.Event()
            if self._last_lookup is not None:
                # Errors come in bursts; one lookup answers them all.
                await anyio.sleep(max(0.0, self._last_lookup + self.poke_gap - self.clock()))

    async def check(self) -> float:
        """One lookup; returns how long to wait before the next."""
        self._last_lookup = self.clock()
        try:
            address = await self.lookup()
        except UploadError as exc:
            self.failures += 1
            level = logging.WARNING if self.failures == 1 else logging.DEBUG
            self.log.log(level, "egress lookup failed (%s); keeping %s", exc,
                         self.address or "none")
            return min(self.interval, self.retry_first * 2 ** min(self.failures - 1, 20))
        except Exception as exc:  # a bug here must never take the agent down
            self.failures += 1
            self.log.error("egress lookup failed unexpectedly", exc_info=exc)
            return self.interval
        self.failures = 0
        if address != self.address:
            previous, self.address = self.address, address
            self.log.info("egress address as Bilibili sees it: %s%s", address,
                          f" (was {previous})" if previous else "")
            self.on_change(address)
        return self.interval
