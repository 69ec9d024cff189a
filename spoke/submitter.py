"""The agent's side of Submit: archive writes and reads from this agent's egress IP.

One ``Submit`` -> exactly one ``SubmitResult``. The credentials live only in
this coroutine and are gone when it returns. ``Submit.operation`` says what to
do (:mod:`spoke.archive_ops` runs the operations on an existing archive):

- ``add`` (or empty): submit a new archive, its cover uploaded first. For
  ``attempt > 1`` the hub does not know whether an earlier attempt reached
  Bilibili (its answer was lost with a stream or a hub restart), so the agent
  first looks for an archive holding exactly these server file names
  (:func:`uploader.archive_list.find_archive`, narrowed by title and the first
  attempt's time) and answers with it instead of submitting a second time.
- ``append``, ``season``, ``review``: see :mod:`spoke.archive_ops`.

A refused archive write answers with its Bilibili ``error_code`` and its
``problem`` (:class:`uploader.errors.ArchiveProblem`), so the hub splits the
parts, or stops and says what to change, without parsing messages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec

from protocol import mesh_pb2 as pb
from spoke.archive_ops import ADD, OPERATIONS, append, review, season
from uploader.archive_list import find_archive
from uploader.client import BiliClient
from uploader.covers import upload_cover
from uploader.credentials import Credentials, CredentialsError
from uploader.errors import ErrorKind, UploadError, archive_problem
from uploader.submit import Submission, submit_app, submit_web

log = logging.getLogger("bupmesh.agent")

AGENT_ERROR = "agent"
SUBMIT_LIMIT = 90.0  # one Submit (archive lookup + submission), whatever the stream does
SUBMIT_LIMIT_MAX = 600.0  # the most a hub's Submit.deadline_seconds may ask for


def submit_time_left(msg: pb.Submit, now: float) -> float:
    """How long this agent may spend on a Submit (<= 0: do not start it).

    The hub's deadline when it set one: it waits past it before retrying a lost
    answer, so running longer could race that retry. Counted from when the hub sent
    it (its wall clock; the hub's wait adds a margin for skew): a Submit delivered
    late, through a half-open link that healed, gets only what is left.
    """
    if msg.deadline_seconds <= 0:
        return SUBMIT_LIMIT
    limit = min(msg.deadline_seconds, SUBMIT_LIMIT_MAX)
    if msg.sent_at_unix > 0:
        limit = min(limit, msg.sent_at_unix + msg.deadline_seconds - now)
    return limit


def failure_of(msg: pb.Submit, exc: UploadError) -> pb.SubmitResult:
    """A classified failure with what the hub acts on: Bilibili's code, the archive problem
    (split, shorten, stop), and for account throttles a captcha voucher or a known wait."""
    problem = archive_problem(exc)
    return pb.SubmitResult(submit_id=msg.submit_id, attempt=msg.attempt, success=False,
                           error_kind=exc.kind.value, error_message=exc.message[:1000],
                           error_code=exc.code or 0, voucher=exc.voucher or "",
                           retry_after_seconds=exc.retry_after or 0.0,
                           problem=problem.value if problem is not None else "")


async def execute(
    msg: pb.Submit,
    *,
    source_ip: str | None = None,
    proxy: str | None = None,
    client_factory: Callable[..., Any] = BiliClient,
) -> pb.SubmitResult:
    """Run one Submit; never raises (every failure is a SubmitResult)."""

    def failure(kind: str, message: str) -> pb.SubmitResult:
        return pb.SubmitResult(submit_id=msg.submit_id, attempt=msg.attempt, success=False,
                               error_kind=kind, error_message=message[:1000])

    operation = msg.operation or ADD
    if operation not in OPERATIONS:
        return failure(ErrorKind.BAD_REQUEST.value, f"unknown submit operation {operation!r}")
    try:
        creds = msg.credentials
        credentials = Credentials.from_cookie_string(
            creds.cookies, access_key=creds.access_key or None, mid=creds.mid or None)
    except CredentialsError as exc:
        return failure(ErrorKind.AUTH.value, f"credentials unusable: {exc}")
    try:
        submission = msgspec.json.decode(msg.submission, type=Submission)
    except msgspec.DecodeError as exc:
        return failure(ErrorKind.BAD_REQUEST.value, f"submission unreadable: {exc}")
    api = msg.api or "web"
    if api not in ("web", "app"):
        return failure(ErrorKind.BAD_REQUEST.value, f"unknown submit api {api!r}")
    try:
        client_cm = client_factory(credentials, member_url=msg.member_url, source_ip=source_ip,
                                   proxy=proxy)
    except ValueError as exc:
        return failure(ErrorKind.BAD_REQUEST.value, f"submit unusable: {exc}")
    try:
        async with client_cm as client:
            if operation == ADD:
                return await _add(client, msg, submission, api)
            if operation == "append":
                return await append(client, msg, submission)
            if operation == "season":
                return await season(client, msg, submission)
            return await review(client, msg)
    except UploadError as exc:
        return failure_of(msg, exc)
    except Exception as exc:  # a bug here must still answer the hub exactly once
        log.exception("submit %s failed unexpectedly", msg.submit_id)
        return failure(AGENT_ERROR, f"{type(exc).__name__}: {exc}")
    finally:
        del credentials


async def _add(client: Any, msg: pb.Submit, submission: Submission, api: str
               ) -> pb.SubmitResult:
    if msg.attempt > 1:
        found = await find_archive(client, [v.filename for v in submission.videos],
                                   title=submission.title,
                                   since=msg.since_unix if msg.since_unix > 0 else None)
        if found is not None:
            log.info("submit %s attempt %d: already submitted as %s", msg.submit_id,
                     msg.attempt, found.bvid)
            return pb.SubmitResult(submit_id=msg.submit_id, attempt=msg.attempt, success=True,
                                   aid=found.aid, bvid=found.bvid)
    if msg.cover:
        # From this IP, like the submission: the cover is part of the same archive write.
        url = await upload_cover(client, msg.cover)
        submission = msgspec.structs.replace(submission, cover=url)
    submit = submit_web if api == "web" else submit_app
    result = await submit(client, submission)
    log.info("submit %s attempt %d: archive %s", msg.submit_id, msg.attempt, result.bvid)
    return pb.SubmitResult(submit_id=msg.submit_id, attempt=msg.attempt, success=True,
                           aid=result.aid, bvid=result.bvid)
