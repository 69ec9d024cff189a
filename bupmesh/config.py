"""Layered configuration shared by every command.

Settings come from four layers, highest first: command-line flags, environment
variables, a YAML file, and the defaults declared on a ``msgspec.Struct``. The
layers are merged as plain nested dicts and decoded once by msgspec, so every
command gets typed, validated settings and every bad value is reported the same
way: one line naming the dotted key (``heartbeat.interval_seconds: Expected
`int`, got `str```).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

T = TypeVar("T")


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the setting."""


def load_config(
    struct_type: type[T],
    *,
    file: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    env_keys: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> T:
    """Build ``struct_type`` from file, environment and flags.

    ``env_keys`` maps environment variable names to dotted setting keys
    (``{"BUPMESH_PSK": "psk"}``); ``flags`` maps dotted keys to values and
    ignores ``None`` (a flag the user did not give).
    """
    merged: dict[str, Any] = read_yaml(file) if file else {}
    env = os.environ if env is None else env
    for var, key in (env_keys or {}).items():
        value = env.get(var)
        if value not in (None, ""):
            _set_dotted(merged, key, value)
    for key, value in (flags or {}).items():
        if value is not None:
            _set_dotted(merged, key, value)
    return decode(struct_type, merged)


def decode(struct_type: type[T], data: Any) -> T:
    """Decode plain data into ``struct_type``; strings from env convert to numbers/bools."""
    try:
        return msgspec.convert(data, struct_type, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path}{where}: not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return data


def parse_host_port(value: str, *, key: str) -> tuple[str, int]:
    """Split ``H:P`` (``[::1]:P`` for IPv6); a bad value names ``key``."""
    match = re.fullmatch(r"\[?([^\[\]]*?)\]?:(\d{1,5})", value.strip())
    if not match or not match.group(1) or not 0 < int(match.group(2)) < 65536:
        raise ConfigError(f"{key}: expected HOST:PORT, got {value!r}")
    return match.group(1), int(match.group(2))


def parse_duration(value: str | float | int, *, key: str) -> float:
    """Seconds from ``30``, ``"30"``, ``"30s"``, ``"5m"``, ``"1h"`` (agent.yml files write ``30s``)."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", value)
        if not match:
            raise ConfigError(f"{key}: expected a duration such as 30s, got {value!r}")
        unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]
        seconds = float(match.group(1)) * unit
    if seconds < 0:
        raise ConfigError(f"{key}: must not be negative")
    return seconds


def _set_dotted(target: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = target
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def _describe(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    match = _PATH.search(text)
    message, path = (text[: match.start()], match.group("path")) if match else (text, "")
    unknown = re.fullmatch(r"Object contains unknown field `(?P<field>[^`]+)`", message)
    if unknown:
        key = f"{path.lstrip('.')}.{unknown.group('field')}".lstrip(".")
        return f"{key}: unknown setting"
    missing = re.fullmatch(r"Object missing required field `(?P<field>[^`]+)`", message)
    if missing:
        key = f"{path.lstrip('.')}.{missing.group('field')}".lstrip(".")
        return f"{key}: required setting is missing"
    key = re.sub(r"\[(\d+)\]", r".\1", path).lstrip(".") or "(top level)"
    return f"{key}: {message}"
