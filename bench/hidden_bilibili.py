"""Bilibili's side of bench/schedule.py: the risk control the scheduler cannot see.

The hub only ever sees the answers this produces (406, 601 with a voucher,
21566 / 137022 / 21515 on a submission), never the rules. The pieces are the
simulator's own (``uploader/sim/risk.py``: a sliding budget per key, throttles
that last a time or until their captcha is solved, the per-account submission
limits), so the bench and ``bupmesh sim-bili`` model Bilibili the same way.

What users report, and what each model takes from it:

* preupload throttling "from 6 to about 20 uploads an hour, lasting about an
  hour"; reports disagree on whether the IP, the account or the pair is counted.
  Each :class:`RiskModel` picks one key, a budget below the hub's configured cap
  for that key (a guess that is too generous is the likely case with an
  unpublished limit, and the case worth measuring), and how a refusal looks
  (406, or 601 whose captcha someone must solve) and lasts;
* submissions per account, whatever the IP: 21566 when too soon after the
  last one, 137022 after about 15 in a day, 21515 (a sticky penalty) for a
  machine's regular beat (:data:`SUBMIT_RULES`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from uploader.sim.risk import (
    CHEATING,
    TOO_MANY,
    TOO_SOON,
    SlidingBudget,
    SubmissionLimits,
    SubmissionRules,
    Throttles,
)

HOUR = 3600.0
DAY = 86400.0

# Submissions per account: 21566 sooner than 4 min after the last archive (reports see
# it on bursts, never at 5-10 min gaps); 137022 past 14 in a day ("after about 15, ten
# minutes apart"); 21515 for 8 gaps in a row within 30 s of each other (reports: about
# 30 submissions at a fixed 5 min; stricter here, since a penalty is for good).
SUBMIT_RULES = SubmissionRules(min_gap=240.0, max_per_window=14, window=DAY,
                               cadence_count=8, cadence_tolerance=30.0)
THROTTLES = frozenset({TOO_SOON, TOO_MANY})
PENALTIES = frozenset({CHEATING})


@dataclass(frozen=True)
class RiskModel:
    """How Bilibili throttles preuploads: what it counts, how many, and how it refuses."""

    name: str
    key: str  # ip | account | pair
    budget: int  # accepted preuploads per key in any sliding `window`
    reply: str  # "406" | "601" (JSON with a captcha voucher)
    hold: float | None  # how long a refusal lasts; None: until its captcha is solved
    window: float = HOUR

    def describe(self) -> str:
        per = {"ip": "IP", "account": "account", "pair": "(IP, account) pair"}[self.key]
        lasts = ("until its captcha is solved" if self.hold is None
                 else f"for {self.hold / HOUR:g} h")
        return (f"> {self.budget} preuploads per {per} per hour -> {self.reply}, "
                f"throttled {lasts}")


MODELS = {
    # The simulator's default and the bench's original model: a per-IP rate, 406, 2 h.
    "ip": RiskModel("ip", "ip", 4, "406", 2 * HOUR),
    # The same per-IP rate answered the current way: 601 held until its captcha is solved.
    "ip-601": RiskModel("ip-601", "ip", 4, "601", None),
    # The account counts, whatever the IP: more IPs do not help; a 601 that holds
    # until someone solves the captcha (the hub raises an alert naming it).
    "account": RiskModel("account", "account", 10, "601", None),
    # "account + IP together": each pair has its own budget; a 601 that passes in an hour.
    "pair": RiskModel("pair", "pair", 3, "601", HOUR),
}


class HiddenBilibili:
    """Answers preuploads and submissions by one :class:`RiskModel` and :data:`SUBMIT_RULES`."""

    def __init__(self, model: RiskModel, submit_rules: SubmissionRules = SUBMIT_RULES) -> None:
        self.model = model
        self.submit_rules = submit_rules
        self._budget = SlidingBudget()
        self._throttles = Throttles()
        self._submits = SubmissionLimits()
        self._vouchers = itertools.count(1)
        self.refusals = 0  # preuploads refused (406 or 601): the risk events
        self.throttled_submits = 0  # 21566 / 137022
        self.penalties = 0  # 21515 answers
        self.penalised: set[str] = set()  # accounts penalised for good

    def _key(self, ip: str, account: str) -> tuple[str | None, str | None]:
        key = self.model.key
        return (ip, None) if key == "ip" else (None, account) if key == "account" \
            else (ip, account)

    def preupload(self, ip: str, account: str, now: float) -> tuple[int, str] | None:
        """None: accepted (counted); else ``(code, voucher)``: 406 with "" or 601 with one.

        Refused requests are not counted: a throttled key is refused while the
        throttle lasts, then starts with the window it had.
        """
        m = self.model
        key = self._key(ip, account)
        throttle = self._throttles.current(key, now=now)
        if throttle is None:
            if self._budget.allows(key, limit=m.budget, window=m.window, now=now):
                self._budget.count(key, now=now)
                return None
            voucher = f"voucher_{next(self._vouchers)}" if m.reply == "601" else None
            until = None if m.hold is None else now + m.hold
            throttle = self._throttles.start(key, now=now, until=until, voucher=voucher)
        self.refusals += 1
        return (601, throttle.voucher or "") if m.reply == "601" else (406, "")

    def solve(self, voucher: str) -> bool:
        """Someone solved the captcha: its throttle ends and its key's budget starts afresh."""
        throttle = self._throttles.solve(voucher)
        if throttle is None:
            return False
        self._budget.clear(throttle.key)
        return True

    def submit(self, account: str, now: float) -> int | None:
        """None: the archive is accepted; else the code refusing it."""
        code = self._submits.refusal(account, self.submit_rules, now=now)
        if code is None:
            self._submits.count(account, now=now)
        elif code in PENALTIES:
            self.penalties += 1
            self.penalised.add(account)
        else:
            self.throttled_submits += 1
        return code
