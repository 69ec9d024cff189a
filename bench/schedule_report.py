"""The tables bench/schedule.py prints: one model's runs, the target, and the summary.

Reads the runs' ``Result`` fields only (duck-typed: no import of the simulation).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

HOUR = 3600.0


def table(results: Sequence[Any]) -> str:
    """One seed of one model: a row per strategy and ledgers."""
    head = (f"{'strategy (ledgers)':<34} {'risk':>5} {'throttled':>9} {'penalties':>9} "
            f"{'makespan':>9} {'lost':>5} {'re-enabled':>10} {'captchas':>8}  uploads per IP")
    lines = [head, "-" * len(head)]
    for r in results:
        per_ip = "/".join(str(n) for n in r.per_ip.values())
        lines.append(
            f"{r.label:<34} {r.risk_events:>5} {r.account_throttles:>9} {r.penalties:>9} "
            f"{r.makespan / HOUR:>8.1f}h {r.lost:>5} {r.reenabled:>10} {r.captchas:>8}  "
            f"{per_ip}")
    return "\n".join(lines)


def verdict(base: Sequence[Any], best: Sequence[Any]) -> tuple[bool, str]:
    """The target for one model over its seeds: the default against round_robin (IP ledger):
    no penalty, no lost recording, >= 5x fewer risk events, makespan at most 10 % longer
    on every seed."""
    rr = sum(r.risk_events for r in base)
    ipd = sum(r.risk_events for r in best)
    penalties = sum(r.penalties for r in best)
    lost = sum(r.lost for r in best)
    slow = [(r.makespan / b.makespan - 1) * 100 for b, r in zip(base, best, strict=True)
            if b.makespan > 0]
    worst = max(slow, default=0.0)
    ratio = f"x{rr / ipd:.1f}" if ipd else ("n/a" if not rr else "inf")
    met = ipd * 5 <= rr and not penalties and not lost and worst <= 10.0
    return met, (f"risk events {ipd} vs {rr} ({ratio} fewer), penalties {penalties}, "
                 f"lost {lost}, makespan at most {worst:+.1f} % against round_robin "
                 f"-> {'MET' if met else 'NOT MET'}")


def markdown(every: Mapping[str, Mapping[tuple[str, str], Sequence[Any]]],
             runs: Sequence[tuple[str, str]]) -> str:
    """One table per model, a row per strategy and ledgers, totals over the seeds (makespan:
    the mean)."""
    out = []
    for model, by_run in every.items():
        out += [f"Model `{model}`:", "",
                "| strategy (ledgers) | risk events | account throttles | penalties | "
                "makespan (mean) | lost recordings | IP re-enables | captchas solved |",
                "|---|---|---|---|---|---|---|---|"]
        for run in runs:
            rs = by_run[run]
            out.append(
                f"| {rs[0].label} | {sum(r.risk_events for r in rs)} | "
                f"{sum(r.account_throttles for r in rs)} | {sum(r.penalties for r in rs)} | "
                f"{statistics.fmean(r.makespan for r in rs) / HOUR:.1f} h | "
                f"{sum(r.lost for r in rs)} | {sum(r.reenabled for r in rs)} | "
                f"{sum(r.captchas for r in rs)} |")
        out.append("")
    return "\n".join(out).rstrip()
