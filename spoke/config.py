"""Agent settings: the single-agent ``agent.yml``, the multi-agent file, env and flags.

Two file shapes are accepted:

* the single-agent file (one agent per process)::

      server: {url: hub:12382, tls: true, cert_file: ca.pem}
      agent: {id: a1, name: Tokyo, token: PSK, max_concurrent_uploads: 2,
              buffer_size_mb: 64, heartbeat_interval: 30s}
      resources: {max_memory_mb: 2048}
      tags: {region: tokyo}

  ``agent.storage_type: local | hybrid`` with ``agent.local_roots: [/srv/rec, ..]``
  (``--local-root DIR``, repeatable): directories of the hub's files this agent
  can read at the same paths (same host or shared mount). It announces them to
  the hub and uploads a part found there from disk, after checking its size and
  MD5 against the offer, instead of having the hub stream it (spoke/local.py).
  ``network`` agents (the default) always stream; roots need local or hybrid.

  ``bilibili.api_url`` (``--bili-api-url``, env ``BUPMESH_BILI_API_URL``; the
  hub's setting of the same name) is where the agent asks Bilibili which
  address it sees (``x/web-interface/zone``): at start, every
  ``agent.egress_check_interval`` (default 300 s; 0 = never) and after a
  network or proxy error (spoke/egress.py).

* the multi-agent file (one process runs every agent listed)::

      agents:
        - {id: a1, name: A1, server_url: hub:12382, max_concurrent: 2, buffer_size_mb: 64,
           tags: {region: tokyo}, source_ip: 127.0.0.2}

Layers, highest first: flags > environment (:data:`ENV_KEYS`) > file >
defaults. In a multi-agent file, flags and environment override every entry,
except the per-agent identity (id, name, source/reported IP), which must come
from the file. Every bad value is a :class:`ConfigError` naming its key.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from bupmesh.config import (
    ConfigError,
    decode,
    load_config,
    parse_duration,
    parse_host_port,
    read_yaml,
)
from spoke.local import normalise_roots
from uploader.client import DEFAULT_API_URL

DEFAULT_PORT = 12382
EGRESS_MIN, EGRESS_MAX = 10.0, 86400.0  # egress_check_interval bounds (or 0: off)


class _S(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerSection(_S):
    url: str | None = None
    tls: bool = True
    cert_file: str | None = None  # private CA that signed the hub's certificate
    insecure: bool = False


class AgentSection(_S):
    id: str | None = None
    name: str | None = None
    token: str | None = None
    max_concurrent_uploads: int = 2
    buffer_size_mb: int = 64
    heartbeat_interval: str | float = "30s"  # the hub's Welcome overrides it
    drain_grace: str | float = "60s"
    held_grace: str | float = 0  # keep running tasks this long after the stream drops
    source_ip: str | None = None
    ip_address: str | None = None
    proxy: str | None = None
    compression: Literal["none", "gzip"] = "none"
    bandwidth_mbps: int = 0
    storage_type: Literal["network", "local", "hybrid"] = "network"
    local_roots: list[str] = []  # local/hybrid: hub directories readable here
    chunk_size_mb: int = 10  # assumed upos chunk size before preupload says otherwise
    egress_check_interval: str | float = "300s"  # 0: never ask Bilibili for the egress


class ResourcesSection(_S):
    max_memory_mb: int | None = None


class BilibiliSection(_S):
    api_url: str = DEFAULT_API_URL  # x/web-interface/zone: the egress Bilibili sees


class AgentFile(_S):
    """The single-agent ``agent.yml``."""

    server: ServerSection = msgspec.field(default_factory=ServerSection)
    agent: AgentSection = msgspec.field(default_factory=AgentSection)
    resources: ResourcesSection = msgspec.field(default_factory=ResourcesSection)
    bilibili: BilibiliSection = msgspec.field(default_factory=BilibiliSection)
    tags: dict[str, str] = {}


class AgentEntry(_S):
    """One item of the multi-agent file's ``agents`` list (flat keys, not sections)."""

    id: str | None = None
    name: str | None = None
    server_url: str | None = None
    token: str | None = None
    max_concurrent: int = 2
    buffer_size_mb: int = 64
    heartbeat_interval: str | float = "30s"
    drain_grace: str | float = "60s"
    held_grace: str | float = 0
    source_ip: str | None = None
    ip_address: str | None = None
    proxy: str | None = None
    tags: dict[str, str] = {}
    tls: bool = True
    cert_file: str | None = None
    insecure: bool = False
    compression: Literal["none", "gzip"] = "none"
    bandwidth_mbps: int = 0
    storage_type: Literal["network", "local", "hybrid"] = "network"
    local_roots: list[str] = []
    chunk_size_mb: int = 10
    max_memory_mb: int | None = None
    api_url: str = DEFAULT_API_URL
    egress_check_interval: str | float = "300s"


@dataclass(frozen=True)
class AgentSettings:
    """Everything one agent needs, validated; ``repr`` hides the PSK."""

    server_url: str  # host:port for grpc
    agent_id: str
    agent_name: str
    token: str = field(repr=False)
    max_concurrent: int = 2
    buffer_bytes: int = 64 << 20
    heartbeat_interval: float = 30.0
    drain_grace: float = 60.0
    # After the stream drops, running tasks are kept (their uploads go on with the bytes
    # already here) this long for the next Hello to offer back; 0: abandon them at once.
    held_grace: float = 0.0
    source_ip: str | None = None
    ip_address: str | None = None
    proxy: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    ca_file: str | None = None
    insecure: bool = False
    compression: str = "none"
    bandwidth_mbps: int = 0
    storage_type: str = "network"
    local_roots: tuple[str, ...] = ()  # absolute, normalised (spoke.local.normalise_roots)
    chunk_size: int = 10 << 20
    max_memory_mb: int | None = None
    # Announce Capabilities.crc32_integrity (check streams with CRC32, not MD5). Always
    # on in real agents; tests turn it off to play an agent from before the capability.
    crc32_integrity: bool = True
    # Where to ask Bilibili which address it sees (x/web-interface/zone), and how often
    # (seconds; 0: never, the hub then keys this agent by its link address).
    api_url: str = DEFAULT_API_URL
    egress_check_interval: float = 300.0

    @property
    def reported_ip(self) -> str:
        """What the hub is told: ``--ip-address``, else ``--source-ip``, else its peer address."""
        return self.ip_address or self.source_ip or ""


# Environment variables, mapped to the single-file keys they override.
ENV_KEYS = {
    "SERVER_URL": "server.url",
    "AGENT_ID": "agent.id",
    "AGENT_NAME": "agent.name",
    "AGENT_TOKEN": "agent.token",
    "MAX_CONCURRENT": "agent.max_concurrent_uploads",
    "MEMORY_LIMIT": "resources.max_memory_mb",
    "BUPMESH_BILI_API_URL": "bilibili.api_url",
}

# Single-file dotted key -> multi-agent entry key.
_FLAT = {
    "server.url": "server_url",
    "server.cert_file": "cert_file",
    "server.insecure": "insecure",
    "server.tls": "tls",
    "agent.id": "id",
    "agent.name": "name",
    "agent.token": "token",
    "agent.max_concurrent_uploads": "max_concurrent",
    "agent.buffer_size_mb": "buffer_size_mb",
    "agent.source_ip": "source_ip",
    "agent.ip_address": "ip_address",
    "agent.proxy": "proxy",
    "agent.compression": "compression",
    "agent.bandwidth_mbps": "bandwidth_mbps",
    "agent.storage_type": "storage_type",
    "agent.local_roots": "local_roots",
    "resources.max_memory_mb": "max_memory_mb",
    "bilibili.api_url": "api_url",
    "agent.egress_check_interval": "egress_check_interval",
    "tags": "tags",
}
_IDENTITY = {"agent.id", "agent.name", "agent.source_ip", "agent.ip_address"}


def parse_memory_mb(value: str, *, key: str) -> int:
    """``2G``, ``512M``, ``1.5g``, ``2048`` (MB) -> MB."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT])?[iI]?[bB]?\s*", str(value))
    if not match:
        raise ConfigError(f"{key}: expected a size such as 2G or 512M, got {value!r}")
    factor = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024, None: 1}[
        (match.group(2) or "").lower() or None
    ]
    mb = int(float(match.group(1)) * factor)
    if mb <= 0:
        raise ConfigError(f"{key}: must be positive, got {value!r}")
    return mb


def parse_tags(values: list[str] | None) -> dict[str, str] | None:
    """``--tag k=v`` repeated -> dict; a value without ``=`` names the flag."""
    if not values:
        return None
    tags: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--tag: expected KEY=VALUE, got {item!r}")
        tags[key.strip()] = value.strip()
    return tags


def load_agents(
    *,
    file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> list[AgentSettings]:
    """Settings of every agent this process runs (one, or the multi-agent file's list).

    ``flags`` uses the single-file dotted keys (``agent.buffer_size_mb``,
    ``server.url``, ``tags``...); ``None`` values are ignored.
    """
    env = dict(os.environ if env is None else env)
    if env.get("MEMORY_LIMIT"):
        env["MEMORY_LIMIT"] = str(parse_memory_mb(env["MEMORY_LIMIT"], key="MEMORY_LIMIT"))
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    data = read_yaml(file) if file else {}
    if "agents" in data:
        return _load_multi(data, env, flags)
    parsed = load_config(AgentFile, file=file, env=env, env_keys=ENV_KEYS, flags=flags)
    server, agent = parsed.server, parsed.agent
    return [
        _validate(
            prefix="",
            keys=_single_keys(),
            server_url=server.url,
            agent_id=agent.id,
            agent_name=agent.name,
            token=agent.token,
            max_concurrent=agent.max_concurrent_uploads,
            buffer_size_mb=agent.buffer_size_mb,
            heartbeat_interval=agent.heartbeat_interval,
            drain_grace=agent.drain_grace,
            held_grace=agent.held_grace,
            source_ip=agent.source_ip,
            ip_address=agent.ip_address,
            proxy=agent.proxy,
            tags=parsed.tags,
            tls=server.tls,
            cert_file=server.cert_file,
            insecure=server.insecure,
            compression=agent.compression,
            bandwidth_mbps=agent.bandwidth_mbps,
            storage_type=agent.storage_type,
            local_roots=agent.local_roots,
            chunk_size_mb=agent.chunk_size_mb,
            max_memory_mb=parsed.resources.max_memory_mb,
            api_url=parsed.bilibili.api_url,
            egress_check_interval=agent.egress_check_interval,
        )
    ]


def _single_keys() -> dict[str, str]:
    flat_to_dotted = {flat: dotted for dotted, flat in _FLAT.items()}
    flat_to_dotted.update(
        heartbeat_interval="agent.heartbeat_interval",
        drain_grace="agent.drain_grace",
        held_grace="agent.held_grace",
        chunk_size_mb="agent.chunk_size_mb",
    )
    return flat_to_dotted


def _load_multi(
    data: dict[str, Any], env: Mapping[str, str], flags: Mapping[str, Any]
) -> list[AgentSettings]:
    extra = sorted(set(data) - {"agents"})
    if extra:
        raise ConfigError(f"{extra[0]}: unknown setting (a multi-agent file holds only `agents`)")
    entries = data["agents"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError("agents: expected a non-empty list")
    overrides: dict[str, Any] = {}
    for var, dotted in ENV_KEYS.items():
        if env.get(var) not in (None, ""):
            overrides[dotted] = (env[var], var)
    for dotted, value in flags.items():
        overrides[dotted] = (value, f"--{dotted.split('.')[-1].replace('_', '-')}")
    for dotted, (_value, origin) in overrides.items():
        if dotted in _IDENTITY and len(entries) > 1:
            raise ConfigError(
                f"{origin}: cannot apply to every agent of a multi-agent file; set it per agent"
            )
    seen: set[str] = set()
    out = []
    for index, raw in enumerate(entries):
        prefix = f"agents.{index}."
        if not isinstance(raw, dict):
            raise ConfigError(f"agents.{index}: expected a mapping")
        merged = dict(raw)
        for dotted, (value, _origin) in overrides.items():
            if dotted not in _FLAT:
                raise ConfigError(f"{dotted}: not a per-agent setting")
            merged[_FLAT[dotted]] = value
        try:
            entry = decode(AgentEntry, merged)
        except ConfigError as exc:
            raise ConfigError(f"{prefix}{exc}") from None
        settings = _validate(
            prefix=prefix,
            keys={},
            **{f: getattr(entry, f) for f in entry.__struct_fields__ if f != "id" and f != "name"},
            agent_id=entry.id,
            agent_name=entry.name,
        )
        if settings.agent_id in seen:
            raise ConfigError(f"{prefix}id: duplicate agent id {settings.agent_id!r}")
        seen.add(settings.agent_id)
        out.append(settings)
    return out


def _validate(*, prefix: str, keys: Mapping[str, str], **v: Any) -> AgentSettings:
    """Checks msgspec cannot express; errors name the key as the user wrote it."""

    def name(flat: str) -> str:
        return prefix + keys.get(flat, flat)

    if not v["server_url"]:
        raise ConfigError(f"{name('server_url')}: required setting is missing (--server-url)")
    url = str(v["server_url"]).strip()
    for scheme in ("grpcs://", "grpc://", "https://", "http://"):
        if url.startswith(scheme):
            url = url[len(scheme) :]
    if ":" not in url.rsplit("]", 1)[-1]:
        url = f"{url}:{DEFAULT_PORT}"
    host, port = parse_host_port(url, key=name("server_url"))
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if not v["agent_id"]:
        raise ConfigError(f"{name('id')}: required setting is missing (--agent-id)")
    if not re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", v["agent_id"]):
        raise ConfigError(f"{name('id')}: use 1-64 letters, digits, '.', '_', ':' or '-'")
    if not v["token"]:
        raise ConfigError(f"{name('token')}: required setting is missing (--token or AGENT_TOKEN)")
    # Every number has a range: a value outside it stops the agent with one line.
    for key, low, high in (("max_concurrent", 1, 64), ("buffer_size_mb", 1, 65536),
                           ("chunk_size_mb", 1, 1024)):
        if v[key] < low:
            raise ConfigError(f"{name(key)}: must be at least {low}")
        if v[key] > high:
            raise ConfigError(f"{name(key)}: must be at most {high}")
    if v["buffer_size_mb"] < v["chunk_size_mb"]:
        raise ConfigError(
            f"{name('buffer_size_mb')}: {v['buffer_size_mb']} MB cannot hold one upload chunk "
            f"of {v['chunk_size_mb']} MB"
        )
    if not 0 <= v["bandwidth_mbps"] <= 1_000_000:
        raise ConfigError(f"{name('bandwidth_mbps')}: must be within 0..1000000")
    if v["max_memory_mb"] is not None and v["max_memory_mb"] < 1:
        raise ConfigError(f"{name('max_memory_mb')}: must be at least 1")
    if v["max_memory_mb"] is not None and v["buffer_size_mb"] >= v["max_memory_mb"]:
        raise ConfigError(
            f"{name('buffer_size_mb')}: {v['buffer_size_mb']} MB leaves nothing of "
            f"max_memory_mb {v['max_memory_mb']} MB for the process itself"
        )
    for key in ("source_ip", "ip_address"):
        if v[key]:
            try:
                ipaddress.ip_address(v[key])
            except ValueError:
                raise ConfigError(f"{name(key)}: not an IP address: {v[key]!r}") from None
    if v["proxy"] and v["source_ip"]:
        raise ConfigError(f"{name('proxy')}: cannot be combined with source_ip")
    if v["proxy"] and not re.match(r"^(https?|socks5h?)://", v["proxy"]):
        raise ConfigError(f"{name('proxy')}: expected http://, https:// or socks5:// URL")
    insecure = bool(v["insecure"]) or not v["tls"]
    if insecure and v["cert_file"]:
        raise ConfigError(f"{name('cert_file')}: a CA file and --insecure exclude each other")
    if v["cert_file"] and not os.path.isfile(v["cert_file"]):
        raise ConfigError(f"{name('cert_file')}: no such file: {v['cert_file']}")
    heartbeat = parse_duration(v["heartbeat_interval"], key=name("heartbeat_interval"))
    if heartbeat <= 0:
        raise ConfigError(f"{name('heartbeat_interval')}: must be positive")
    if heartbeat > 3600:
        raise ConfigError(f"{name('heartbeat_interval')}: must be at most 1h")
    grace = parse_duration(v["drain_grace"], key=name("drain_grace"))
    if grace > 86400:
        raise ConfigError(f"{name('drain_grace')}: must be at most 24h")
    held_grace = parse_duration(v["held_grace"], key=name("held_grace"))
    if held_grace > 3600:
        raise ConfigError(f"{name('held_grace')}: must be at most 1h")
    egress_every = parse_duration(v["egress_check_interval"], key=name("egress_check_interval"))
    if egress_every != 0 and not EGRESS_MIN <= egress_every <= EGRESS_MAX:
        raise ConfigError(
            f"{name('egress_check_interval')}: must be 0 (never) or within "
            f"{EGRESS_MIN:g}..{EGRESS_MAX:g} seconds"
        )
    api_url = str(v["api_url"]).strip().rstrip("/")
    if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", api_url):
        raise ConfigError(f"{name('api_url')}: expected an http(s) URL")
    roots = v["local_roots"] or []
    if roots and v["storage_type"] not in ("local", "hybrid"):
        raise ConfigError(
            f"{name('local_roots')}: needs storage_type local or hybrid "
            f"(a {v['storage_type']} agent always streams)"
        )
    for root in roots:
        if not str(root).strip():
            raise ConfigError(f"{name('local_roots')}: empty directory name")
    return AgentSettings(
        server_url=target,
        agent_id=v["agent_id"],
        agent_name=v["agent_name"] or v["agent_id"],
        token=v["token"],
        max_concurrent=v["max_concurrent"],
        buffer_bytes=v["buffer_size_mb"] << 20,
        heartbeat_interval=heartbeat,
        drain_grace=grace,
        held_grace=held_grace,
        source_ip=v["source_ip"] or None,
        ip_address=v["ip_address"] or None,
        proxy=v["proxy"] or None,
        tags=dict(v["tags"] or {}),
        ca_file=v["cert_file"] or None,
        insecure=insecure,
        compression=v["compression"],
        bandwidth_mbps=v["bandwidth_mbps"],
        storage_type=v["storage_type"],
        local_roots=normalise_roots(roots),
        chunk_size=v["chunk_size_mb"] << 20,
        max_memory_mb=v["max_memory_mb"],
        api_url=api_url,
        egress_check_interval=egress_every,
    )
