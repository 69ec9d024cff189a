"""Who may speak for an agent: registration, the JWTs it earns, and their refresh.

An agent registers with one of two credentials and gets a JWT; every stream (and
every HTTP agent call) presents it:

- the shared pre-shared key (unless ``agents.allow_psk`` is off), which lets any
  agent id in (subject to approval, :mod:`hub.agents.admission`);
- a per-agent token (:mod:`hub.agents.agent_tokens`), good only for its own id.

A JWT names the credential it was issued for, and stands while it verifies, its
agent is neither disabled nor rejected, it was issued after the agent's last
revocation and its credential is still accepted (the token not revoked or
expired, the PSK not switched off). A connected agent gets a fresh JWT over its
stream before the old one expires, never outliving its token.

One process per agent id: while a live stream holds an id, a registration from
another agent process (instance id) is refused, naming the address that holds
it; the refusal is remembered for the agents view and the alert.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hub.agents.admission import Admission
from hub.agents.agent_tokens import AgentTokens, looks_like_agent_token
from hub.agents.reconnect_window import AdmissionMeter
from hub.core.errors import AuthError, BadRequest, DuplicateAgent, Forbidden
from hub.core.events import EventBus
from hub.core.registry import REJECTED, AgentInfo, Registry, describe_address
from hub.store.tasks import Store
from protocol import mesh_pb2 as pb
from protocol.tokens import TokenError, TokenIssuer

if TYPE_CHECKING:
    from hub.agents.link import AgentSession

log = logging.getLogger("bupmesh.hub")

_AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
PSK = "psk"
TOKEN_PREFIX = "token:"


@dataclass(frozen=True)
class StreamGrant:
    """What a valid JWT lets a stream be: which agent, until when, on which credential."""

    agent_id: str
    expires_at: int
    credential: str  # "psk" or "token:<token id>"

    @property
    def token_id(self) -> str | None:
        return self.credential[len(TOKEN_PREFIX):] \
            if self.credential.startswith(TOKEN_PREFIX) else None


class AgentAuth:
    def __init__(self, *, psk: str, tokens: TokenIssuer, agent_tokens: AgentTokens,
                 admission: Admission, registry: Registry, store: Store, events: EventBus,
                 clock: Callable[[], float], allow_psk: bool = True,
                 admission_meter: AdmissionMeter | None = None) -> None:
        self._psk = psk.encode("utf-8")
        self.allow_psk = allow_psk
        self.tokens = tokens
        self.agent_tokens = agent_tokens
        self.admission = admission
        self.registry = registry
        self.store = store
        self.events = events
        self.clock = clock
        self.admission_meter = admission_meter  # registrations count as admission work
        # agent id -> hash of what its row holds (name, IPs, capacity, tags): a reconnect
        # that changes none of it needs no write of its own (see persist)
        self._written: dict[str, int] = {}

    async def register_agent(
        self,
        credential: str,
        agent_id: str,
        agent_name: str,
        ip_address: str,
        capabilities: dict[str, Any],
        tags: dict[str, str],
        *,
        instance_id: str = "",
        peer: str = "",
    ) -> tuple[str, int]:
        """Check the credential and the claim on the id, record the agent, and issue its
        JWT: ``(token, expiry)``."""
        # The credential first: a caller without one learns nothing else.
        cred, not_after = self._credential(credential or "", agent_id)
        self.check_agent_id(agent_id)
        info = self.registry.get(agent_id)
        if info is not None:
            self._refuse_barred(info)
        self.check_claim(agent_id, instance_id, describe_address(peer, ip_address))
        new = info is None
        info = self.registry.ensure(agent_id)
        apply_capabilities(info, agent_name, ip_address, capabilities, tags)
        if new:
            await self.admission.first_seen(info, by_psk=cred == PSK)
        token_id = cred[len(TOKEN_PREFIX):] if cred.startswith(TOKEN_PREFIX) else None
        if token_id is not None:
            await self.admission.admitted_by_token(info)
            await self.agent_tokens.used(self.agent_tokens.get(token_id))
        await self.persist(info)
        token, exp = self.tokens.issue(agent_id, cred=cred, not_after=not_after)
        if self.admission_meter is not None:
            self.admission_meter.admitted()
        log.info("agent %s registered from %s (%s)", agent_id, ip_address or "?",
                 "per-agent token" if token_id else "PSK")
        return token, exp

    @staticmethod
    def check_agent_id(agent_id: Any) -> None:
        if not isinstance(agent_id, str) or not _AGENT_ID.fullmatch(agent_id):
            raise BadRequest("agent_id: 1-128 letters, digits or ._:@- expected")

    def check_claim(self, agent_id: str, instance_id: str, address: str) -> None:
        """Refuse (DuplicateAgent) a claim on an id a live stream of another process holds."""
        holder = self.registry.holder(agent_id, instance_id)
        if holder is None:
            return
        claim, new = self.registry.refuse_claim(holder, address)
        (log.warning if new else log.info)(
            "agent id %s is held by a live stream from %s; refused a second process from %s "
            "(%d attempt%s so far)", agent_id, claim.live_address, address or "?",
            claim.attempts, "" if claim.attempts == 1 else "s")
        self.events.touch_agent(agent_id)
        raise DuplicateAgent(agent_id, claim.live_address)

    def verify_agent_token(self, token: str) -> str:
        return self.authenticate_stream(token).agent_id

    def authenticate_stream(self, token: str) -> StreamGrant:
        """The grant of a valid JWT whose credential and agent the hub still accepts."""
        try:
            claims = self.tokens.verify(token)
        except TokenError as exc:
            raise AuthError(str(exc)) from None
        grant = StreamGrant(claims.sub, claims.exp, claims.cred)
        if grant.credential == PSK:
            if not self.allow_psk:
                raise AuthError("the shared PSK is not accepted (agents.allow_psk: false); "
                                "register with a per-agent token")
        elif grant.token_id is not None:
            self.agent_tokens.live(grant.token_id, grant.agent_id)
        else:
            raise AuthError("token claims malformed")
        info = self.registry.get(claims.sub)
        if info is not None:
            self._refuse_barred(info)
            if claims.iat < info.tokens_valid_after:
                raise AuthError("token revoked")
        return grant

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
        """Whether the token the stream was opened (or last refreshed) with is due, and a
        fresh one would last longer (a per-agent token's expiry caps them all)."""
        limit = self._not_after(session.credential)
        if limit is not None and session.token_exp >= int(limit):
            return False
        margin = max(5.0, self.tokens.ttl_seconds * 0.25)
        return session.token_exp - self.clock() < margin

    def refresh(self, session: AgentSession) -> pb.TokenRefresh:
        """A new token for the stream's agent, to send over the stream."""
        token, exp = self.tokens.issue(session.agent_id, cred=session.credential,
                                       not_after=self._not_after(session.credential))
        session.token_exp = exp
        return pb.TokenRefresh(token=token, expires_at=exp)

    async def revoke_token(self, token_id: str) -> dict[str, Any]:
        """Revoke a per-agent token: its JWTs are refused and its live stream closes now."""
        row = await self.agent_tokens.revoke(token_id)
        self.close_streams_of(f"{TOKEN_PREFIX}{token_id}", "agent token revoked")
        log.info("agent token %s of %s revoked", token_id, row.agent_id)
        return row.public(self.clock())

    def close_ended_credentials(self) -> None:
        """Close streams whose per-agent token expired (or was revoked) meanwhile."""
        if not self.agent_tokens:
            return  # no stream can hold one: no walk of the fleet every tick
        for info in self.registry.agents.values():
            session = info.session
            if session is None or session.closed:
                continue
            cred = session.credential
            if cred.startswith(TOKEN_PREFIX) and \
                    self.agent_tokens.ended(cred[len(TOKEN_PREFIX):]):
                session.close("agent token expired")

    def close_streams_of(self, credential: str, reason: str) -> None:
        for info in self.registry.agents.values():
            if info.session is not None and info.session.credential == credential:
                info.session.close(reason)

    # -- internals ------------------------------------------------------------------------

    def _credential(self, credential: str, agent_id: str) -> tuple[str, float | None]:
        """``(cred claim, expiry of the credential)`` of what the agent registered with."""
        if self._psk and hmac.compare_digest(credential.encode("utf-8"), self._psk):
            if not self.allow_psk:
                raise AuthError("the shared PSK is not accepted (agents.allow_psk: false); "
                                f"create a token for this agent: bupmesh hub agent-token "
                                f"create {agent_id}")
            return PSK, None
        if looks_like_agent_token(credential):
            row = self.agent_tokens.check(credential, agent_id)
            return f"{TOKEN_PREFIX}{row.token_id}", row.expires_at
        raise AuthError("invalid pre-shared key or agent token")

    def _not_after(self, credential: str) -> float | None:
        if not credential.startswith(TOKEN_PREFIX):
            return None
        try:
            return self.agent_tokens.get(credential[len(TOKEN_PREFIX):]).expires_at
        except Exception:  # unknown: the stream closes on its own (close_ended_credentials)
            return None

    @staticmethod
    def _refuse_barred(info: AgentInfo) -> None:
        if info.disabled:
            raise AuthError("agent is disabled")
        if info.approval == REJECTED:
            raise Forbidden(f"agent id {info.agent_id} was rejected by the hub's admin; "
                            "an admin must clear it before it can connect")


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
