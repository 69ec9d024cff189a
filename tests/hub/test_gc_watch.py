"""The collector watch: slow full collections freeze their survivors; an hourly thaw."""

from __future__ import annotations

import gc
import logging

import pytest

from hub import gc_watch


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
