"""bench/scale.py and bench/plot.py: the figures' arithmetic, and a small real run so the
load generator keeps speaking the protocol the hub speaks (it would rot silently otherwise).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
from plot import PlotInputError, reconnect_figure, throughput_figure  # noqa: E402
from plot import main as plot_main  # noqa: E402
from scalestats import cpu_percent, per_second, percentile, storm_summary  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_percentile_is_nearest_rank() -> None:
    sample = list(range(1, 101))  # 1..100
    assert percentile(sample, 50) == 50
    assert percentile(sample, 99) == 99
    assert percentile(sample, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([3, 1, 2], 0) == 1
    with pytest.raises(ValueError):
        percentile([], 50)


def test_per_second_bins_from_the_start() -> None:
    assert per_second([10.0, 10.2, 11.5, 13.9, 9.0], 10.0) == [2, 1, 0, 1]
    assert per_second([10.5], 10.0, end=13.0) == [1, 0, 0]
    assert per_second([], 10.0) == []


def test_storm_summary_compares_the_busiest_second_with_the_mean() -> None:
    # 10 reconnects spread evenly over 10 s, then the same plus a burst of 30 in one second
    even = [100.0 + i for i in range(10)]
    s = storm_summary(even, kill_time=95.0)
    assert s["reconnects"] == 10 and s["first_after_kill_s"] == 5.0
    assert s["span_s"] == 9.0 and s["max_per_s"] == 1
    assert s["ratio"] == pytest.approx(1 / (10 / 9))
    burst = even + [104.5] * 30
    b = storm_summary(burst, kill_time=95.0)
    assert b["max_per_s"] == 31
    assert b["ratio"] == pytest.approx(31 / (40 / 9))
    assert b["ratio"] > 3  # what the target rejects
    with pytest.raises(ValueError):
        storm_summary([], 0.0)


def test_cpu_percent_of_one_core() -> None:
    assert cpu_percent(100, 150, 5.0, 100) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        cpu_percent(0, 1, 0.0, 100)


def test_plots_from_synthetic_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mesh = {"file_bytes": 1 << 30, "runs": [{"direct_MBps": 300.0, "mesh_MBps": 150.0},
                                            {"direct_MBps": 310.0, "mesh_MBps": 170.0}],
            "ratio_median": 0.52}
    (tmp_path / "mesh.json").write_text(json.dumps(mesh))
    out = tmp_path / "t.png"
    assert plot_main(["throughput", str(tmp_path / "mesh.json"), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert throughput_figure(mesh).axes[0].get_title().endswith("median ratio mesh/direct 0.52")
    with pytest.raises(PlotInputError, match="direct_MBps"):
        throughput_figure({"runs": [{"mesh_MBps": 1.0}]})
    with pytest.raises(PlotInputError, match="storm"):
        reconnect_figure({"runs": [{"agents": 5}]})
    (tmp_path / "bad.json").write_text("{not json")
    assert plot_main(["reconnect", str(tmp_path / "bad.json"), "--out",
                      str(tmp_path / "x.png")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.e2e
def test_scale_bench_smoke_run(tmp_path: Path) -> None:
    """50 simulated agents on a real hub: all connect, every part is offered and
    completed, and all come back after the hub is killed and restarted."""
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "scale.py"), "--agents", "50", "--parts", "5",
         "--part-interval", "0.02", "--heartbeat-seconds", "1", "--steady-seconds", "1",
         "--ramp-seconds", "1", "--storm-timeout", "60", "--workdir", str(tmp_path / "w"),
         "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    [run] = json.loads(out.read_text())["runs"]
    assert run["agents"] == 50
    assert run["dispatch"]["completed"] == 5
    assert 0 < run["dispatch"]["p50_ms"] <= run["dispatch"]["p99_ms"] < 30_000
    assert run["hub_rss_mib"] > 10 and run["hub_cpu_percent"] >= 0
    storm = run["storm"]
    assert storm["not_back"] == 0 and storm["reconnects"] == 50
    assert storm["hub_side"]["reconnects"] >= 50  # the hub's log agrees (a re-dial adds one)
    assert sum(storm["reconnects_per_s"]) == 50
    assert storm["generator_errors"] == []
    png = tmp_path / "reconnect.png"
    assert plot_main(["reconnect", str(out), "--out", str(png)]) == 0
    assert png.read_bytes().startswith(PNG_MAGIC)
