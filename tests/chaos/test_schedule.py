"""The nemesis plan is a pure function of the seed: replayable, complete, and self-consistent."""

from __future__ import annotations

import pytest

from tests.chaos import schedule as S

SEEDS = range(40)


@pytest.mark.parametrize("profile", [S.SHORT, S.LONG], ids=lambda p: p.name)
def test_the_same_seed_gives_the_same_plan_and_another_seed_another(profile: S.Profile) -> None:
    assert S.generate(7, profile) == S.generate(7, profile)
    assert S.generate(7, profile).render() == S.generate(7, profile).render()
    assert len({S.generate(seed, profile).render() for seed in SEEDS}) == len(SEEDS)


@pytest.mark.parametrize("profile", [S.SHORT, S.LONG], ids=lambda p: p.name)
def test_every_plan_has_every_kind_of_fault_and_every_part(profile: S.Profile) -> None:
    for seed in SEEDS:
        plan = S.generate(seed, profile)
        assert {f.kind for f in plan.faults} == set(S.ALL_KINDS), plan.render()
        assert len(plan.faults) >= profile.faults - 2, plan.render()  # a few may find no room
        assert len(plan.parts) == profile.parts
        assert len({p.name for p in plan.parts}) == profile.parts
        assert all(profile.part_min <= p.size <= profile.part_max for p in plan.parts)
        assert plan.strategy == S.STRATEGY == "ip_diversity"


@pytest.mark.parametrize("profile", [S.SHORT, S.LONG], ids=lambda p: p.name)
def test_faults_fit_the_nemesis_window_and_never_overlap_on_one_resource(
    profile: S.Profile,
) -> None:
    for seed in SEEDS:
        plan = S.generate(seed, profile)
        windows: dict[tuple[str, int | None], list[tuple[float, float]]] = {}
        for f in plan.faults:
            assert 0 < f.at <= profile.nemesis_seconds
            end = f.at + (f.duration if f.kind in S.WINDOWED else 0)
            assert end <= profile.nemesis_seconds + 1e-9, f
            assert (f.agent is None) == (f.kind in S._GLOBAL), f
            if f.agent is not None:
                assert 1 <= f.agent <= profile.agents
            resource = S.BLACKHOLE_LINK if f.kind == S.CUT_LINK else f.kind
            windows.setdefault((resource, f.agent), []).append((f.at, end))
        for key, spans in windows.items():
            spans.sort()
            for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
                assert start >= end, f"{key} overlaps in seed {seed}:\n{plan.render()}"
        assert [f.at for f in plan.faults] == sorted(f.at for f in plan.faults)


def test_the_rendered_plan_names_the_seed_and_every_fault() -> None:
    plan = S.generate(123, S.SHORT)
    text = plan.render()
    assert "chaos seed 123" in text and plan.strategy in text
    for fault in plan.faults:
        assert fault.describe() in text


def test_a_profile_too_small_for_one_fault_of_each_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="one per kind"):
        S.Profile("tiny", faults=3)
