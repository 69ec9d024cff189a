"""The collector watch: slow full collections freeze their survivors; an hourly thaw."""

from __future__ import annotations

import gc
import logging
import socket
from pathlib import Path

import anyio
import pytest

from bupmesh.config import ConfigError
from hub import gc_watch
from hub.app import run_hub
from hub.config import HubConfig, validate


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(gc, "freeze", lambda: seen.append("freeze"))
    monkeypatch.setattr(gc, "unfreeze", lambda: seen.append("unfreeze"))
    monkeypatch.setattr(gc, "collect", lambda *a: seen.append("collect") or 0)
    return seen


def collection(monkeypatch: pytest.MonkeyPatch, generation: int, seconds: float) -> None:
    clock = iter([100.0, 100.0 + seconds])
    monkeypatch.setattr(gc_watch.time, "perf_counter", lambda: next(clock))
    gc_watch._on_gc("start", {"generation": generation})
    gc_watch._on_gc("stop", {"generation": generation, "collected": 0})


def test_a_slow_full_collection_freezes_and_is_logged(
    monkeypatch: pytest.MonkeyPatch, calls: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bupmesh.hub.gc"):
        collection(monkeypatch, 2, 0.3)
    assert calls == ["freeze"]
    assert "paused the hub for 300 ms" in caplog.text


def test_fast_or_young_collections_change_nothing(
    monkeypatch: pytest.MonkeyPatch, calls: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bupmesh.hub.gc"):
        collection(monkeypatch, 2, 0.01)
        collection(monkeypatch, 0, 0.08)
    assert calls == [] and caplog.text == ""


def test_the_thaw_runs_once_an_hour(monkeypatch: pytest.MonkeyPatch, calls: list[str]) -> None:
    monkeypatch.setattr(gc_watch, "_last_thaw", 1000.0)
    assert not gc_watch.thaw_if_due(now=1000.0 + gc_watch.THAW_EVERY_SECONDS - 1)
    assert gc_watch.thaw_if_due(now=1000.0 + gc_watch.THAW_EVERY_SECONDS)
    assert calls == ["unfreeze", "collect"]
    assert not gc_watch.thaw_if_due(now=1000.0 + gc_watch.THAW_EVERY_SECONDS + 1)


def test_install_and_uninstall_are_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc, "callbacks", [])
    gc_watch.install()
    gc_watch.install()
    assert gc.callbacks == [gc_watch._on_gc]
    gc_watch.uninstall()
    gc_watch.uninstall()
    assert gc.callbacks == []


def test_a_hub_that_stops_stops_watching(tmp_path: Path) -> None:
    """Even one that refused to start: the interpreter's full collection at exit would
    otherwise log a pause after the line that says why."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = validate(HubConfig(
            psk="p", admin_token="a", insecure=True, data_dir=str(tmp_path),
            grpc_listen=f"127.0.0.1:{busy.getsockname()[1]}",
        ))
        with pytest.raises(ConfigError, match="grpc_listen"):
            anyio.run(run_hub, config, backend="asyncio")
    assert gc_watch._on_gc not in gc.callbacks
