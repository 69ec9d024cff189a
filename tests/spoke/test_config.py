"""Agent settings: single-agent agent.yml, multi-agent file, env, flags, precedence, bad values."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bupmesh.config import ConfigError
from spoke.config import load_agents, parse_memory_mb, parse_tags
from tests.conftest import bupmesh_command

SEED = """
server:
  url: hub.example.com:12382
  tls: true
agent:
  id: agent-001
  name: Tokyo-Agent-1
  token: file-psk
  max_concurrent_uploads: 3
  buffer_size_mb: 200
  heartbeat_interval: 45s
resources:
  max_memory_mb: 2048
tags:
  region: tokyo
  isp: aws
"""

MULTI = """
agents:
  - id: agent-tokyo-1
    name: "Tokyo Agent 1"
    server_url: hub:12382
    token: psk
    max_concurrent: 2
    buffer_size_mb: 200
    source_ip: 127.0.0.2
    insecure: true
    tags: {region: tokyo, priority: high}
  - id: agent-osaka-1
    name: "Osaka Agent 1"
    server_url: hub:12382
    token: psk
    max_concurrent: 1
    buffer_size_mb: 150
    source_ip: 127.0.0.3
    insecure: true
"""


def write(tmp_path: Path, text: str, name: str = "agent.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_single_agent_yml(tmp_path: Path) -> None:
    (s,) = load_agents(file=write(tmp_path, SEED), env={})
    assert s.server_url == "hub.example.com:12382" and not s.insecure
    assert (s.agent_id, s.agent_name, s.token) == ("agent-001", "Tokyo-Agent-1", "file-psk")
    assert s.max_concurrent == 3 and s.buffer_bytes == 200 << 20
    assert s.heartbeat_interval == 45 and s.max_memory_mb == 2048
    assert s.tags == {"region": "tokyo", "isp": "aws"}
    assert "file-psk" not in repr(s)


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, SEED)
    env = {"AGENT_ID": "env-id", "AGENT_TOKEN": "env-psk", "MAX_CONCURRENT": "4",
           "MEMORY_LIMIT": "4G", "SERVER_URL": "envhub:1"}
    (s,) = load_agents(file=path, env=env)
    assert (s.agent_id, s.token, s.max_concurrent, s.max_memory_mb) == ("env-id", "env-psk", 4, 4096)
    assert s.server_url == "envhub:1"
    flags = {"agent.id": "flag-id", "agent.max_concurrent_uploads": 5, "server.url": "flaghub:2",
             "agent.buffer_size_mb": None, "tags": {"k": "v"}, "server.insecure": True}
    (s,) = load_agents(file=path, env=env, flags=flags)
    assert (s.agent_id, s.max_concurrent, s.server_url) == ("flag-id", 5, "flaghub:2")
    assert s.buffer_bytes == 200 << 20  # None flag = not given
    assert s.tags == {"k": "v"} and s.insecure


def test_defaults_from_flags_only() -> None:
    (s,) = load_agents(env={}, flags={"server.url": "127.0.0.1:5", "agent.id": "a",
                                      "agent.token": "p", "agent.source_ip": "127.0.0.2"})
    assert s.max_concurrent == 2 and s.buffer_bytes == 64 << 20 and s.agent_name == "a"
    assert s.reported_ip == "127.0.0.2" and s.chunk_size == 10 << 20
    (s,) = load_agents(env={}, flags={"server.url": "h", "agent.id": "a", "agent.token": "p",
                                      "agent.source_ip": "127.0.0.2", "agent.ip_address": "1.2.3.4"})
    assert s.server_url == "h:12382" and s.reported_ip == "1.2.3.4"


def test_egress_lookup_settings(tmp_path: Path) -> None:
    (s,) = load_agents(file=write(tmp_path, SEED), env={})
    assert s.api_url == "https://api.bilibili.com" and s.egress_check_interval == 300
    text = SEED + "bilibili:\n  api_url: http://127.0.0.1:12390/\n"
    text = text.replace("heartbeat_interval: 45s", "heartbeat_interval: 45s\n  egress_check_interval: 2m")
    (s,) = load_agents(file=write(tmp_path, text), env={})
    assert s.api_url == "http://127.0.0.1:12390" and s.egress_check_interval == 120
    (s,) = load_agents(file=write(tmp_path, SEED), env={"BUPMESH_BILI_API_URL": "http://sim:1"},
                       flags={"agent.egress_check_interval": "0"})
    assert s.api_url == "http://sim:1" and s.egress_check_interval == 0  # 0: never ask
    a, b = load_agents(
        file=write(tmp_path, MULTI.replace("    insecure: true\n",
                                           "    insecure: true\n    api_url: http://sim:2\n", 1)),
        env={}, flags={"agent.egress_check_interval": "1h"})
    assert (a.api_url, b.api_url) == ("http://sim:2", "https://api.bilibili.com")
    assert a.egress_check_interval == b.egress_check_interval == 3600


def test_multi_agent_file(tmp_path: Path) -> None:
    path = write(tmp_path, MULTI)
    a, b = load_agents(file=path, env={})
    assert (a.agent_id, a.max_concurrent, a.buffer_bytes, a.source_ip) == (
        "agent-tokyo-1", 2, 200 << 20, "127.0.0.2")
    assert (b.agent_id, b.max_concurrent, b.buffer_bytes, b.source_ip) == (
        "agent-osaka-1", 1, 150 << 20, "127.0.0.3")
    assert a.tags == {"region": "tokyo", "priority": "high"} and b.tags == {}
    # shared settings from flags/env override every entry
    a, b = load_agents(file=path, env={"AGENT_TOKEN": "new"}, flags={"agent.buffer_size_mb": 32})
    assert a.token == b.token == "new" and a.buffer_bytes == b.buffer_bytes == 32 << 20
    # identity cannot be forced onto every agent
    with pytest.raises(ConfigError, match="AGENT_ID"):
        load_agents(file=path, env={"AGENT_ID": "x"})


@pytest.mark.parametrize(
    ("text", "env", "flags", "key"),
    [
        (SEED.replace("buffer_size_mb: 200", "buffer_size_mb: lots"), {}, {}, "agent.buffer_size_mb"),
        (SEED.replace("heartbeat_interval: 45s", "heartbeat_interval: soon"), {}, {},
         "agent.heartbeat_interval"),
        (SEED + "extra: 1\n", {}, {}, "extra: unknown setting"),
        (SEED.replace("  isp: aws", "  isp: aws\n  nested: {a: 1}"), {}, {}, "tags"),
        (SEED, {"MAX_CONCURRENT": "many"}, {}, "agent.max_concurrent_uploads"),
        (SEED, {"MEMORY_LIMIT": "lots"}, {}, "MEMORY_LIMIT"),
        (SEED, {}, {"agent.max_concurrent_uploads": 0}, "agent.max_concurrent_uploads"),
        (SEED, {}, {"agent.source_ip": "not-an-ip"}, "agent.source_ip"),
        (SEED, {}, {"server.url": "host:99999"}, "server.url"),
        (SEED, {}, {"resources.max_memory_mb": 100}, "agent.buffer_size_mb"),
        (SEED, {}, {"agent.buffer_size_mb": 8}, "agent.buffer_size_mb"),
        (SEED, {}, {"server.cert_file": "/nonexistent/ca.pem"}, "server.cert_file"),
        (SEED.replace("token: file-psk", "token: ''"), {}, {}, "agent.token"),
        (MULTI.replace("buffer_size_mb: 150", "buffer_size_mb: x"), {}, {}, "agents.1.buffer_size_mb"),
        (MULTI.replace("agent-osaka-1", "agent-tokyo-1"), {}, {}, "agents.1.id"),
        (MULTI + "server: {}\n", {}, {}, "server"),
        (MULTI.replace("    insecure: true\n", "    bogus: 1\n", 1), {}, {}, "agents.0.bogus"),
        (SEED, {}, {"agent.egress_check_interval": "5s"}, "agent.egress_check_interval"),
        (SEED, {}, {"agent.egress_check_interval": "-1"}, "agent.egress_check_interval"),
        (SEED, {}, {"agent.egress_check_interval": "2d"}, "agent.egress_check_interval"),
        (SEED, {"BUPMESH_BILI_API_URL": "api.bilibili.com"}, {}, "bilibili.api_url"),
        (SEED + "bilibili: {member_url: x}\n", {}, {}, "bilibili.member_url: unknown"),
        (MULTI.replace("    insecure: true\n", "    api_url: ftp://x\n", 1), {}, {},
         "agents.0.api_url"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, text: str, env: dict, flags: dict,
                                   key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_agents(file=write(tmp_path, text), env=env, flags=flags)


def test_helpers() -> None:
    assert parse_memory_mb("2G", key="k") == 2048 and parse_memory_mb("512m", key="k") == 512
    assert parse_memory_mb("1024", key="k") == 1024 and parse_memory_mb("1.5GiB", key="k") == 1536
    assert parse_tags(["a=1", "b = x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError, match="--tag"):
        parse_tags(["novalue"])


def test_bad_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        bupmesh_command("agent", "--server-url", "127.0.0.1:1", "--agent-id", "a", "--token", "p",
                        "--insecure", "--buffer-size-mb", "0"),
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "bupmesh agent: agent.buffer_size_mb: must be at least 1"
    ]
    proc = subprocess.run(
        bupmesh_command("agent", "--config", str(write(tmp_path, SEED + "bogus: 1\n"))),
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "bogus: unknown setting" in proc.stderr
    assert "file-psk" not in proc.stderr


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("agent.max_concurrent_uploads", 65, "agent.max_concurrent_uploads: must be at most 64"),
        ("agent.buffer_size_mb", 100_000, "agent.buffer_size_mb: must be at most 65536"),
        ("agent.bandwidth_mbps", -1, "agent.bandwidth_mbps: must be within 0..1000000"),
        ("agent.heartbeat_interval", "2h", "agent.heartbeat_interval: must be at most 1h"),
        ("agent.held_grace", "-1s", "agent.held_grace: expected a duration"),
        ("resources.max_memory_mb", 0, "resources.max_memory_mb: must be at least 1"),
    ],
)
def test_every_number_has_a_range(key: str, value: object, message: str) -> None:
    flags = {"server.url": "127.0.0.1:1", "agent.id": "a", "agent.token": "p",
             "server.insecure": True, key: value}
    with pytest.raises(ConfigError) as err:
        load_agents(env={}, flags=flags)
    assert str(err.value).startswith(message)
