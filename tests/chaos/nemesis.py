"""The nemesis: carries out a chaos plan's faults on a running mesh, and undoes them all.

Each :class:`tests.chaos.schedule.Fault` becomes an action at its time and, for a
window, its undoing at the end (:meth:`Nemesis.actions`); :meth:`Nemesis.heal`
undoes whatever is left when the plan is over. What it touches:

* processes: SIGKILL and restart an agent or the hub;
* each agent's link to the hub, through its own
  :class:`tests.support.faultproxy.FaultProxy`: resets, blackholes, latency, caps;
* the simulator (``/_sim/config``): 5xx, delays, 406 for an IP, per-IP caps and
  ``fail_next`` rules, and Bilibili as users report it: captchas (601 held until
  solved), sessions bound to their IP or expiring, per-account submission
  limits (21566, 137022) and a closed submission route (21590);
* the address an agent's Bilibili traffic leaves from: agents the plan moves run
  their Bilibili traffic through their own :class:`tests.support.httpproxy.HttpProxy`,
  whose outgoing address the nemesis changes mid-run.

A captcha window ends the way an admin ends one: solved where Bilibili asks (the
simulator's ``/_sim/captcha/{voucher}/solve``), then marked solved in the hub
(``POST /api/manage/captchas/{voucher}/solved``). Every action is logged with its
real time.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bupmesh.localmesh import LocalMesh, MeshError, Process
from tests.chaos import schedule as S
from tests.support.faultproxy import FaultProxy
from tests.support.httpproxy import HttpProxy

BASE_BANDWIDTH = 4 * 1024 * 1024  # per source IP: uploads last long enough to be hit
CAPTCHA_WINDOW = 10.0  # seconds over which a captcha window's budget counts
SUBMIT_WINDOW = 10.0  # seconds over which 137022's count runs
# Bilibili as it behaves between faults: no budget, 406 if anything, no binding.
HONEST_RISK = {"always_406": [], "preupload_budget": 0, "key": "ip", "reply": "406",
               "until_solved": False, "hold_seconds": 0.0}
HONEST_UPOS = {"binding": "off", "auth_lifetime_seconds": 0.0}
HONEST_SUBMIT = {"min_gap_seconds": 0.0, "max_per_window": 0, "tool_disabled": [],
                 "cadence_count": 0}


def agent_ip(index: int) -> str:
    return f"127.0.0.{index + 1}"


def moved_ip(index: int) -> str:
    """Where agent ``index``'s Bilibili traffic leaves from while an egress change lasts."""
    return f"127.0.0.{index + 21}"


@dataclass
class Nemesis:
    """Carries out a plan on a running mesh; every action is logged with its real time."""

    mesh: LocalMesh
    proxies: dict[int, FaultProxy]
    agent_args: dict[int, tuple[str, ...]]
    admin: Callable[..., Any]  # the hub's admin API: (method, path, **httpx kwargs) -> data
    egress: dict[int, HttpProxy] = field(default_factory=dict)  # agents that move
    log: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    t0: float = 0.0
    killed_agents: set[int] = field(default_factory=set)
    hub_down: bool = False
    captchas_solved: int = 0

    def note(self, text: str) -> None:
        self.log.append(f"{time.monotonic() - self.t0:7.2f}s  {text}")

    # -- processes ------------------------------------------------------------------------------

    def _latest(self, name: str) -> Process:
        return next(p for p in reversed(self.mesh.processes) if p.name == name)

    def start_agent(self, index: int) -> None:
        proxy = self.egress.get(index)
        self.mesh.start_agent(index, *self.agent_args[index],
                              proxy=proxy.url if proxy is not None else None)

    def kill_agent(self, index: int) -> None:
        self._latest(f"agent-{index}").kill()
        self.killed_agents.add(index)

    def restart_agent(self, index: int) -> None:
        if index in self.killed_agents:
            self._latest(f"agent-{index}").stop()  # closes the dead one's log handle
            self.start_agent(index)
            self.killed_agents.discard(index)

    def kill_hub(self) -> None:
        hub = self._latest("hub")
        hub.kill()
        hub.stop()
        self.hub_down = True

    def start_hub(self) -> None:
        if not self.hub_down:
            return
        for attempt in itertools.count(1):  # the port may linger a moment after SIGKILL
            try:
                self.mesh.restart_hub()
                break
            except MeshError as exc:
                if attempt >= 3:
                    raise
                self.note(f"hub restart failed ({exc!s:.200}), trying again")
                time.sleep(1)
        self.hub_down = False

    # -- simulator ------------------------------------------------------------------------------

    def sim_config(self, body: dict[str, Any]) -> None:
        self.mesh.sim("POST", "/_sim/config", json=body)

    def sim_faults(self, **faults: Any) -> None:
        self.sim_config({"faults": faults})

    def sim_406(self, ip: str, on: bool) -> None:
        current = set(self.mesh.sim("GET", "/_sim/config")["risk"]["always_406"])
        current = current | {ip} if on else current - {ip}
        self.sim_config({"risk": {"always_406": sorted(current)}})

    def sim_fail_next(self, rule: dict[str, Any]) -> None:
        # Lists are replaced by a POST: append to what is left of the current rules.
        rules = self.mesh.sim("GET", "/_sim/config")["faults"]["fail_next"]
        self.sim_faults(fail_next=[*rules, rule])

    def captcha_window(self, budget: int, key: str) -> None:
        self.sim_config({"risk": {"preupload_budget": budget, "window_seconds": CAPTCHA_WINDOW,
                                  "key": key, "reply": "601", "until_solved": True}})

    def end_captchas(self, *, hub: bool) -> None:
        """Budget off, every throttle's captcha solved at Bilibili, then marked solved in the
        hub (``hub=False`` while the hub may be down: the heal step marks what is left)."""
        risk = {k: v for k, v in HONEST_RISK.items() if k != "always_406"}
        self.sim_config({"risk": risk})
        for throttle in self.mesh.sim("GET", "/_sim/risk")["throttled"]:
            voucher = throttle.get("voucher")
            if voucher:
                self.mesh.sim("POST", f"/_sim/captcha/{voucher}/solve")
                self.captchas_solved += 1
                self.note(f"  solved captcha {voucher} ({throttle['ip']}, {throttle['mid']})")
        if hub and not self.hub_down:
            self.mark_captchas_solved()

    def mark_captchas_solved(self) -> None:
        for row in self.admin("GET", "/api/manage/captchas")["captchas"]:
            if row["open"]:
                self.admin("POST", f"/api/manage/captchas/{row['voucher']}/solved")
                self.note(f"  marked captcha {row['voucher']} solved in the hub")

    def move_egress(self, index: int, moved: bool) -> None:
        self.egress[index].egress = moved_ip(index) if moved else agent_ip(index)

    # -- one fault ------------------------------------------------------------------------------

    def actions(self, fault: S.Fault) -> list[tuple[float, str, Callable[[], None]]]:
        """(when, what, do) for the start of ``fault`` and, if windowed, its undoing."""
        i = fault.agent
        proxy = self.proxies[i] if i is not None else None
        ip = agent_ip(i) if i is not None else ""
        start: Callable[[], None]
        undo: Callable[[], None] | None = None
        k, v = fault.kind, fault.value
        if k == S.KILL_AGENT:
            start, undo = (lambda: self.kill_agent(i)), (lambda: self.restart_agent(i))
        elif k == S.CUT_LINK:
            start = lambda: self.note(f"  cut {proxy.cut()} connections")  # noqa: E731
        elif k == S.CUT_ALL_LINKS:
            start = lambda: self.note(  # noqa: E731
                f"  cut {sum(p.cut() for p in self.proxies.values())} connections")
        elif k == S.BLACKHOLE_LINK:
            start, undo = proxy.blackhole, proxy.heal
        elif k == S.LINK_LATENCY:
            start, undo = (lambda: proxy.set_latency(v)), (lambda: proxy.set_latency(0))
        elif k == S.LINK_BANDWIDTH:
            start = lambda: proxy.set_bandwidth(int(v))  # noqa: E731
            undo = lambda: proxy.set_bandwidth(0)  # noqa: E731
        elif k == S.KILL_HUB:
            start, undo = self.kill_hub, self.start_hub
        elif k == S.SIM_5XX_RATE:
            start = lambda: self.sim_faults(status_5xx_rate=v)  # noqa: E731
            undo = lambda: self.sim_faults(status_5xx_rate=0.0)  # noqa: E731
        elif k == S.SIM_DELAY:
            start = lambda: self.sim_faults(delay_seconds=v)  # noqa: E731
            undo = lambda: self.sim_faults(delay_seconds=0.0)  # noqa: E731
        elif k == S.SIM_406:
            start, undo = (lambda: self.sim_406(ip, True)), (lambda: self.sim_406(ip, False))
        elif k == S.SIM_IP_BANDWIDTH:
            start = lambda: self.sim_faults(bandwidth_bps_per_ip={ip: int(v)})  # noqa: E731
            undo = lambda: self.sim_faults(bandwidth_bps_per_ip={ip: BASE_BANDWIDTH})  # noqa: E731
        elif k == S.SIM_FAIL_5XX:
            start = lambda: self.sim_fail_next(  # noqa: E731
                {"op": fault.op, "action": "status", "status": 503, "count": int(v), "ip": ip})
        elif k == S.SIM_DROP_PUT:
            start = lambda: self.sim_fail_next(  # noqa: E731
                {"op": "put", "action": "drop", "count": int(v), "ip": ip})
        elif k == S.SIM_STALL:
            start = lambda: self.sim_fail_next(  # noqa: E731
                {"op": "put", "action": "stall", "seconds": fault.duration, "count": 1, "ip": ip})
        elif k == S.SIM_CAPTCHA:
            start = lambda: self.captcha_window(int(v), fault.op)  # noqa: E731
            undo = lambda: self.end_captchas(hub=True)  # noqa: E731
        elif k == S.SIM_BINDING:
            start = lambda: self.sim_config({"upos": {"binding": "ip"}})  # noqa: E731
            undo = lambda: self.sim_config({"upos": {"binding": "off"}})  # noqa: E731
        elif k == S.SIM_AUTH_LIFETIME:
            start = lambda: self.sim_config({"upos": {"auth_lifetime_seconds": v}})  # noqa: E731
            undo = lambda: self.sim_config({"upos": {"auth_lifetime_seconds": 0.0}})  # noqa: E731
        elif k == S.SIM_SUBMIT_GAP:
            start = lambda: self.sim_config({"submit": {"min_gap_seconds": v}})  # noqa: E731
            undo = lambda: self.sim_config({"submit": {"min_gap_seconds": 0.0}})  # noqa: E731
        elif k == S.SIM_SUBMIT_COUNT:
            start = lambda: self.sim_config(  # noqa: E731
                {"submit": {"max_per_window": int(v), "window_seconds": SUBMIT_WINDOW}})
            undo = lambda: self.sim_config({"submit": {"max_per_window": 0}})  # noqa: E731
        elif k == S.SIM_TOOL_DISABLED:
            start = lambda: self.sim_config({"submit": {"tool_disabled": ["web", "app"]}})  # noqa: E731
            undo = lambda: self.sim_config({"submit": {"tool_disabled": []}})  # noqa: E731
        elif k == S.EGRESS_CHANGE:
            start, undo = (lambda: self.move_egress(i, True)), (lambda: self.move_egress(i, False))
        else:
            raise ValueError(f"unknown fault kind {k!r}")
        who = f" agent-{i}" if i is not None else ""
        out = [(fault.at, f"{k}{who} start", start)]
        if undo is not None:
            out.append((fault.at + fault.duration, f"{k}{who} end", undo))
        return out

    def do(self, what: str, action: Callable[[], None]) -> None:
        self.note(what)
        try:
            action()
        except Exception as exc:  # a nemesis that could not act: the run proves nothing
            self.errors.append(f"{what}: {exc!r}")
            self.note(f"  FAILED: {exc!r}")

    # -- the end --------------------------------------------------------------------------------

    def heal(self) -> None:
        """Undo everything the plan left: processes up, links clean, Bilibili honest again."""
        self.note("heal")
        self.do("heal hub", self.start_hub)
        for index in sorted(self.killed_agents):
            self.do(f"heal agent-{index}", lambda i=index: self.restart_agent(i))
        for proxy in self.proxies.values():
            proxy.heal()
            proxy.set_latency(0)
            proxy.set_bandwidth(0)
        for index in self.egress:
            self.move_egress(index, False)
        self.do("heal simulator", lambda: self.sim_config({
            "risk": HONEST_RISK, "upos": HONEST_UPOS, "submit": HONEST_SUBMIT,
            "faults": {"status_5xx_rate": 0.0, "delay_seconds": 0.0, "drop_put_rate": 0.0,
                       "fail_next": [], "bandwidth_bps_per_ip": {
                           agent_ip(i): BASE_BANDWIDTH for i in self.proxies}},
        }))
        self.do("solve captchas", lambda: self.end_captchas(hub=True))
