"""One HTTP client per Bilibili identity (account x egress), with the secrecy rules built in.

Cookies are attached per request and only to member hosts: upos hosts (which
in the simulator share the member's host:port) never see them, and the
client's cookie jar refuses every ``Set-Cookie`` so nothing leaks by
accident. Every reply goes through :func:`uploader.errors.classify`, so
callers get either decoded JSON or a classified :class:`UploadError`.
"""

from __future__ import annotations

import functools
import http.cookiejar
import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from uploader.credentials import Credentials, CredentialsError
from uploader.errors import ErrorKind, UploadError, classify, from_transport_error

# httpx logs every request line at INFO, and app/add carries access_key in
# its query string. Whoever enables INFO logging in hub or agent must not get
# secrets for free, so httpx's own chatter is limited to warnings.
logging.getLogger("httpx").setLevel(logging.WARNING)

DEFAULT_MEMBER_URL = "https://member.bilibili.com"
DEFAULT_API_URL = "https://api.bilibili.com"  # the web interface: nav, zone
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 bupmesh/0.1"
)


@dataclass(frozen=True)
class Reply:
    """One answered request: HTTP status, decoded JSON (None if not JSON), headers."""

    status: int
    payload: Any
    headers: Mapping[str, str]


class _NoCookieJar(http.cookiejar.CookieJar):
    """A jar that stores nothing: replies cannot plant cookies we would echo elsewhere."""

    def extract_cookies(self, response: object, request: object) -> None:
        return None

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The certificate-verifying TLS context every client shares.

    Building one loads the CA bundle (tens of milliseconds); a client is made per
    task, and a context is safe to share between connections.
    """
    return httpx.create_ssl_context()


class BiliClient:
    """Async context manager around ``httpx.AsyncClient`` for one account and egress."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        member_url: str = DEFAULT_MEMBER_URL,
        api_url: str = DEFAULT_API_URL,
        source_ip: str | None = None,
        proxy: str | None = None,
        timeout: float = 60,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        member = urlsplit(member_url.strip())
        if member.scheme not in ("http", "https") or not member.netloc:
            raise ValueError(f"member URL must be http(s)://host[:port], got {member_url!r}")
        api = urlsplit(api_url.strip())
        if api.scheme not in ("http", "https") or not api.netloc:
            raise ValueError(f"API URL must be http(s)://host[:port], got {api_url!r}")
        if source_ip and proxy:
            # httpx cannot bind the local address of a SOCKS connection, and a
            # proxy decides the egress IP anyway; refusing beats half-working.
            raise ValueError("source_ip and proxy cannot be combined")
        self.credentials = credentials
        self.member_url = f"{member.scheme}://{member.netloc}{member.path.rstrip('/')}"
        self.scheme = member.scheme
        self._member_host = member.netloc.lower()
        self.api_url = f"{api.scheme}://{api.netloc}{api.path.rstrip('/')}"
        self.source_ip = source_ip
        if transport is None:
            transport = httpx.AsyncHTTPTransport(
                verify=_tls_context(),
                local_address=source_ip or None,
                proxy=proxy or None,
                # One connection per concurrent PUT plus member calls.
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            )
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": USER_AGENT},
            cookies=_NoCookieJar(),
            follow_redirects=False,
            trust_env=False,
        )

    async def __aenter__(self) -> BiliClient:
        await self._http.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._http.__aexit__(*exc)

    async def aclose(self) -> None:
        await self._http.aclose()

    def member(self, path: str) -> str:
        return f"{self.member_url}/{path.lstrip('/')}"

    def api(self, path: str) -> str:
        """A web-interface URL (``x/web-interface/zone``); never sent cookies by this client."""
        return f"{self.api_url}/{path.lstrip('/')}"

    def csrf(self) -> str:
        """The ``bili_jct`` every cookie-authenticated write carries, or an ``auth`` error."""
        try:
            return self.credentials.csrf
        except CredentialsError as exc:
            raise UploadError(ErrorKind.AUTH, str(exc)) from None

    def is_member_host(self, url: str | httpx.URL) -> bool:
        """Hosts that may see the cookies: the configured member host and real bilibili.com."""
        parsed = httpx.URL(str(url))
        netloc = parsed.netloc.decode("ascii").lower()
        host = (parsed.host or "").lower()
        return (
            netloc == self._member_host or host == "bilibili.com" or host.endswith(".bilibili.com")
        )

    def absolute(self, scheme_relative: str) -> str:
        """``//host/path`` -> ``{member scheme}://host/path``.

        Preupload hands out scheme-relative endpoints; following the member
        URL's scheme keeps a plain-http simulator on http and Bilibili on https.
        """
        if scheme_relative.startswith("//"):
            return f"{self.scheme}:{scheme_relative}"
        if "://" not in scheme_relative:  # a bare host, as some mirrors answer
            return f"{self.scheme}://{scheme_relative}"
        return scheme_relative

    async def send(self, op: str, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        """Send one request; return ``(status, decoded JSON or None)``, unclassified.

        Transport failures (timeouts, resets, refused connections) become a
        NETWORK ``UploadError`` here, because there is no reply to classify.
        Keyword arguments as for :meth:`exchange`.
        """
        reply = await self.exchange(op, method, url, **kwargs)
        return reply.status, reply.payload

    async def exchange(
        self,
        op: str,
        method: str,
        url: str,
        *,
        with_cookies: bool = False,
        params: Any = None,
        json: Any = None,
        data: dict[str, str] | None = None,
        content: bytes | AsyncIterator[bytes] | AsyncIterator[memoryview] | None = None,
        headers: dict[str, str] | None = None,
        request_timeout: float | None = None,
    ) -> Reply:
        """Send one request; return its :class:`Reply` (status, decoded JSON, headers)."""
        request_headers = dict(headers or {})
        if with_cookies:
            if not self.is_member_host(url):
                raise UploadError(
                    ErrorKind.BAD_REQUEST, f"refusing to send cookies on {op} to a non-member host"
                )
            cookie = self.credentials.cookie_header()
            if cookie:
                request_headers["Cookie"] = cookie
            request_headers.setdefault("Referer", "https://www.bilibili.com/")
        kwargs: dict[str, Any] = {}
        if request_timeout is not None:
            kwargs["timeout"] = httpx.Timeout(request_timeout)
        try:
            response = await self._http.request(
                method,
                url,
                params=params,
                json=json,
                data=data,
                content=content,
                headers=request_headers,
                **kwargs,
            )
        except httpx.TransportError as exc:
            raise from_transport_error(op, exc) from None
        except httpx.InvalidURL:
            raise UploadError(ErrorKind.BAD_REQUEST, f"invalid URL on {op}") from None
        payload: Any = None
        if response.content:
            try:
                payload = response.json()
            except ValueError:
                payload = None
        return Reply(response.status_code, payload, response.headers)

    async def call(self, op: str, method: str, url: str, **kwargs: Any) -> Any:
        """:meth:`exchange`, then classify; returns decoded JSON of a success."""
        reply = await self.exchange(op, method, url, **kwargs)
        error = classify(op, reply.status, reply.payload, reply.headers)
        if error is not None:
            raise error
        return reply.payload

    def __repr__(self) -> str:
        return f"BiliClient(member_url={self.member_url!r}, source_ip={self.source_ip!r})"
