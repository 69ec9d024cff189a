"""Collections (合集): the account's seasons, and adding an archive to a section of one.

Routes (cookies; writes also ``csrf`` in the query or the body):
- ``GET /x2/creative/web/seasons?pn=&ps=``: the account's collections with
  their sections (``{"data":{"seasons":[{"season","sections":{"sections"},
  "part_episodes"}],"total"}}``);
- ``POST /x2/creative/web/season/section/episodes/add`` with
  ``{"sectionId","episodes":[{"aid","cid","title","charging_pay"?}]}``: each
  archive must be the caller's and ``cid`` one of its videos; an archive
  already in a collection answers 20080; a section that is not the caller's
  -404. A body with only snake_case keys (``section_id``, ``episode``) answers
  code 0 and changes nothing, as users report of the real endpoint. With
  ``archive.season_needs_approval``, an archive not approved yet is refused
  (-400; unconfirmed, the real code is not known).

Controls: ``POST /_sim/seasons`` ``{"title", "mid"?, "sections"?}`` creates a
collection (first section 正片) and answers it; ``GET /_sim/seasons`` lists them
with their episodes.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from uploader.sim import replies, review
from uploader.sim.accounts import BUILTIN_MID
from uploader.sim.callers import Refusal, cookie_account, web_account
from uploader.sim.facts import BAD_REQUEST
from uploader.sim.faults import Faults
from uploader.sim.inbound import clamped_int, client_ip
from uploader.sim.state import SimState


def _bad(problem: str) -> Refusal:
    return Refusal(-400, f"{BAD_REQUEST}: {problem}")


class Seasons:
    def __init__(self, state: SimState, faults: Faults) -> None:
        self.state = state
        self.faults = faults

    def routes(self) -> list[Route]:
        return [
            Route("/x2/creative/web/seasons", self.seasons, methods=["GET"]),
            Route(
                "/x2/creative/web/season/section/episodes/add", self.add, methods=["POST"]
            ),
            Route("/_sim/seasons", self.get_seasons, methods=["GET"]),
            Route("/_sim/seasons", self.post_season, methods=["POST"]),
        ]

    async def seasons(self, request: Request) -> Response:
        ip = client_ip(request)
        state = self.state
        injected = await self.faults.injected(request, "season", state.take_rule("season", ip))
        if injected is not None:
            return injected
        account = cookie_account(state, request)
        if isinstance(account, Refusal):
            state.record("season", ip, status=200, code=account.code)
            return replies.api_reply(account.code)
        pn = clamped_int(request.query_params.get("pn"), 1, 1, 10_000)
        ps = clamped_int(request.query_params.get("ps"), 30, 1, 50)
        mine = [s for s in reversed(state.seasons) if s["mid"] == account.mid]
        state.record("season", ip, status=200, code=0)
        return replies.season_list(mine[(pn - 1) * ps : pn * ps], total=len(mine))

    async def add(self, request: Request) -> Response:
        ip = client_ip(request)
        rule = self.state.take_rule("season", ip)
        injected = await self.faults.injected(request, "season", rule, body_first=True)
        if injected is not None:
            return injected
        outcome = await self._add(request)
        code = 0 if outcome is None else outcome.code
        self.state.record("season", ip, status=200, code=code)
        response = (
            replies.episodes_added()
            if outcome is None
            else replies.api_reply(outcome.code, outcome.message)
        )
        return await self.faults.answer(request, rule, response)

    async def _add(self, request: Request) -> Refusal | None:
        state = self.state
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            body = None
        account = web_account(state, request, body if isinstance(body, dict) else {})
        if isinstance(account, Refusal):
            return account
        if not isinstance(body, dict):
            return _bad("body must be a JSON object")
        if "sectionId" not in body:
            return None if "section_id" in body else _bad("sectionId is required")
        found = state.section(body["sectionId"]) if isinstance(body["sectionId"], int) else None
        if found is None or found[0]["mid"] != account.mid:
            return Refusal(-404)
        season, section = found
        episodes = body.get("episodes")
        if not isinstance(episodes, list) or not episodes:
            return _bad("episodes must be a non-empty list")
        now = time.time()
        adding: list[dict[str, Any]] = []
        for index, episode in enumerate(episodes):
            checked = self._check(episode, index, account.mid, now, adding)
            if isinstance(checked, Refusal):
                return checked
            adding.append(checked)
        for episode in adding:
            episode.update(season_id=season["season_id"], section_id=section["section_id"],
                           episode_id=state.next_season_id, time=now)  # fmt: skip
            state.next_season_id += 1
            section["episodes"].append(episode)
            record = state.archive(aid=episode["aid"])
            assert record is not None
            record["season"] = {"season_id": season["season_id"],
                                "section_id": section["section_id"]}  # fmt: skip
        return None

    def _check(
        self, episode: Any, index: int, mid: int, now: float, adding: list[dict[str, Any]]
    ) -> dict[str, Any] | Refusal:
        if not isinstance(episode, dict):
            return _bad(f"episodes[{index}] must be an object")
        aid, cid, title = episode.get("aid"), episode.get("cid"), episode.get("title")
        record = self.state.archive(aid=aid) if isinstance(aid, int) else None
        if record is None or record["mid"] != mid:
            return _bad(f"episodes[{index}].aid {aid!r} is not an archive of this account")
        if cid not in {v["cid"] for v in record["videos"]}:
            return _bad(f"episodes[{index}].cid {cid!r} is not a video of archive {aid}")
        if not isinstance(title, str) or not title.strip():
            return _bad(f"episodes[{index}].title is required")
        if self.state.episode_of(aid) is not None or any(e["aid"] == aid for e in adding):
            return Refusal(20080)
        config = self.state.config.archive
        verdict = review.status(record, now, config.review.reason_field)["verdict"]
        if config.season_needs_approval and verdict not in ("approved", "scheduled"):
            return _bad(f"archive {aid} has not passed review yet")
        return {"aid": aid, "bvid": record["bvid"], "cid": cid, "title": title}

    async def get_seasons(self, request: Request) -> Response:
        return replies.control_ok({"seasons": self.state.seasons})

    async def post_season(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return replies.control_error("body is not valid JSON")
        if not isinstance(body, dict):
            return replies.control_error("(top level): expected a JSON object")
        unknown = set(body) - {"title", "mid", "sections"}
        if unknown:
            return replies.control_error(f"{sorted(unknown)[0]}: unknown field")
        title, mid = body.get("title", "合集"), body.get("mid", BUILTIN_MID)
        sections = body.get("sections", 1)
        if not isinstance(title, str) or not title:
            return replies.control_error("title: expected a non-empty str")
        for key, value in (("mid", mid), ("sections", sections)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                return replies.control_error(f"{key}: expected a positive int")
        season = self.state.new_season(mid, title, sections)
        return replies.control_ok({"season": season})
