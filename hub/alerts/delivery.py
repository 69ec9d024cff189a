"""Alert delivery: a log line at once, and a JSON POST to the configured webhook.

``AlertDelivery.deliver`` never blocks and never raises: it logs the alert on
``bupmesh.alerts`` and puts it on a bounded queue; one worker posts queued
alerts in order, each with a timeout and a bounded number of retries with
backoff. A webhook that is down, slow or refusing costs the hub one queue slot
per alert and a warning; when the queue is full the newest alert is dropped
(and logged), so a dead receiver can never grow memory or stall the hub.

The webhook URL may carry a token (Slack, DingTalk, Feishu, ... put it in the
path or query). It is held as a ``Secret`` and registered with the log
scrubber; log lines name the receiver only as "the webhook".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import anyio
import anyio.abc
import httpx

from bupmesh.logs import Secret, register_secret_url
from hub.alerts.rules import FIRING, Alert

log = logging.getLogger("bupmesh.alerts")

QUEUE_SIZE = 256
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0


class AlertDelivery:
    def __init__(
        self,
        webhook_url: str | Secret | None,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff_initial: float = BACKOFF_INITIAL,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        if isinstance(webhook_url, str):
            webhook_url = Secret(webhook_url) if webhook_url else None
        self.webhook_url = webhook_url
        register_secret_url(webhook_url)
        self.timeout = timeout
        self.retries = retries
        self.backoff_initial = backoff_initial
        self._transport = transport
        self._sleep = sleep or anyio.sleep
        self._send, self._receive = anyio.create_memory_object_stream[Alert](QUEUE_SIZE)
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def deliver(self, alert: Alert) -> None:
        """Log ``alert`` and queue it for the webhook; returns at once."""
        if alert.state == FIRING:
            log.warning("ALERT %s: %s", alert.key, alert.summary,
                        extra={"alert": alert.kind, "alert_state": alert.state})
        else:
            log.info("RESOLVED %s: %s", alert.key, alert.summary,
                     extra={"alert": alert.kind, "alert_state": alert.state})
        if self.webhook_url is None:
            return
        try:
            self._send.send_nowait(alert)
        except anyio.WouldBlock:
            self.dropped += 1
            log.warning("alert webhook backlog full (%d queued): dropped %s %s",
                        QUEUE_SIZE, alert.state, alert.key)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Post queued alerts until cancelled."""
        if self.webhook_url is None:
            task_status.started()
            await anyio.sleep_forever()
        async with httpx.AsyncClient(timeout=self.timeout, transport=self._transport,
                                     follow_redirects=False, trust_env=False) as client:
            task_status.started()
            async for alert in self._receive:
                await self._post(client, alert)

    async def _post(self, client: httpx.AsyncClient, alert: Alert) -> None:
        assert self.webhook_url is not None
        url = self.webhook_url.reveal()
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                delay = min(BACKOFF_MAX, self.backoff_initial * math.pow(2, attempt - 1))
                await self._sleep(delay)
            try:
                with anyio.fail_after(self.timeout * 2):  # connect + read, whatever httpx does
                    response = await client.post(url, json=alert.to_json())
            except (httpx.HTTPError, TimeoutError) as exc:
                # The exception text can contain the URL: name the kind only.
                problem = type(exc).__name__
                continue
            if response.is_success:
                self.delivered += 1
                return
            problem = f"HTTP {response.status_code}"
            if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                break  # the receiver refuses this payload; retrying will not change that
        self.failed += 1
        log.warning("alert webhook failed for %s %s after %d attempt(s): %s",
                    alert.state, alert.key, attempt + 1, problem)
