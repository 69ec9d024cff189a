"""The chart history's buckets on a fake clock: sums, the window sliding, quiet keys
forgotten, and risk events counted on the same grid."""

from __future__ import annotations

from hub.core.history import IP_BUCKETS, History, Series, bucket_times


def test_series_sums_per_bucket_and_slides() -> None:
    s = Series(60, 3)
    s.add("a", 5, 0)
    s.add("a", 7, 59.9)
    s.add("a", 1, 60)
    assert s.window(60) == (-60, {"a": [0, 12, 1]})
    assert s.window(120) == (0, {"a": [12, 1, 0]})
    s.add("a", 4, 300)  # three buckets later: the ring's old slots were cleared
    assert s.window(300) == (180, {"a": [0, 0, 4]})
    s.add("a", 9, 100)  # before the window: dropped, not counted somewhere else
    assert s.window(300) == (180, {"a": [0, 0, 4]})
    s.add("b", 2, 10_000)  # a key that was quiet longer than a whole ring
    s.add("b", 3, 10_000 + 3 * 3600)
    assert s.window(10_000 + 3 * 3600)[1]["b"] == [0, 0, 3]


def test_keys_with_nothing_in_the_window_are_forgotten() -> None:
    s = Series(60, 3)
    s.add("gone", 1, 0)
    s.add("here", 1, 150)
    assert set(s.window(150)[1]) == {"gone", "here"}
    assert set(s.window(180)[1]) == {"here"} and len(s) == 1


def test_history_view_on_a_fake_clock() -> None:
    now = [86_400.0 * 10]
    h = History(lambda: now[0])
    h.uploaded("agent-1", 6_000_000)
    h.uploaded("agent-1", 0)  # nothing moved: nothing kept
    h.upload_started("127.0.0.2")
    now[0] += 61
    h.uploaded("agent-1", 3_000_000)
    h.upload_started("127.0.0.2")
    view = h.view({"127.0.0.2": [now[0] - 30, now[0] - 2 * 86_400], "127.0.0.3": []})
    t = view["throughput"]
    assert t["agents"]["agent-1"][-2:] == [6_000_000, 3_000_000]
    assert len(t["agents"]["agent-1"]) == 60 and t["bucket_seconds"] == 60
    assert t["start"] + 60 * 60 > now[0] >= t["start"] + 59 * 60
    ips = view["ips"]
    assert sum(ips["uploads"]["127.0.0.2"]) == 2 and len(ips["uploads"]["127.0.0.2"]) == IP_BUCKETS
    assert sum(ips["risk_events"]["127.0.0.2"]) == 1  # the 2-day-old event is out of the window
    assert "127.0.0.3" not in ips["risk_events"]


def test_bucket_times_matches_the_series_grid() -> None:
    s = Series(600, 4)
    for t in (0, 599, 1200, 2399):
        s.add("x", 1, t)
    assert bucket_times([0, 599, 1200, 2399], 600, 4, 2399) == s.window(2399)[1]["x"]
