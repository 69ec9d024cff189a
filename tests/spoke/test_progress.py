"""When the agent reports Progress: every ten percent or every ten seconds."""

from __future__ import annotations

import pytest

from spoke.progress import ProgressGate


def test_progress_every_ten_percent_or_ten_seconds() -> None:
    total = 1000
    gate = ProgressGate(total, now=0.0)
    assert gate.should_report(0, 0.0)  # the first
    assert not gate.should_report(50, 1.0)
    assert gate.should_report(100, 1.5)  # crossed 10%
    assert not gate.should_report(150, 2.0)
    assert not gate.should_report(199, 11.0)  # 9.5 s since the last report
    assert gate.should_report(199, 11.5)  # 10 s
    assert gate.should_report(450, 12.0)  # jumped two buckets: one report
    assert not gate.should_report(460, 12.1)
    assert gate.should_report(1000, 12.2)  # the last byte
    assert not gate.should_report(1000, 12.3)
    assert gate.next_deadline() == pytest.approx(22.2)
