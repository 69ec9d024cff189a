"""The shared progress bar (bupmesh/progress_bar.py): inert off a terminal, one bar on it."""

from __future__ import annotations

import io
import sys

import pytest

from bupmesh.progress_bar import ProgressBar


def test_disabled_draws_nothing_and_takes_every_update(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with ProgressBar("f.flv", enabled=False, total=10) as bar:
        assert not bar.enabled
        bar.update(5)
        bar.update(7, total=20, status="uploading", speed="1 MB/s", eta="ETA 3s")
    assert err.getvalue() == ""


@pytest.mark.parametrize("reported", [False, True])
def test_enabled_draws_the_figures_it_was_given(
    monkeypatch: pytest.MonkeyPatch, reported: bool
) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with ProgressBar("f.flv", enabled=True, reported=reported) as bar:
        assert bar.enabled
        bar.update(512_000, total=1_024_000, status="uploading", speed="2.0 MB/s",
                   eta="ETA 9s")
    screen = err.getvalue()
    assert "f.flv" in screen and "0.5/1.0 MB" in screen
    # the hub's own figures when reported; rich's measured ones otherwise
    assert ("uploading" in screen and "2.0 MB/s" in screen and "ETA 9s" in screen) == reported
