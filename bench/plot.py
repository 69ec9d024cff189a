"""Draw the benchmark figures in docs/bench/ from the benches' ``--json`` output.

    .venv/bin/python bench/plot.py reconnect SCALE.json [--out docs/bench/reconnect.png]
    .venv/bin/python bench/plot.py throughput MESH.json [--out docs/bench/throughput.png]

``reconnect``: agents reconnecting per second after the hub was killed and
restarted, one curve per agent count, from ``bench/scale.py --json``.
``throughput``: direct vs mesh MB/s per run with the median ratio, from
``bench/mesh.py --json`` (``{"file_bytes", "runs": [{"direct_MBps", "mesh_MBps"}],
"ratio_median", ...}``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs" / "bench"


class PlotInputError(ValueError):
    """The JSON is not what the bench writes (names the missing or bad field)."""


def _field(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise PlotInputError(f"{where}: missing {key!r}")
    return obj[key]


def reconnect_figure(report: dict[str, Any]) -> Figure:
    """Reconnects per second since the kill, per N: as the hub accepted them (its log) and
    as the agents saw their Welcome; a dotted marker where the restarted hub answered."""
    runs = _field(report, "runs", "scale JSON")
    if not runs:
        raise PlotInputError("scale JSON: no runs")
    fig, (hub_ax, agent_ax) = plt.subplots(2, 1, figsize=(9, 7), dpi=110, sharex=True)
    for i, run in enumerate(runs):
        where = f"runs[{i}]"
        n = _field(run, "agents", where)
        name = run.get("label") or f"{n:,} agents"  # e.g. "10,000 agents, before"
        storm = _field(run, "storm", where)
        curve = _field(storm, "reconnects_per_s", f"{where}.storm")
        ratio = _field(storm, "ratio", f"{where}.storm")
        line, = agent_ax.step(range(len(curve)), curve, where="post",
                              label=f"{name} (max/mean {ratio:.2f})")
        color = line.get_color()
        hub_curve = storm.get("hub_sessions_per_s")
        hub_side = storm.get("hub_side")
        if hub_curve and hub_side:
            hub_ax.step(range(len(hub_curve)), hub_curve, where="post", color=color,
                        label=f"{name} (max/mean {hub_side['ratio']:.2f})")
        up = storm.get("hub_answering_after_s")
        if up is not None:
            for ax in (hub_ax, agent_ax):
                ax.axvline(up, color=color, linestyle=":", linewidth=1)
    restart = runs[0].get("storm", {}).get("restart", "kill")
    how = "SIGKILL" if restart == "kill" else "SIGTERM"
    hub_ax.set_title(f"Reconnect storm after a hub restart ({how})")
    hub_ax.set_ylabel("sessions the hub\naccepted per second")
    agent_ax.set_ylabel("agents welcomed\nper second")
    agent_ax.set_xlabel("seconds since the hub was stopped; dotted: the restarted hub answers")
    for ax in (hub_ax, agent_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    return fig


def throughput_figure(report: dict[str, Any]) -> Figure:
    """Direct and mesh MB/s side by side for each run, with the median ratio."""
    runs = _field(report, "runs", "mesh JSON")
    if not runs:
        raise PlotInputError("mesh JSON: no runs")
    direct = [float(_field(r, "direct_MBps", f"runs[{i}]")) for i, r in enumerate(runs)]
    mesh = [float(_field(r, "mesh_MBps", f"runs[{i}]")) for i, r in enumerate(runs)]
    ratio = report.get("ratio_median")
    size = report.get("file_bytes")
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    xs = range(len(runs))
    width = 0.38
    ax.bar([x - width / 2 for x in xs], direct, width, label="direct (upload-direct)")
    ax.bar([x + width / 2 for x in xs], mesh, width, label="mesh (hub -> agent -> simulator)")
    ax.set_xticks(list(xs), [f"run {x + 1}" for x in xs])
    ax.set_ylabel("MB/s")
    title = "Upload throughput, direct vs mesh"
    if size:
        title += f" ({int(size) / 1e6:,.0f} MB file)"
    if ratio is not None:
        title += f"\nmedian ratio mesh/direct {float(ratio):.2f}"
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["reconnect", "throughput"])
    parser.add_argument("json_file", type=Path)
    parser.add_argument("--out", type=Path, default=None,
                        help="PNG path (default docs/bench/<kind>.png)")
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.json_file.read_text())
    except (OSError, ValueError) as exc:
        print(f"plot: cannot read {args.json_file}: {exc}", file=sys.stderr)
        return 2
    draw = reconnect_figure if args.kind == "reconnect" else throughput_figure
    try:
        fig = draw(report)
    except PlotInputError as exc:
        print(f"plot: {args.json_file}: {exc}", file=sys.stderr)
        return 2
    out = args.out or DOCS / f"{args.kind}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
