"""Layered settings: flags > environment > YAML file > defaults, one-line errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import msgspec
import pytest

from bupmesh.config import ConfigError, load_config, parse_duration, parse_host_port
from tests.conftest import bupmesh_command


class Heartbeat(msgspec.Struct, forbid_unknown_fields=True):
    interval_seconds: int = 30
    offline_after_seconds: int = 90


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    psk: str
    http_listen: str = "0.0.0.0:12380"
    insecure: bool = False
    heartbeat: Heartbeat = msgspec.field(default_factory=Heartbeat)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def test_defaults_apply_when_nothing_else_sets_a_key() -> None:
    settings = load_config(Settings, env={}, flags={"psk": "k"})
    assert settings.http_listen == "0.0.0.0:12380"
    assert settings.heartbeat.interval_seconds == 30


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    file = write(tmp_path, "psk: from-file\nhttp_listen: 1.1.1.1:1\nheartbeat: {interval_seconds: 5}\n")
    env = {"PSK": "from-env", "LISTEN": "2.2.2.2:2"}
    keys = {"PSK": "psk", "LISTEN": "http_listen"}
    settings = load_config(Settings, file=file, env=env, env_keys=keys, flags={"psk": "from-flag"})
    assert settings.psk == "from-flag"
    assert settings.http_listen == "2.2.2.2:2"
    assert settings.heartbeat.interval_seconds == 5
    assert settings.heartbeat.offline_after_seconds == 90


def test_flag_left_unset_does_not_override(tmp_path: Path) -> None:
    file = write(tmp_path, "psk: from-file\n")
    settings = load_config(Settings, file=file, env={}, flags={"psk": None})
    assert settings.psk == "from-file"


def test_environment_strings_convert_to_typed_values() -> None:
    env = {"HB": "7", "INSECURE": "true"}
    keys = {"HB": "heartbeat.interval_seconds", "INSECURE": "insecure"}
    settings = load_config(Settings, env=env, env_keys=keys, flags={"psk": "k"})
    assert settings.heartbeat.interval_seconds == 7
    assert settings.insecure is True


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("psk: k\nheartbeat: {interval_seconds: soon}\n", "heartbeat.interval_seconds: Expected `int`"),
        ("psk: k\nheartbeat: {intervall_seconds: 3}\n", "heartbeat.intervall_seconds: unknown setting"),
        ("http_listen: x\n", "psk: required setting is missing"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("psk: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, yaml_text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Settings, file=write(tmp_path, yaml_text), env={})
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yml"):
        load_config(Settings, file=tmp_path / "nope.yml", env={})


def test_host_port() -> None:
    assert parse_host_port("127.0.0.1:12380", key="http_listen") == ("127.0.0.1", 12380)
    assert parse_host_port("[::1]:80", key="k") == ("::1", 80)
    for bad in ("12380", "host:", ":80", "h:99999", "h:0"):
        with pytest.raises(ConfigError, match="grpc_listen"):
            parse_host_port(bad, key="grpc_listen")


def test_durations() -> None:
    assert parse_duration("30s", key="k") == 30
    assert parse_duration("5m", key="k") == 300
    assert parse_duration("1h", key="k") == 3600
    assert parse_duration("250ms", key="k") == 0.25
    assert parse_duration(12, key="k") == 12
    for bad in ("soon", "-3s", True):
        with pytest.raises(ConfigError, match="heartbeat_interval"):
            parse_duration(bad, key="heartbeat_interval")


def test_cli_without_subcommand_exits_with_usage() -> None:
    proc = subprocess.run(bupmesh_command(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "COMMAND" in proc.stderr


def test_cli_help_lists_every_subcommand() -> None:
    proc = subprocess.run(bupmesh_command("--help"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for name in ("hub", "agent", "sim-bili", "upload", "upload-direct", "demo"):
        assert name in proc.stdout
