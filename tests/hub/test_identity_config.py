"""The hub settings of agent identity and media roots: defaults, and one line per bad value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bupmesh.config import ConfigError
from hub.config import load_hub_config

BASE = {"psk": "p" * 8, "admin_token": "a" * 8, "insecure": True}


def test_defaults_keep_todays_behaviour(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_hub_config(env={}, flags=BASE)
    assert (config.agents.allow_psk, config.agents.require_approval) == (True, False)
    assert config.agents.allowed_accounts == {} and config.viewer_token == ""
    assert config.media_root_list == [str(tmp_path)]  # where the hub was started


def test_media_roots_from_flags_and_environment(tmp_path: Path) -> None:
    config = load_hub_config(env={"BUPMESH_MEDIA_ROOTS": f"/srv/a{os.pathsep}/srv/b"},
                             flags=BASE)
    assert config.media_root_list == ["/srv/a", "/srv/b"]
    config = load_hub_config(env={}, flags={**BASE, "media_roots": ["/srv/c"]})
    assert config.media_root_list == ["/srv/c"]


def test_bad_values_stop_startup_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    cases = [
        ({"media_roots": ["/srv/x", "/"]}, "media_roots: / would let the hub upload every file"),
        ({"viewer_token": "a" * 8}, "viewer_token: must differ from admin_token and psk"),
        ({"psk": "", "agents.allow_psk": True}, "psk: required setting is missing"),
        ({"agents.allowed_accounts": {"bad id": ["main"]}},
         "agents.allowed_accounts.bad id: not an agent id"),
        ({"agents.allowed_accounts": {"a1": [""]}}, "agents.allowed_accounts.a1: account names"),
        ({"agents.require_approval": "perhaps"}, "agents.require_approval: Expected `bool`"),
    ]
    for over, message in cases:
        with pytest.raises(ConfigError) as err:
            load_hub_config(env={}, flags={**BASE, **over})
        assert str(err.value).startswith(message), (over, str(err.value))
    # without the PSK at all, per-agent tokens admit agents
    config = load_hub_config(env={}, flags={**BASE, "psk": "", "agents.allow_psk": False})
    assert config.psk == "" and not config.agents.allow_psk
    monkeypatch.chdir("/")  # the default root would be the whole filesystem
    with pytest.raises(ConfigError, match=r"^media_roots \(unset: the directory the hub runs in\)"):
        load_hub_config(env={}, flags=BASE)
