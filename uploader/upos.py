"""The upos upload flow: preupload, init, concurrent chunk PUTs, completion.

Memory is the point of this module. One reader task fills chunks strictly in
order and hands each to a worker over an unbuffered channel, so at most
``threads`` chunks are in flight and one more is being read:
``(threads + 1) * chunk_size`` bytes, whatever the file size. A chunk lives
only until its PUT succeeds (retries reuse the same bytes; the source is never
read twice), then the source is told to ``release`` it.

Failures are classified (:mod:`uploader.errors`). Network trouble on a request
is retried in place with backoff and jitter; risk control is never retried
here: it is raised at once so the hub can move the work to another IP. A
session upos refuses (403: bound to another address, or its auth too old) is
``session_rejected``: it cannot be resumed, only replaced.

Lines: a configured ``zone_upcdn`` line, or ``auto``: the fastest probe, or,
given a :class:`~uploader.line_choice.LineEstimator` kept across uploads, the
line with the best measured throughput (the probe only seeds it). Every
upload reports what it measured to that estimator.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import msgspec

from uploader.client import BiliClient
from uploader.errors import ErrorKind, StaleSessionError, UploadError
from uploader.line_choice import BusyTime, LineEstimator
from uploader.lines import PROBE_BODY_SIZE, Line, parse_line, probe_lines, select_line
from uploader.pieces import Pieces
from uploader.progress import Progress, ProgressMeter
from uploader.retry import RetryPolicy, Rng
from uploader.session import UposSession
from uploader.source import ByteSource

__all__ = ["Progress", "UploadResult", "UposUploader"]

PROFILE = "ugcupos/bup"
# What biliup sends; the real member API wants a version/build pair.
CLIENT_VERSION = "2.14.0"
CLIENT_BUILD = "2140000"
DEFAULT_THREADS = 3
BODY_PIECE = 256 * 1024  # bytes handed to the socket per write


@dataclass(frozen=True)
class UploadResult:
    filename: str  # server file name: last segment of upos_uri without extension
    biz_id: int
    session: UposSession
    line: str = ""  # the line uploaded on ("": the one Bilibili chose)


class _SessionRejected(Exception):
    """A resumed session is no longer accepted (expired upload id or auth)."""


def server_filename(upos_uri: str) -> str:
    last = upos_uri.rsplit("/", 1)[-1]
    stem, dot, _ext = last.rpartition(".")
    return stem if dot and stem else last


class UposUploader:
    """Uploads one :class:`ByteSource` to upos; reusable for several uploads."""

    def __init__(
        self,
        client: BiliClient,
        *,
        line: str = "auto",
        threads: int | None = None,
        retry: RetryPolicy | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_commit: Callable[[UposSession], None] | None = None,
        rng: Rng | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress_interval: float = 0.5,
        before_complete: Callable[[UposSession], Awaitable[None]] | None = None,
        lines: LineEstimator | None = None,
        restart_rejected: bool = True,
    ) -> None:
        if threads is not None and threads < 1:
            raise ValueError("threads must be at least 1")
        self.client = client
        self.line = line
        self.threads = threads
        self.retry = retry or RetryPolicy()
        self.on_progress = on_progress
        self.on_commit = on_commit
        self.rng: Rng = rng or random.Random()
        self.clock = clock
        self.progress_interval = progress_interval
        # Awaited once every part is done and before the completion request; raising
        # abandons the upload uncompleted (the mesh agent asks the hub first: Finishing).
        self.before_complete = before_complete
        # Measured line choice for ``line="auto"``; fed by every upload either way.
        self.lines = lines
        # A refused resume session: start a fresh one here when the source can rewind
        # (True), or raise StaleSessionError and let the caller decide (False).
        self.restart_rejected = restart_rejected
        self._line_choice: Line | None | bool = False  # False: not chosen yet

    # -- public -----------------------------------------------------------

    async def upload(
        self, source: ByteSource, name: str, *, session: UposSession | None = None
    ) -> UploadResult:
        """Upload ``source`` as ``name``; with ``session``, send only its missing parts.

        An expired or rejected session falls back to a fresh upload when the
        source can deliver from offset 0 again (``source.rewindable``, true for
        files) and ``restart_rejected`` is set; otherwise :class:`StaleSessionError`
        (kind ``session_rejected``) tells the caller to start over without it.
        """
        if source.size < 0:
            raise UploadError(ErrorKind.FILE, "source size is negative")
        if session is not None:
            if session.size != source.size:
                raise UploadError(
                    ErrorKind.FILE,
                    f"resume session is for {session.size} bytes but the source has {source.size}",
                )
            try:
                return await self._run(source, session, resuming=True)
            except _SessionRejected as exc:
                if not (self.restart_rejected and getattr(source, "rewindable", False)):
                    cause = exc.__cause__
                    detail = f" ({cause.message})" if isinstance(cause, UploadError) else ""
                    raise StaleSessionError(
                        ErrorKind.SESSION_REJECTED,
                        f"resume session rejected by upos{detail}; start over without it",
                        status=getattr(cause, "status", None),
                        code=getattr(cause, "code", None),
                    ) from None
                # fall through to a fresh upload
        session = await self._start(source.size, name)
        try:
            return await self._run(source, session, resuming=False)
        except _SessionRejected as exc:  # pragma: no cover - only raised when resuming
            raise AssertionError("fresh session rejected as stale") from exc

    # -- steps ------------------------------------------------------------

    async def _choose_line(self) -> Line | None:
        estimator = self.lines
        if estimator is None or self.line.strip().lower() != "auto":
            if self._line_choice is False:
                self._line_choice = await select_line(self.client, self.line)
            return self._line_choice  # type: ignore[return-value]
        if estimator.needs_probe():
            costs = await probe_lines(self.client)
            estimator.seed(
                {line.name: cost for line, cost in costs.items()},
                probe_bytes=PROBE_BODY_SIZE,
                lines={line.name: line for line in costs},
            )
        name = estimator.choose()
        if name is None:
            return None
        return estimator.line(name) or parse_line(name)

    async def _start(self, size: int, name: str) -> UposSession:
        """Preupload + multipart init -> a new session with no parts done."""
        line = await self._choose_line()
        params: dict[str, Any] = {
            "name": name,
            "size": size,
            "r": "upos",
            "profile": PROFILE,
            "ssl": 0,
            "version": CLIENT_VERSION,
            "build": CLIENT_BUILD,
        }
        if line is not None:
            params.update(line.params())
        pre = await self._with_retry(
            "preupload",
            lambda: self.client.call(
                "preupload",
                "GET",
                self.client.member("preupload"),
                params=params,
                with_cookies=True,
            ),
        )
        endpoint, upos_uri, auth, biz_id, chunk_size, server_threads = _parse_preupload(pre)
        upload_url = (
            f"{self.client.absolute(endpoint).rstrip('/')}/{upos_uri.removeprefix('upos://')}"
        )
        init = await self._with_retry(
            "init",
            lambda: self.client.call(
                "init", "POST", f"{upload_url}?uploads&output=json", headers={"X-Upos-Auth": auth}
            ),
        )
        upload_id = init.get("upload_id") if isinstance(init, dict) else None
        if not isinstance(upload_id, str | int) or isinstance(upload_id, bool) or upload_id == "":
            raise UploadError(ErrorKind.BAD_REQUEST, "malformed reply on init: no upload_id")
        return UposSession(
            name=name,
            size=size,
            upos_uri=upos_uri,
            endpoint=endpoint,
            upload_url=upload_url,
            auth=auth,
            biz_id=biz_id,
            chunk_size=chunk_size,
            threads=server_threads,
            upload_id=str(upload_id),
            parts_done=[],
            created_at=time.time(),
            line=line.name if line is not None else "",
        )

    def _effective_threads(self, session: UposSession) -> int:
        server = session.threads if session.threads > 0 else DEFAULT_THREADS
        return server if self.threads is None else min(server, self.threads)

    async def _run(
        self, source: ByteSource, session: UposSession, *, resuming: bool
    ) -> UploadResult:
        missing = session.missing_parts()
        meter = ProgressMeter(
            session.size,
            start=self.clock(),
            already=session.done_bytes(),
            interval=self.progress_interval,
        )
        state = _RunState(session=session, meter=meter, busy=BusyTime(self.clock))
        if missing:
            try:
                await self._transfer(source, state, missing, resuming=resuming)
            finally:
                # Failed or not, what moved is a measurement of the line.
                if self.lines is not None and session.line:
                    self.lines.observe(session.line, state.accepted_bytes, state.busy.seconds)
        # Completion: reached only when every part is done.
        if self.before_complete is not None:
            await self.before_complete(state.session)
        await self._complete(state, resuming=resuming)
        return UploadResult(
            filename=server_filename(state.session.upos_uri),
            biz_id=state.session.biz_id,
            session=state.session,
            line=state.session.line,
        )

    async def _transfer(
        self, source: ByteSource, state: _RunState, missing: list[int], *, resuming: bool
    ) -> None:
        session = state.session
        threads = min(self._effective_threads(session), len(missing))
        send, receive = anyio.create_memory_object_stream[tuple[int, bytes]](0)

        async def reader() -> None:
            async with send:
                todo = set(missing)
                first_offset = session.part_range(missing[0])[0]
                for part in range(missing[0], session.part_count() + 1):
                    start, end = session.part_range(part)
                    if part not in todo:
                        # Done before; a streamed source still delivers these
                        # bytes, so hand their space back.
                        if start >= first_offset:
                            source.release(start, end - start)
                        continue
                    try:
                        data = await source.read(start, end - start)
                    except OSError as exc:
                        raise UploadError(
                            ErrorKind.FILE, f"cannot read source at {start}: {exc.strerror or exc}"
                        ) from None
                    if len(data) != end - start:
                        raise UploadError(
                            ErrorKind.FILE,
                            f"source ended at {start + len(data)} but its size is {session.size}",
                        )
                    await send.send((part, data))
                    # Drop our reference now: while the next chunk is read,
                    # this one belongs to a worker alone.
                    del data

        async def worker(chunks: anyio.abc.ObjectReceiveStream[tuple[int, bytes]]) -> None:
            async with chunks:
                async for part, data in chunks:
                    await self._put(state, part, data, resuming=resuming)
                    start, end = session.part_range(part)
                    del data
                    source.release(start, end - start)
                    self._part_done(state, part, end - start)

        failures: list[BaseException] = []

        async def guarded(fn: Callable[[], Any]) -> None:
            try:
                await fn()
            except Exception as exc:
                # The first real failure wins and is raised as itself (callers
                # never see an ExceptionGroup): an UploadError, or whatever the
                # source or a callback raised. A reader that finds every worker
                # gone (BrokenResourceError) is only an echo of that failure.
                failures.append(exc)
                tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(guarded, reader)
            with receive:  # each worker holds its own clone
                for _ in range(threads):
                    tg.start_soon(guarded, functools.partial(worker, receive.clone()))
        for exc in failures:
            if not isinstance(exc, anyio.BrokenResourceError):
                raise exc
        if failures:  # pragma: no cover - workers only stop by failing
            raise UploadError(ErrorKind.NETWORK, "upload workers stopped unexpectedly")

    def _part_done(self, state: _RunState, part: int, nbytes: int) -> None:
        state.session = state.session.with_part_done(part)
        state.accepted_this_run += 1
        state.accepted_bytes += nbytes
        if self.on_commit is not None:
            self.on_commit(state.session)
        report = state.meter.advance(nbytes, self.clock())
        if report is not None and self.on_progress is not None:
            self.on_progress(report)

    async def _put(self, state: _RunState, part: int, data: bytes, *, resuming: bool) -> None:
        session = state.session
        start, end = session.part_range(part)
        params = {
            "partNumber": part,
            "uploadId": session.upload_id,
            "chunk": part - 1,
            "chunks": session.part_count(),
            "size": end - start,
            "start": start,
            "end": end,
            "total": session.size,
        }
        op = f"put part {part}"

        async def once() -> Any:
            state.busy.start()
            try:
                return await self.client.call(
                    op,
                    "PUT",
                    session.upload_url,
                    params=params,
                    content=_pieces(data),
                    headers={"X-Upos-Auth": session.auth, "Content-Length": str(len(data))},
                )
            finally:
                state.busy.stop()

        try:
            await self._with_retry(op, once)
        except UploadError as exc:
            if resuming and state.accepted_this_run == 0 and _means_stale_session(exc):
                raise _SessionRejected() from exc
            raise

    async def _complete(self, state: _RunState, *, resuming: bool) -> None:
        session = state.session
        params = {
            "output": "json",
            "name": session.name,
            "profile": PROFILE,
            "uploadId": session.upload_id,
            "biz_id": session.biz_id,
        }
        body = {
            "parts": [{"partNumber": n, "eTag": "etag"} for n in sorted(set(session.parts_done))]
        }

        async def once() -> Any:
            return await self.client.call(
                "complete",
                "POST",
                session.upload_url,
                params=params,
                json=body,
                headers={"X-Upos-Auth": session.auth},
            )

        try:
            reply = await self._with_retry("complete", once)
        except UploadError as exc:
            if resuming and state.accepted_this_run == 0 and _means_stale_session(exc):
                raise _SessionRejected() from exc
            raise
        # Success must be explicit: an empty or foreign 200 is not a completed object.
        if not isinstance(reply, dict) or reply.get("OK") != 1:
            raise UploadError(ErrorKind.BAD_REQUEST, "malformed reply on complete: no OK=1")

    async def _with_retry(self, op: str, attempt: Callable[[], Any]) -> Any:
        """Run ``attempt``; retry network failures per the policy, raise anything else at once."""
        retry = 0
        while True:
            try:
                return await attempt()
            except UploadError as exc:
                retry += 1
                if not exc.retryable or not self.retry.allows(retry):
                    raise
                await anyio.sleep(self.retry.delay(retry, self.rng))


async def _pieces(data: bytes | Pieces) -> AsyncIterator[memoryview]:
    """The chunk as zero-copy slices: HTTP/1.1 libraries otherwise copy the whole body
    (h11 joins it, the event loop buffers what the socket did not take), which
    would triple the memory of every in-flight chunk. A streamed chunk arrives as
    :class:`~uploader.pieces.Pieces` (the frames it came in) and goes out as them."""
    views = data if isinstance(data, Pieces) else (memoryview(data),)
    for view in views:
        for start in range(0, len(view), BODY_PIECE):
            yield view[start : start + BODY_PIECE]


@dataclass
class _RunState:
    session: UposSession
    meter: ProgressMeter
    busy: BusyTime = field(default_factory=BusyTime)
    accepted_this_run: int = 0
    accepted_bytes: int = 0


def _means_stale_session(exc: UploadError) -> bool:
    """A plain 4xx on the very first upos request of a resume: upload id or auth expired,
    the session refused (403), or the upload already completed."""
    return (
        exc.kind in (ErrorKind.BAD_REQUEST, ErrorKind.AUTH, ErrorKind.SESSION_REJECTED)
        and exc.status is not None
        and 400 <= exc.status < 500
    )


class _PreuploadReply(msgspec.Struct):
    auth: str
    biz_id: int
    chunk_size: int
    endpoint: str
    upos_uri: str
    threads: int = DEFAULT_THREADS


def _parse_preupload(payload: Any) -> tuple[str, str, str, int, int, int]:
    try:
        reply = msgspec.convert(payload, _PreuploadReply, strict=False)
    except msgspec.ValidationError as exc:
        raise UploadError(ErrorKind.BAD_REQUEST, f"malformed reply on preupload: {exc}") from None
    if reply.chunk_size <= 0:
        raise UploadError(
            ErrorKind.BAD_REQUEST, "malformed reply on preupload: chunk_size must be positive"
        )
    if not reply.upos_uri.startswith("upos://") or not reply.endpoint:
        raise UploadError(
            ErrorKind.BAD_REQUEST, "malformed reply on preupload: bad endpoint or upos_uri"
        )
    return reply.endpoint, reply.upos_uri, reply.auth, reply.biz_id, reply.chunk_size, reply.threads
