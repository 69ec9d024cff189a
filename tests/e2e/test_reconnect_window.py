"""End to end, with real processes: agents honour the hub's reconnect window.

The hub names a window in ``Welcome`` (here pinned to 2 s by its settings).
After the hub is SIGKILLed and stays down for a while, each agent dials again
on a grid of that period (:mod:`spoke.reconnect`) instead of its own backoff,
whose delays would have grown to 4, 8, 16 s: every "reconnecting in" delay the
agents log after the kill is within the window, and once the hub listens again
every agent is back within about one window.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bupmesh.localmesh import LocalMesh, wait_for

pytestmark = pytest.mark.e2e

WINDOW = 2.0
HUB_CONFIG = f"""\
heartbeat:
  interval_seconds: 1
  offline_after_seconds: 5
reconnect:
  window_min_seconds: {WINDOW}
  window_max_seconds: {WINDOW}
"""
DELAY = re.compile(r"reconnecting in ([0-9.]+)s")


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    with LocalMesh(tmp_path / "mesh") as local:
        local.start_hub(config_yaml=HUB_CONFIG)
        yield local


def test_agents_dial_within_the_window_after_a_hub_restart(mesh: LocalMesh) -> None:
    agents = [mesh.start_agent(i) for i in (1, 2, 3)]
    mesh.wait_agents_online(3)
    offsets = {a.name: a.log_path.stat().st_size for a in agents}
    hub = next(p for p in reversed(mesh.processes) if p.name == "hub")
    hub.kill()

    def delays(agent: object) -> list[float]:
        with open(agent.log_path, "rb") as f:  # type: ignore[attr-defined]
            f.seek(offsets[agent.name])  # type: ignore[attr-defined]
            text = f.read().decode("utf-8", "replace")
        return [float(m) for m in DELAY.findall(text)]

    # Down long enough for a backoff to have grown past the window several times over.
    wait_for(lambda: all(len(delays(a)) >= 4 for a in agents), 60,
             "each agent's failed dials while the hub is down")
    restarted = time.monotonic()
    mesh.restart_hub()
    mesh.wait_agents_online(3, timeout=30)
    back_after = time.monotonic() - restarted
    for agent in agents:
        seen = delays(agent)
        assert seen and max(seen) <= WINDOW + 0.05, (agent.name, seen)
    # Within one window of listening, plus the hub's start and a heartbeat's report.
    assert back_after < WINDOW + 10, back_after
