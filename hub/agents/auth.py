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
                 events: EventBus, clock: Callable[[], float]) -> None:
        self._psk = psk.encode("utf-8")
        self.tokens = tokens
        self.registry = registry
        self.store = store
        self.events = events
        self.clock = clock

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

    async def persist(self, info: AgentInfo) -> None:
        """Write an agent's registry entry to the store (before acting on it)."""
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
