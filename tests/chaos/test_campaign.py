"""The chaos campaign, with real processes (see tests/chaos/campaign.py and docs/internals.md).

* ``test_short_campaign`` runs in ``make test``: one seed of the short profile
  (40 small parts, one fault of every kind in 20 s). Its seed is fixed so the
  suite stays reproducible; ``CHAOS_SHORT_SEED=<n>`` runs another.
* ``test_long_campaign`` runs only under ``make chaos`` (``CHAOS_LONG=1``): the
  long profile (40 parts of 0.5-6 MiB, 50 faults over 60 s) for each seed in
  ``CHAOS_SEEDS`` (``make chaos SEEDS="3 17"`` replays those), else for
  ``CHAOS_COUNT`` (default 20) fresh random seeds, printed with each result.

A failing run fails with the seed, the plan, what the nemesis actually did and
when, the checker's findings and the tail of every process log.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import pytest

from tests.chaos import schedule
from tests.chaos.campaign import Campaign

pytestmark = pytest.mark.e2e

SHORT_SEED = int(os.environ.get("CHAOS_SHORT_SEED", "20261129"))


def _long_seeds() -> list[int]:
    if os.environ.get("CHAOS_LONG") != "1":
        return []
    given = os.environ.get("CHAOS_SEEDS", "").replace(",", " ").split()
    if given:
        return [int(s) for s in given]
    count = int(os.environ.get("CHAOS_COUNT", "20"))
    seeds: set[int] = set()
    while len(seeds) < count:
        seeds.add(secrets.randbelow(1_000_000))
    return sorted(seeds)


LONG_SEEDS = _long_seeds()


def run_and_check(seed: int, profile: schedule.Profile, tmp_path: Path, replay: str) -> None:
    plan = schedule.generate(seed, profile)
    result = Campaign(plan, tmp_path).run()
    print(result.summary())
    if not result.ok:
        pytest.fail(result.report(replay), pytrace=False)
    shutil.rmtree(tmp_path / "files")  # ~100 MiB a run; a failing run keeps them to look at


def test_short_campaign(tmp_path: Path) -> None:
    run_and_check(SHORT_SEED, schedule.SHORT, tmp_path,
                  f"CHAOS_SHORT_SEED={SHORT_SEED} .venv/bin/pytest "
                  "tests/chaos/test_campaign.py::test_short_campaign")


@pytest.mark.chaos
@pytest.mark.timeout(900)
@pytest.mark.skipif(not LONG_SEEDS, reason="long chaos campaign: run `make chaos`")
@pytest.mark.parametrize("seed", LONG_SEEDS or [0])
def test_long_campaign(seed: int, tmp_path: Path) -> None:
    run_and_check(seed, schedule.LONG, tmp_path, f"make chaos SEEDS={seed}")
