"""Collections (合集): putting an archive into one of the account's seasons, once it exists.

A season holds sections (小节); an archive joins a section, so a season id
alone is first resolved to its section:

- ``GET {member}/x2/creative/web/seasons?pn=&ps=`` (cookies) lists the
  account's seasons, ``{"data":{"seasons":[{"season":{"id","title",...},
  "sections":{"sections":[{"id","seasonId","title","state",...}]}}],"total"}}``;
  a season without sections of its own still has one (正片), and gobup picks
  the first whose ``state`` is 0.
- ``POST {member}/x2/creative/web/season/section/episodes/add?csrf=`` (cookies)
  with the JSON ``{"sectionId","episodes":[{"aid","cid","title","charging_pay":0}],
  "csrf"}`` adds it. The keys are camelCase: users report that snake_case
  (``section_id``, ``episode``) answers code 0 and changes nothing. An archive
  already in the collection answers 20080, which is success here.

Sources: bilibili-API-collect ``docs/creativecenter/season.md``, gobup's
season list parsing, and several public clients sending the add body above.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from uploader.archive import view_archive
from uploader.client import BiliClient
from uploader.errors import (
    ArchiveError,
    ArchiveProblem,
    ErrorKind,
    UploadError,
    archive_problem,
)

SEASON_PAGE_SIZE = 30
SEASON_PAGES = 10


class SeasonAdd(msgspec.Struct, frozen=True, kw_only=True):
    season_id: int
    section_id: int
    added: bool  # False: the archive was in the collection already


def pick_section(payload: Any, season_id: int) -> int | None:
    """The section an archive of ``season_id`` joins, from one seasons-list page (pure)."""
    data = payload.get("data") if isinstance(payload, dict) else None
    seasons = data.get("seasons") if isinstance(data, dict) else None
    for item in seasons if isinstance(seasons, list) else []:
        season = item.get("season") if isinstance(item, dict) else None
        if not isinstance(season, dict) or season.get("id") != season_id:
            continue
        holder = item.get("sections")
        sections = holder.get("sections") if isinstance(holder, dict) else None
        candidates = [s for s in sections or [] if isinstance(s, dict) and s.get("id")]
        healthy = [s for s in candidates if s.get("state", 0) == 0]
        chosen = (healthy or candidates or [None])[0]
        return int(chosen["id"]) if chosen else None
    return None


def _page_count(payload: Any) -> int:
    data = payload.get("data") if isinstance(payload, dict) else None
    seasons = data.get("seasons") if isinstance(data, dict) else None
    return len(seasons) if isinstance(seasons, list) else 0


async def section_of(client: BiliClient, season_id: int) -> int:
    """The section of ``season_id`` new archives join; ``season_not_found`` when it has none."""
    for page in range(1, SEASON_PAGES + 1):
        payload = await client.call(
            "season", "GET", client.member("x2/creative/web/seasons"), with_cookies=True,
            params={"pn": page, "ps": SEASON_PAGE_SIZE, "order": "mtime", "sort": "desc"},
        )  # fmt: skip
        section = pick_section(payload, season_id)
        if section is not None:
            return section
        if _page_count(payload) < SEASON_PAGE_SIZE:
            break
    raise ArchiveError(
        ArchiveProblem.SEASON_NOT_FOUND,
        f"collection {season_id} (or a section of it) is not among this account's collections",
    )


async def add_to_season(
    client: BiliClient,
    *,
    aid: int,
    title: str,
    cid: int | None = None,
    season_id: int,
    section_id: int | None = None,
    now: Callable[[], float] = time.time,
) -> SeasonAdd:
    """Put archive ``aid`` (its first video's ``cid``, listed as ``title``) into a collection.

    Without ``cid`` the archive's view says which (one more request). Safe to
    repeat: an archive already there is success with ``added=False``.
    """
    if not title.strip():
        raise UploadError(ErrorKind.BAD_REQUEST, "a collection episode needs a title")
    if cid is None:
        view = await view_archive(client, aid=aid)
        if not view.videos:
            raise UploadError(ErrorKind.BAD_REQUEST, f"archive {aid} shows no videos yet")
        cid = view.videos[0].cid
    if section_id is None:
        section_id = await section_of(client, season_id)
    csrf = client.csrf()
    body = {
        "sectionId": section_id,
        "episodes": [{"aid": aid, "cid": cid, "title": title, "charging_pay": 0}],
        "csrf": csrf,
    }
    try:
        await client.call(
            "season", "POST",
            client.member("x2/creative/web/season/section/episodes/add"),
            params={"t": int(now() * 1000), "csrf": csrf}, json=body, with_cookies=True,
        )  # fmt: skip
    except UploadError as exc:
        if archive_problem(exc) is ArchiveProblem.ALREADY_IN_SEASON:
            return SeasonAdd(season_id=season_id, section_id=section_id, added=False)
        raise
    return SeasonAdd(season_id=season_id, section_id=section_id, added=True)
