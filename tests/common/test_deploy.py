"""deploy/: the example configs load with the real loaders, the compose file and
Dockerfiles name the services and the documented environment, and the systemd
units verify where ``systemd-analyze`` exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hub.config import ENV_KEYS as HUB_ENV_KEYS
from hub.config import load_hub_config
from spoke.config import ENV_KEYS as AGENT_ENV_KEYS
from spoke.config import load_agents

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SEED_AGENT_ENV = {"SERVER_URL", "AGENT_ID", "AGENT_NAME", "AGENT_TOKEN", "MAX_CONCURRENT",
                  "MEMORY_LIMIT"}
AGENT_ENV = SEED_AGENT_ENV | {"BUPMESH_BILI_API_URL"}
HUB_ENV = {"BUPMESH_PSK", "BUPMESH_ADMIN_TOKEN", "BUPMESH_DATA_DIR", "BUPMESH_BILI_MEMBER_URL",
           "BUPMESH_ALERT_WEBHOOK_URL"}


@pytest.fixture
def pem_files(tmp_path: Path) -> dict[str, str]:
    # The examples point at /etc/bupmesh/*.pem; the loaders check the files exist,
    # so the test puts stand-ins in their place through the loaders' own flags.
    files = {}
    for name in ("ca.pem", "hub.crt", "hub.key"):
        (tmp_path / name).write_text("stand-in\n")
        files[name] = str(tmp_path / name)
    return files


def test_documented_env_names_are_the_loaders_names() -> None:
    assert set(AGENT_ENV_KEYS) == AGENT_ENV
    assert set(HUB_ENV_KEYS) == HUB_ENV


def test_seed_agent_yml_loads(pem_files: dict[str, str]) -> None:
    [agent] = load_agents(file=DEPLOY / "agent.yml", env={},
                          flags={"server.cert_file": pem_files["ca.pem"]})
    assert agent.agent_id == "agent-001"
    assert agent.agent_name == "Tokyo-Agent-1"
    assert agent.server_url == "hub.example.com:12382"
    assert agent.buffer_bytes == 200 << 20
    assert agent.heartbeat_interval == 30
    assert agent.max_memory_mb == 2048
    assert agent.tags == {"region": "tokyo", "isp": "aws"}
    assert not agent.insecure


def test_multi_agent_file_loads(pem_files: dict[str, str]) -> None:
    agents = load_agents(file=DEPLOY / "agents.yml", env={"AGENT_TOKEN": "psk"},
                         flags={"server.cert_file": pem_files["ca.pem"]})
    assert [a.agent_id for a in agents] == ["agent-tokyo-1", "agent-osaka-1", "agent-backup-1"]
    assert [a.max_concurrent for a in agents] == [2, 1, 1]
    assert {a.token for a in agents} == {"psk"}
    assert all(a.ca_file == pem_files["ca.pem"] for a in agents)


def test_hub_yml_loads(pem_files: dict[str, str]) -> None:
    config = load_hub_config(
        file=str(DEPLOY / "hub.yml"),
        env={"BUPMESH_PSK": "psk", "BUPMESH_ADMIN_TOKEN": "admin"},
        flags={"tls.cert_file": pem_files["hub.crt"], "tls.key_file": pem_files["hub.key"]},
    )
    assert config.tls_enabled
    assert config.http_address == ("0.0.0.0", 12380)
    assert config.grpc_address == ("0.0.0.0", 12382)
    assert config.data_dir == "/var/lib/bupmesh"
    assert config.scheduler.strategy == "ip_diversity"


def _compose() -> dict:
    text = (DEPLOY / "docker-compose.yml").read_text()
    # what compose does with ${VAR:-default} when VAR is unset
    text = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)
    return yaml.safe_load(text)


def test_compose_names_services_and_env() -> None:
    services = _compose()["services"]
    assert set(services) == {"hub", "sim-bili", "agent-1", "agent-2", "agent-3"}
    hub_env = services["hub"]["environment"]
    assert HUB_ENV <= set(hub_env)
    assert hub_env["BUPMESH_BILI_MEMBER_URL"] == "http://sim-bili:12390"
    assert services["sim-bili"]["entrypoint"] == ["bupmesh", "sim-bili"]
    # the hub's environment and flags load with the real loader
    config = load_hub_config(env=hub_env, flags={"insecure": True})
    assert config.psk and config.admin_token
    ids = set()
    for name in ("agent-1", "agent-2", "agent-3"):
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        assert AGENT_ENV <= set(env), name
        assert env["BUPMESH_BILI_API_URL"] == "http://sim-bili:12390"  # the egress lookup
        assert services[name]["command"] == ["--insecure"]
        [agent] = load_agents(env=env, flags={"server.insecure": True})
        assert agent.server_url == "hub:12382"
        assert agent.token == hub_env["BUPMESH_PSK"]
        ids.add(agent.agent_id)
    assert ids == {"agent-1", "agent-2", "agent-3"}


def test_compose_config_validates() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("the docker CLI here has no compose plugin")
    result = subprocess.run(
        [docker, "compose", "-f", str(DEPLOY / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("which", ["hub", "agent"])
def test_dockerfiles(which: str) -> None:
    text = (DEPLOY / f"Dockerfile.{which}").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert re.search(r"^RUN pip install \.", text, re.M)
    assert re.search(r"^USER bupmesh$", text, re.M)
    assert re.search(rf'^ENTRYPOINT \["bupmesh", "{which}"\]$', text, re.M)
    for source in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path
    names = AGENT_ENV if which == "agent" else HUB_ENV
    for name in names:
        assert name in text, name


@pytest.mark.parametrize("unit", ["bupmesh-hub.service", "bupmesh-agent@.service"])
def test_systemd_units_verify(unit: str, tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    text = (DEPLOY / unit).read_text()
    assert "ExecStart=/usr/local/bin/bupmesh " in text
    # verify insists the ExecStart binary exists: point it at this checkout's bupmesh
    bupmesh = shutil.which("bupmesh") or str(ROOT / ".venv" / "bin" / "bupmesh")
    (tmp_path / unit).write_text(text.replace("/usr/local/bin/bupmesh", bupmesh))
    target = unit.replace("@.", "@test.")
    result = subprocess.run([tool, "verify", target], cwd=tmp_path, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "bupmesh-" not in result.stderr, result.stderr
