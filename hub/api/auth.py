"""Who is calling: the hub's HTTP credentials, checked in one place.

Five credentials, never interchangeable:

- the admin token grants the ``admin`` role: every ``/api/manage/*`` route and
  ``/metrics`` (agent ids and IPs are not for everyone);
- the viewer token (``viewer_token``, optional) grants the ``viewer`` role: what
  the admin may read (the API's GETs, the web UI's data, ``/metrics``, the event
  stream) and nothing that changes anything: a mutating route answers it 403;
- an agent JWT names one agent (``verify_agent``, the hub's token issuer) and
  opens only the agent routes, acting only as that agent;
- the webhook secret, when set, lets a recorder post its webhooks;
- the PSK (or a per-agent token) opens only ``POST /api/agent/register`` and is
  checked where JWTs are issued, so it never appears here.

Each credential is held with the role it grants and a route asks for a role, not
for a particular token: a read-only token is one more (secret, role) pair, not a
new check in every route. Secrets are compared in constant time, and a refusal
is logged with who and where, never with what was sent.
"""

from __future__ import annotations

import enum
import hmac
import logging
from collections.abc import Callable

from starlette.requests import HTTPConnection

from hub.api.envelope import ApiError

log = logging.getLogger("bupmesh.hub.http")

VerifyAgent = Callable[[str], str]


class Role(enum.Enum):
    """What a credential may do."""

    ADMIN = "admin"  # every admin route, reads and actions
    VIEWER = "viewer"  # the admin routes' reads only

    def may(self, wanted: Role) -> bool:
        """Whether this role covers ``wanted`` (the admin may do what a viewer may)."""
        return self is wanted or self is Role.ADMIN


class Auth:
    """The credentials of one hub, and the checks routes make against them."""

    def __init__(
        self,
        *,
        admin_token: str,
        viewer_token: str = "",
        verify_agent: VerifyAgent | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        # An empty token means its role is closed, never open.
        self._tokens: list[tuple[bytes, Role]] = [
            (token.encode(), role)
            for token, role in ((admin_token, Role.ADMIN), (viewer_token, Role.VIEWER)) if token
        ]
        self._verify_agent = verify_agent
        self._hook_secret = (webhook_secret or "").encode()

    def role_of(self, token: str) -> Role | None:
        """The role ``token`` grants, or None. Every secret is compared, whichever matches."""
        given = token.encode()
        granted = None
        for secret, role in self._tokens:
            if hmac.compare_digest(given, secret):
                granted = role
        return granted

    def require(self, request: HTTPConnection, role: Role = Role.ADMIN) -> Role:
        """The caller's role if it covers ``role``: 401 without a valid token, 403 for a
        token whose role does not reach (the viewer asking for a change)."""
        granted = self.role_of(bearer(request))
        if granted is None:
            refused(request, role.value)
            wanted = "admin" if role is Role.ADMIN else "admin or viewer"
            raise ApiError(401, f"invalid {wanted} token")
        if not granted.may(role):
            refused(request, role.value)
            raise ApiError(403, f"the {granted.value} token is read-only: this needs the "
                                f"{role.value} token")
        return granted

    def require_admin(self, request: HTTPConnection) -> None:
        """Changes (and the few reads that hand out a way in): the admin alone."""
        self.require(request, Role.ADMIN)

    def require_read(self, request: HTTPConnection) -> Role:
        """Reads: the admin or the viewer."""
        return self.require(request, Role.VIEWER)

    def require_agent(self, request: HTTPConnection) -> str:
        """The id of the agent whose JWT the caller sent; the verifier's AuthError otherwise."""
        token = bearer(request)
        if self._verify_agent is None:
            raise ApiError(401, "agent tokens are not accepted here")
        try:
            return self._verify_agent(token)
        except Exception:
            refused(request, "agent")
            raise

    def require_webhook(self, request: HTTPConnection) -> None:
        """A recorder's webhook call: the secret as ``?secret=`` (what a recorder's webhook
        URL can carry), ``X-Webhook-Secret`` or a bearer token. No secret set: open."""
        if not self._hook_secret:
            return
        given = (request.query_params.get("secret")
                 or request.headers.get("x-webhook-secret") or "")
        if not given:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else ""
        if not hmac.compare_digest(given.encode(), self._hook_secret):
            log.warning("webhook %s refused: wrong or missing secret (from %s)",
                        request.url.path, client_host(request))
            raise ApiError(401, "webhook secret missing or wrong")

    def actor(self, request: HTTPConnection) -> str:
        """Who the request claims to be, for the audit log: a role name, ``agent:<id>``,
        ``invalid-token`` or ``anonymous``. Never the token itself."""
        try:
            token = bearer(request)
        except ApiError:
            return "anonymous"
        role = self.role_of(token)
        if role is not None:
            return role.value
        if self._verify_agent is not None:
            try:
                return f"agent:{self._verify_agent(token)}"
            except Exception:
                pass
        return "invalid-token"


def bearer(request: HTTPConnection) -> str:
    """The token of ``Authorization: Bearer <token>``, or a 401."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing Authorization: Bearer header")
    return token


def client_host(request: HTTPConnection) -> str:
    return request.client.host if request.client else "?"


def refused(request: HTTPConnection, kind: str) -> None:
    """Log a refused credential: who and where, never what they sent."""
    log.warning("refused %s credentials on %s from %s", kind, request.url.path,
                client_host(request))
