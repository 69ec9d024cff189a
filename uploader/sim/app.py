"""The simulator's HTTP face: Bilibili's member, passport and upos routes, and ``/_sim``.

Each route group is a module with one concern; this module only composes them
over one :class:`~uploader.sim.state.SimState`:

- :mod:`uploader.sim.control`: ``/_sim/config``, ``reset``, ``accounts``, the ledgers,
  the risk view and the captcha solver;
- :mod:`uploader.sim.upos`: ``GET /preupload`` and the upos object URLs;
- :mod:`uploader.sim.lines`: the line probes (``/OK``, ``/upcdn/{line}/OK``);
- :mod:`uploader.sim.member`: cover upload, web and app submission;
- :mod:`uploader.sim.edit`: editing an archive (the whole archive, appended parts);
- :mod:`uploader.sim.archives`: the archive list, one archive's view, review controls;
- :mod:`uploader.sim.seasons`: collections and adding archives to them;
- :mod:`uploader.sim.passport`: TV QR login, ``nav``, and the phone under ``/_sim/qr``;
- :mod:`uploader.sim.zone`: ``x/web-interface/zone``, the caller's address.

Status codes and reply bodies follow what real clients and issue threads show
(:mod:`uploader.sim.facts`, shaped in :mod:`uploader.sim.replies`). A new
endpoint goes into the group of its concern (or a new group listed here);
route order only matters for the upos object URLs, two-segment catch-alls
mounted last.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from uploader.sim import replies
from uploader.sim.archives import Archives
from uploader.sim.config import SimConfig
from uploader.sim.control import Control
from uploader.sim.edit import Edit
from uploader.sim.faults import Faults
from uploader.sim.lines import Lines
from uploader.sim.member import Member
from uploader.sim.passport import Passport
from uploader.sim.seasons import Seasons
from uploader.sim.state import SimState
from uploader.sim.upos import Upos
from uploader.sim.zone import Zone


@dataclass(frozen=True)
class Simulator:
    """The simulator's parts, reachable from the app as ``app.state.sim``."""

    state: SimState
    control: Control
    upos: Upos
    lines: Lines
    member: Member
    edit: Edit
    archives: Archives
    seasons: Seasons
    passport: Passport
    zone: Zone


async def client_went_away(request: Request, exc: Exception) -> Response:
    return replies.nobody_listening()


def build_simulator(config: SimConfig | None = None) -> Simulator:
    state = SimState(config or SimConfig())
    faults = Faults(state)
    lines = Lines(state, faults)
    return Simulator(
        state=state,
        control=Control(state),
        upos=Upos(state, faults, lines),
        lines=lines,
        member=Member(state, faults),
        edit=Edit(state, faults),
        archives=Archives(state, faults),
        seasons=Seasons(state, faults),
        passport=Passport(state),
        zone=Zone(state, faults),
    )


def build_app(config: SimConfig | None = None) -> Starlette:
    sim = build_simulator(config)
    routes = [
        *sim.control.routes(),
        *sim.upos.preupload_routes(),
        *sim.lines.routes(),
        *sim.member.routes(),
        *sim.edit.routes(),
        *sim.passport.routes(),
        *sim.archives.routes(),
        *sim.seasons.routes(),
        *sim.zone.routes(),
        *sim.upos.object_routes(),  # last: /{bucket}/{key} would shadow two-segment paths
    ]
    app = Starlette(routes=routes, exception_handlers={ClientDisconnect: client_went_away})
    app.state.sim = sim
    return app
