"""Submit operations on an archive that exists: append late parts, join a collection, read review.

Each is safe to repeat, which is what lets the hub retry one whose answer was
lost without a lookup of its own:

- ``append``: :func:`uploader.archive.append_parts` views the archive and edits
  it only for the videos it lacks, so a repeat after a lost answer adds nothing.
- ``season``: :func:`uploader.seasons.add_to_season`; an archive already in the
  collection is success.
- ``review``: reads only. The newest page of the account's archive list gives
  many states in one request; an archive beyond it is viewed on its own. An
  archive the view does not know (-404) is left out of the answer: the hub keeps
  it pending rather than guess.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from protocol import mesh_pb2 as pb
from uploader import limits
from uploader.archive import ReviewState, append_parts, view_archive
from uploader.archive_list import list_reviews
from uploader.errors import ArchiveProblem, ErrorKind, UploadError, archive_problem
from uploader.seasons import add_to_season
from uploader.submit import Submission

log = logging.getLogger("bupmesh.agent")

ADD, APPEND, SEASON, REVIEW = "add", "append", "season", "review"
OPERATIONS = frozenset({ADD, APPEND, SEASON, REVIEW})
MAX_REVIEW_AIDS = 100  # archives one review request may ask about


def _needs_aid(msg: pb.Submit) -> None:
    if msg.aid <= 0:
        raise UploadError(ErrorKind.BAD_REQUEST, f"operation {msg.operation} needs an aid")


async def append(client: Any, msg: pb.Submit, submission: Submission) -> pb.SubmitResult:
    """Add ``submission.videos`` to archive ``msg.aid`` where it lacks them."""
    _needs_aid(msg)
    if not submission.videos:
        raise UploadError(ErrorKind.BAD_REQUEST, "append needs at least one video")
    limit = msg.parts_per_request or limits.PARTS_PER_REQUEST
    settings = msgspec.structs.replace(submission, videos=[])
    result = await append_parts(client, msg.aid, submission.videos, settings=settings,
                                limit=limit)
    log.info("submit %s: archive %s has %d video(s); this call added %d", msg.submit_id,
             result.bvid, result.videos, len(result.added))
    return pb.SubmitResult(submit_id=msg.submit_id, attempt=msg.attempt, success=True,
                           aid=result.aid, bvid=result.bvid, added=result.added,
                           videos=result.videos)


async def season(client: Any, msg: pb.Submit, submission: Submission) -> pb.SubmitResult:
    """Put archive ``msg.aid`` into collection ``msg.season_id``."""
    _needs_aid(msg)
    if msg.season_id <= 0:
        raise UploadError(ErrorKind.BAD_REQUEST, "season needs a season_id")
    first_cid = submission.videos[0].cid if submission.videos else 0
    added = await add_to_season(client, aid=msg.aid, title=limits.cut(submission.title),
                                cid=first_cid or None, season_id=msg.season_id,
                                section_id=msg.section_id or None)
    log.info("submit %s: archive %d %s collection %d (section %d)", msg.submit_id, msg.aid,
             "joined" if added.added else "was already in", added.season_id, added.section_id)
    return pb.SubmitResult(submit_id=msg.submit_id, attempt=msg.attempt, success=True,
                           aid=msg.aid)


def _review_message(aid: int, bvid: str, state: ReviewState) -> pb.ArchiveReview:
    return pb.ArchiveReview(aid=aid, bvid=bvid, review=state.review.value, state=state.state,
                            state_desc=state.desc, reason=state.reason)


async def review(client: Any, msg: pb.Submit) -> pb.SubmitResult:
    """The review state of each archive in ``msg.review_aids`` that Bilibili shows."""
    aids = list(dict.fromkeys(a for a in msg.review_aids if a > 0))[:MAX_REVIEW_AIDS]
    listed = await list_reviews(client)
    answers = [_review_message(aid, "", listed[aid]) for aid in aids if aid in listed]
    for aid in (a for a in aids if a not in listed):
        try:
            view = await view_archive(client, aid=aid)
        except UploadError as exc:
            if archive_problem(exc) is ArchiveProblem.NO_SUCH_ARCHIVE:
                log.warning("submit %s: archive %d is not among this account's", msg.submit_id,
                            aid)
                continue
            raise
        answers.append(_review_message(aid, view.bvid, view.review))
    return pb.SubmitResult(submit_id=msg.submit_id, attempt=msg.attempt, success=True,
                           reviews=answers)
