"""The creative centre's archive list: finding a lost submission's archive, and review states in bulk.

``GET {member}/x/web/archives?status=is_pubing,pubed,not_pubed&pn=&ps=`` with the
cookies -> ``{"code":0,"data":{"arc_audits":[{"Archive":{"aid","bvid","title",
"state","state_desc","reject_reason","ctime",...},"Videos":[{"filename","cid",...}]
| null}],"page":{"pn","ps","count"}}}``, newest first.

Whether ``Videos`` carries the part list is not confirmed by public sources (a
sibling endpoint, ``x2/creative/web/archives/sp``, answers ``"Videos": null``).
So :func:`find_archive` holds either way: where the list names the videos it
decides from them; where it does not, archives with the wanted title (and
created after ``since``) are candidates, each confirmed by
:func:`uploader.archive.view_archive`, which does list file names.
"""

from __future__ import annotations

from typing import Any

import msgspec

from uploader import limits
from uploader.archive import ReviewState, review_of, view_archive
from uploader.client import BiliClient
from uploader.errors import ArchiveProblem, ErrorKind, UploadError, archive_problem
from uploader.submit import SubmitResult

ARCHIVE_PAGE_SIZE = 20
ARCHIVE_PAGES = 5  # the newest 100 archives: a lost submission is minutes old
MAX_CONFIRMATIONS = 10  # archive views one lookup may spend on candidates
TIME_SLACK = 600.0  # clocks differ; an archive this much older than `since` still counts


class ListedArchive(msgspec.Struct, frozen=True, kw_only=True):
    aid: int
    bvid: str
    title: str
    ctime: int  # 0 when the list does not say
    review: ReviewState
    filenames: frozenset[str] | None  # None: the list carries no part list for it


def _int(value: Any) -> int:
    try:
        return int(value) if not isinstance(value, bool) else 0
    except (TypeError, ValueError):
        return 0


def parse_page(payload: Any) -> list[ListedArchive]:
    """One ``x/web/archives`` reply -> its archives, newest first (pure)."""
    data = payload.get("data") if isinstance(payload, dict) else None
    audits = (data or {}).get("arc_audits") if isinstance(data, dict) else None
    if audits is None:
        return []
    if not isinstance(audits, list):
        raise UploadError(ErrorKind.BAD_REQUEST, "malformed reply on archives")
    listed = []
    for item in audits:
        archive = item.get("Archive") if isinstance(item, dict) else None
        if not isinstance(archive, dict) or _int(archive.get("aid")) <= 0:
            continue
        videos = item.get("Videos")
        names: frozenset[str] | None = None
        if isinstance(videos, list) and videos:
            found = [v.get("filename") for v in videos if isinstance(v, dict)]
            if len(found) == len(videos) and all(isinstance(n, str) and n for n in found):
                names = frozenset(found)
        listed.append(
            ListedArchive(
                aid=_int(archive.get("aid")),
                bvid=str(archive.get("bvid") or ""),
                title=str(archive.get("title") or ""),
                ctime=_int(archive.get("ctime")),
                review=review_of(
                    _int(archive.get("state")) if "state" in archive else -1,
                    str(archive.get("state_desc") or ""),
                    str(archive.get("reject_reason") or ""),
                ),
                filenames=names,
            )
        )
    return listed


async def list_page(client: BiliClient, page: int, size: int = ARCHIVE_PAGE_SIZE
                    ) -> list[ListedArchive]:  # fmt: skip
    payload = await client.call(
        "archives", "GET", client.member("x/web/archives"), with_cookies=True,
        params={"status": "is_pubing,pubed,not_pubed", "pn": page, "ps": size,
                "coop": 1, "interactive": 1},
    )  # fmt: skip
    return parse_page(payload)


async def list_reviews(client: BiliClient, pages: int = 1) -> dict[int, ReviewState]:
    """Review states of the newest ``pages`` pages of archives, one request per 20 archives.

    Cheaper than a view per archive when many are waiting; an archive beyond
    these pages is polled with :func:`uploader.archive.view_archive`.
    """
    states: dict[int, ReviewState] = {}
    for page in range(1, pages + 1):
        listed = await list_page(client, page)
        states.update((item.aid, item.review) for item in listed)
        if len(listed) < ARCHIVE_PAGE_SIZE:
            break
    return states


async def find_archive(
    client: BiliClient,
    filenames: list[str],
    *,
    title: str | None = None,
    since: float | None = None,
    confirm_limit: int = MAX_CONFIRMATIONS,
) -> SubmitResult | None:
    """The account's archive whose videos are exactly ``filenames``, if one exists.

    Used before submitting again when an earlier attempt's answer was lost.
    ``title`` (the submitted title; cut as submission cuts it) and ``since``
    (unix time of the first attempt) narrow the candidates an archive view
    must confirm when the list carries no part lists; without them every
    listed archive is a candidate. More candidates than ``confirm_limit`` is
    a ``bad_request``: answering "not found" could submit a second archive.
    """
    wanted = frozenset(filenames)
    want_title = limits.cut(title.strip()) if title is not None else None
    unconfirmed: list[ListedArchive] = []
    for page in range(1, ARCHIVE_PAGES + 1):
        listed = await list_page(client, page)
        for item in listed:
            if item.filenames is not None:
                if item.filenames == wanted:
                    return SubmitResult(aid=item.aid, bvid=item.bvid)
                continue
            if want_title is not None and item.title.strip() != want_title:
                continue
            if since is not None and item.ctime and item.ctime < since - TIME_SLACK:
                continue
            unconfirmed.append(item)
        if len(listed) < ARCHIVE_PAGE_SIZE:
            break
    if len(unconfirmed) > confirm_limit:
        raise UploadError(
            ErrorKind.BAD_REQUEST,
            f"{len(unconfirmed)} archives could be this submission and the list carries no "
            f"part lists; confirming more than {confirm_limit} is refused (narrow by title)",
        )
    for item in unconfirmed:
        try:
            view = await view_archive(client, aid=item.aid)
        except UploadError as exc:
            if archive_problem(exc) is ArchiveProblem.NO_SUCH_ARCHIVE:
                continue  # deleted, or not visible to the creative centre yet
            raise
        if frozenset(view.filenames) == wanted:
            return SubmitResult(aid=view.aid, bvid=view.bvid or item.bvid)
    return None
