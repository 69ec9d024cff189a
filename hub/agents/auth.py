"""Who may speak for an agent: registration with the PSK, tokens, and their refresh.

An agent registers with the pre-shared key and gets a JWT; every stream (and
every HTTP agent call) presents it. A token is good while it verifies, its
agent is not disabled and it was issued after the agent's last revocation. A
connected agent gets a fresh token over its stream before the old one expires.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hub.agents.reconnect_window import AdmissionMeter
from hub.core.errors import AuthError, BadRequest
from hub.core.events import EventBus
from hub.core.registry import AgentInfo, Registry
from hub.store.tasks import Store
from protocol import mesh_pb2 as pb
from protocol.tokens import TokenError, TokenIssuer

if TYPE_CHECKING:
    from hub.agents.link import AgentSession

log = logging.getLogger("bupmesh.hub")

_AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")


class AgentAuth:
    def __init__(self, *, psk: str, tokens: TokenIssuer, registry: Registry, store: Store,
                 events: EventBus, clock: Callable[[], float],
                 admission: AdmissionMeter | None = None) -> None:
        self._psk = psk.encode("utf-8")
        self.tokens = tokens
        self.registry = registry
        self.store = store
        self.events = events
        self.clock = clock
        self.admission = admission  # registrations count as admission work
        # agent id -> hash of what its row holds (name, IPs, capacity, tags): a reconnect
        # that changes none of it needs no write of its own (see persist)
        self._written: dict[str, int] = {}

    async def register_agent(
        self,
        psk: str,
        agent_id: str,
        agent_name: str,
        ip_address: str,
        capabilities: dict[str, Any],
        tags: dict[str, str],
    ) -> tuple[str, int]:
        """Check the PSK, record the agent, and issue its token: ``(token, expiry)``."""
        if not hmac.compare_digest((psk or "").encode("utf-8"), self._psk):
            raise AuthError("invalid pre-shared key")
        if not isinstance(agent_id, str) or not _AGENT_ID.fullmatch(agent_id):
            raise BadRequest("agent_id: 1-128 letters, digits or ._:@- expected")
        info = self.registry.ensure(agent_id)
        if info.disabled:
            raise AuthError("agent is disabled")
        apply_capabilities(info, agent_name, ip_address, capabilities, tags)
        await self.persist(info)
        token, exp = self.tokens.issue(agent_id)
        if self.admission is not None:
            self.admission.admitted()
        log.info("agent %s registered from %s", agent_id, ip_address or "?")
        return token, exp

    def verify_agent_token(self, token: str) -> str:
        return self.authenticate_stream(token)[0]

    def authenticate_stream(self, token: str) -> tuple[str, int]:
        """``(agent_id, token expiry)`` of a valid, unrevoked token of an enabled agent."""
        try:
            claims = self.tokens.verify(token)
        except TokenError as exc:
            raise AuthError(str(exc)) from None
        info = self.registry.get(claims.sub)
        if info is not None:
            if info.disabled:
                raise AuthError("agent is disabled")
            if claims.iat < info.tokens_valid_after:
                raise AuthError("token revoked")
        return claims.sub, claims.exp

    def remember_rows(self) -> None:
        """The registry was just loaded from the store: its rows hold what it holds."""
        for info in self.registry.agents.values():
            self._written[info.agent_id] = _row_key(info)

    async def persist(self, info: AgentInfo) -> None:
        """Write an agent's registry entry to the store (before acting on it).

        An agent dialling back with nothing changed (the fleet after a hub restart,
        one at a time) only comes online: that goes with the next batch of heartbeats
        instead of a transaction of its own, which under the hub's lock made a
        returning fleet wait on the database one agent at a time.
        """
        key = _row_key(info)
        if self._written.get(info.agent_id) == key:
            self.store.note_heartbeat(info.agent_id, info.status, last_heartbeat=self.clock(),
                                      tasks_completed=None)
            self.events.touch_agent(info.agent_id)
            return
        await self.store.upsert_agent(
            info.agent_id,
            agent_name=info.agent_name,
            ip_address=info.ip_address,
            egress_ip=info.egress_ip,
            status=info.status,
            max_concurrent=info.max_concurrent,
            bandwidth_mbps=info.bandwidth_mbps,
            storage_type=info.storage_type,
            buffer_bytes=info.buffer_bytes,
            tags=info.tags,
        )
        self._written[info.agent_id] = key
        self.events.touch_agent(info.agent_id)

    def needs_refresh(self, session: AgentSession) -> bool:
        """Whether the token the stream was opened (or last refreshed) with is due."""
        margin = max(5.0, self.tokens.ttl_seconds * 0.25)
        return session.token_exp - self.clock() < margin

    def refresh(self, session: AgentSession) -> pb.TokenRefresh:
        """A new token for the stream's agent, to send over the stream."""
        token, exp = self.tokens.issue(session.agent_id)
        session.token_exp = exp
        return pb.TokenRefresh(token=token, expires_at=exp)


def apply_capabilities(info: AgentInfo, name: str, ip: str, caps: dict[str, Any],
                       tags: dict[str, str]) -> None:
    """What an agent says of itself, clamped to sane bounds."""
    info.agent_name = (name or info.agent_name or info.agent_id)[:128]
    info.ip_address = ip or info.ip_address
    mc = int(caps.get("max_concurrent_uploads") or 0)
    info.max_concurrent = max(1, min(mc, 64)) if mc > 0 else (info.max_concurrent or 2)
    info.bandwidth_mbps = max(0, int(caps.get("bandwidth_mbps") or 0))
    info.storage_type = str(caps.get("storage_type") or "network")[:16]
    info.buffer_bytes = max(0, int(caps.get("buffer_bytes") or 0))
    info.tags = {str(k)[:64]: str(v)[:256] for k, v in (tags or {}).items()}


def _row_key(info: AgentInfo) -> int:
    return hash((info.agent_name, info.ip_address, info.egress_ip, info.max_concurrent,
                 info.bandwidth_mbps, info.storage_type, info.buffer_bytes,
                 tuple(sorted(info.tags.items()))))
