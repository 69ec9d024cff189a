"""One task attempt on the agent: bytes from the hub in, one upos upload out.

The link hands an ``Offer`` to :class:`TaskRunner`, which decides the resume
point, then runs the uploader over a :class:`~spoke.source.StreamSource` fed
by the link with the hub's ``Chunk`` frames. Everything the hub must hear
(``Committed``, ``Progress``, ``Result``) goes out through the ``send``
callback; the runner never touches the stream itself, so several runners
interleave on one stream and a slow one never blocks a fast one (each has its
own queue inside its source; the credit budget bounds them all).

Credentials live in the runner only while the task runs and are dropped when
it ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import anyio

from protocol import mesh_pb2 as pb
from protocol.chunks import WireChunk
from protocol.credit import CreditBudget, CreditError
from spoke.config import AgentSettings
from spoke.local import DigestCache, LocalSource, check_local
from spoke.progress import ProgressGate
from spoke.source import BufferTooSmall, StreamError, StreamSource
from spoke.task_state import InvalidTransition, State, TaskState
from uploader.client import DEFAULT_MEMBER_URL, BiliClient
from uploader.completed import CompletedUploads
from uploader.credentials import Credentials, CredentialsError
from uploader.errors import ErrorKind, StaleSessionError, UploadError
from uploader.line_choice import LineEstimator
from uploader.session import SessionError, UposSession
from uploader.upos import Progress, UploadResult, UposUploader, server_filename

log = logging.getLogger("bupmesh.agent")

CANCELLED = "cancelled"
AGENT = "agent"
END_TIMEOUT = 60.0  # after the upload, how long to wait for EndOfData before giving up
PROCEED_TIMEOUT = 30.0  # after Finishing, how long to wait for Proceed before abandoning


class TaskFailure(Exception):
    """Ends the attempt with ``Result(error_kind=kind, error_message=message)``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def threads_for(share: int, chunk_size: int) -> int:
    """Uploader threads that fit a task's share of the budget.

    The uploader holds ``(threads + 1) * chunk_size`` bytes at most, so a 64 MiB
    budget split three ways (~21 MiB) with 10 MiB chunks gives one thread.
    """
    return max(1, share // max(1, chunk_size) - 1)


class TaskRunner:
    def __init__(
        self,
        offer: pb.Offer,
        *,
        settings: AgentSettings,
        budget: CreditBudget,
        send: Callable[[pb.AgentMessage], None],
        on_space: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        client_factory: Callable[..., Any] = BiliClient,
        uploader_factory: Callable[..., Any] = UposUploader,
        lines: LineEstimator | None = None,
        completed: CompletedUploads | None = None,
    ) -> None:
        self.task_id = offer.task_id
        self.attempt = offer.attempt
        self.size = offer.file_size
        self.file_name = offer.file_name or offer.task_id
        self.line = offer.line or "auto"
        self.member_url = offer.member_url or DEFAULT_MEMBER_URL
        self._offer_credentials = offer.credentials
        self._resume_blob = bytes(offer.resume_session)
        self.crc32 = offer.crc32_integrity  # check the stream with CRC32 instead of MD5
        # Completion handshake (docs/protocol.md): ask with Finishing, complete only on
        # Proceed, so an attempt the hub gave up on never completes behind its back.
        self.await_proceed = bool(offer.await_proceed)
        self.file_path = offer.file_path
        self.file_digest = offer.file_digest.lower()
        self.file_md5 = offer.file_md5.lower()  # a part an older hub hashed
        self.local_read = False  # reading file_path from disk instead of the hub's stream
        self.settings = settings
        self.budget = budget
        self._send = send
        self._on_space = on_space
        self._clock = clock
        self._client_factory = client_factory
        self._uploader_factory = uploader_factory
        self._lines = lines  # the agent's line estimates, kept across its uploads
        self._completed = completed  # the sessions the agent completed, kept likewise
        self.state = TaskState()
        self.credentials: Credentials | None = None
        self.session: UposSession | None = None
        self.resume_offset = 0
        self.source: StreamSource | LocalSource | None = None
        self.uploaded = 0
        self.speed = 0.0
        self.eta = 0.0
        self._gate: ProgressGate | None = None
        self._scope: anyio.CancelScope | None = None
        self._stop: TaskFailure | None = None
        self._proceed = anyio.Event()
        self._awaiting_proceed = False
        self.finished = anyio.Event()

    # -- admission ---------------------------------------------------------------------------

    @property
    def min_window(self) -> int:
        """Window this task needs to make progress: one upos chunk (or the whole tail)."""
        chunk = self.session.chunk_size if self.session else self.settings.chunk_size
        return max(1, min(chunk, self.size - self.resume_offset))

    def prepare(self) -> None:
        """Parse credentials and the resume session; raises :class:`TaskFailure` when unusable."""
        creds = self._offer_credentials
        try:
            self.credentials = Credentials.from_cookie_string(
                creds.cookies, access_key=creds.access_key or None, mid=creds.mid or None
            )
        except CredentialsError as exc:
            raise TaskFailure(ErrorKind.AUTH.value, f"offer credentials unusable: {exc}") from None
        finally:
            self._offer_credentials = None
        if self.size < 0:
            raise TaskFailure(ErrorKind.FILE.value, f"negative file size {self.size}")
        if self._resume_blob:
            try:
                session = UposSession.from_json(self._resume_blob)
                if session.size != self.size:
                    raise SessionError("resume session is for another size")
                self.session = session
                self.resume_offset = session.committed_offset()
            except SessionError as exc:
                # Not fatal: a fresh upload from byte 0 is always possible.
                log.warning("task %s: ignoring resume session (%s)", self.task_id, exc)
                self.session = None
                self.resume_offset = 0
        self._resume_blob = b""

    def accept(self, local: LocalSource | None = None) -> None:
        """Answer ``Accept``; call after :meth:`prepare`.

        With ``local`` (a verified copy of the part on this host) the hub streams
        nothing: no credit window is opened and the uploader reads the file itself.
        Otherwise the task's credit window opens and the bytes come from the stream.
        """
        self.state.accept()
        if local is not None:
            self.source = local
            self.local_read = True
        else:
            self.budget.open(
                self.task_id, need=self.size - self.resume_offset, min_window=self.min_window
            )
            self.source = StreamSource(
                size=self.size,
                start=self.resume_offset,
                budget=self.budget,
                key=self.task_id,
                on_space=self._on_space,
                crc32=self.crc32,
            )
        self.uploaded = self.resume_offset
        self._send(
            pb.AgentMessage(
                accept=pb.Accept(
                    task_id=self.task_id,
                    attempt=self.attempt,
                    resume_offset=self.resume_offset,
                    local_read=self.local_read,
                )
            )
        )

    @property
    def wants_local(self) -> bool:
        """A local/hybrid agent offered a path it may be able to read itself."""
        s = self.settings
        return s.storage_type in ("local", "hybrid") and bool(s.local_roots) and bool(
            self.file_path
        )

    async def check_local(self, cache: DigestCache) -> LocalSource | None:
        """The verified local copy to upload from, or None to stream (reason logged)."""
        # A Cancel during the check ends it at once (stop() cancels this scope).
        outcome: LocalSource | str = "cancelled"
        with anyio.CancelScope() as self._scope:
            if self._stop is not None:
                self._scope.cancel()
            try:
                outcome = await check_local(
                    self.file_path,
                    size=self.size,
                    digest=self.file_digest,
                    md5=self.file_md5,
                    roots=self.settings.local_roots,
                    cache=cache,
                )
            except Exception as exc:  # a bug here must cost the local read, not the agent
                log.error("task %s: local check failed", self.task_id, exc_info=exc)
                outcome = f"check failed: {type(exc).__name__}"
        self._scope = None
        if isinstance(outcome, str):
            log.info("task %s: streaming from the hub (no local read: %s)", self.task_id, outcome)
            return None
        log.info(
            "task %s attempt %d: local read of %s (size and digest match): nothing streamed",
            self.task_id,
            self.attempt,
            outcome.path,
        )
        return outcome

    # -- messages from the hub (called by the link; never block) -----------------------------

    def on_chunk(self, chunk: pb.Chunk | WireChunk) -> None:
        try:
            if not self.state.on_chunk():
                return  # late frame for an ended attempt
            if self.local_read:
                raise StreamError("Chunk for an attempt read locally")
            assert self.source is not None
            self.source.feed(chunk.offset, chunk.data)
        except (InvalidTransition, StreamError, CreditError) as exc:
            self.stop(TaskFailure(AGENT, f"protocol violation: {exc}"))

    def on_end_of_data(self, eod: pb.EndOfData) -> None:
        try:
            if self.local_read:
                raise StreamError("EndOfData for an attempt read locally")
            if not self.state.on_end_of_data():
                return
            assert self.source is not None
            self.source.end_of_data(eod.md5, eod.crc32 if eod.HasField("crc32") else None)
            # The agent's side of the hub's "streamed N bytes" line: from here on the
            # attempt needs nothing more from the link but the completion handshake.
            log.info(
                "task %s attempt %d: every byte received from the hub",
                self.task_id,
                self.attempt,
            )
        except (InvalidTransition, StreamError) as exc:
            self.stop(TaskFailure(AGENT, f"protocol violation: {exc}"))

    def on_proceed(self) -> None:
        """``Proceed``: the hub granted the completion this attempt asked for."""
        if not self._awaiting_proceed:
            log.warning("task %s: Proceed without a Finishing in flight ignored", self.task_id)
            return
        self._proceed.set()

    def cancel(self, reason: str = "cancelled by hub") -> None:
        self.stop(TaskFailure(CANCELLED, reason or "cancelled by hub"))

    def stop(self, failure: TaskFailure) -> None:
        """End the attempt with ``failure``; the upload is cancelled before it can complete."""
        if self.state.terminal or self._stop is not None:
            return
        self._stop = failure
        # Cancelling the scope stops every await of the upload at once (a waiting
        # read, a PUT in flight); run() checks _stop when it has not started yet.
        if self._scope is not None:
            self._scope.cancel()

    # -- the attempt -------------------------------------------------------------------------

    async def run(self) -> None:
        """Upload, then send exactly one ``Result``. Never raises (but honours cancellation)."""
        try:
            await self._run()
        finally:
            self.budget.close(self.task_id)
            if isinstance(self.source, LocalSource):
                self.source.close()
            self.credentials = None  # secrets leave memory with the task
            self.session = None
            self._on_space()
            self.finished.set()

    async def _run(self) -> None:
        try:
            await self._run_inner()
        except BaseExceptionGroup as group:
            # The uploader's task group wraps what our source raised; report the first one.
            leaf = _first_leaf(group)
            if isinstance(leaf, Exception) and not isinstance(leaf, BaseExceptionGroup):
                await self._report(self._result_for(leaf))
            else:
                raise

    async def _run_inner(self) -> None:
        result: pb.Result
        try:
            with anyio.CancelScope() as self._scope:
                if self._stop is not None:
                    self._scope.cancel()
                resumed = self.session
                try:
                    outcome = await self._upload()
                except StaleSessionError as exc:
                    outcome = _completed_elsewhere(resumed, exc)
                    if outcome is None:
                        raise
                    log.info(
                        "task %s: the resumed upload was already completed (by an earlier "
                        "attempt whose link died); reporting it",
                        self.task_id,
                    )
                await self._end_of_data()
                self.state.succeed()
                result = pb.Result(success=True, filename=outcome.filename, biz_id=outcome.biz_id)
            if self._scope.cancelled_caught:
                raise self._stop or TaskFailure(AGENT, "stopped")
        except (TaskFailure, UploadError, TimeoutError, StreamError, CreditError) as exc:
            result = self._result_for(exc)
        except InvalidTransition as exc:
            result = self._result_for(exc)
        except BaseExceptionGroup:
            raise
        except Exception as exc:  # a bug must cost one task, not the agent
            result = self._result_for(exc)
        await self._report(result)

    def _result_for(self, exc: BaseException) -> pb.Result:
        if isinstance(exc, TaskFailure):
            return self._fail(exc.kind, exc.message)
        if isinstance(exc, UploadError):
            result = self._fail(exc.kind.value, exc.message)
            # What the hub needs to react to Bilibili: its code, a captcha, a known wait.
            result.error_code = exc.code or 0
            result.voucher = exc.voucher or ""
            result.retry_after_seconds = exc.retry_after or 0.0
            return result
        if isinstance(exc, TimeoutError):
            if self._awaiting_proceed:
                return self._fail(
                    AGENT, f"no Proceed from the hub within {PROCEED_TIMEOUT:g}s: not completed"
                )
            return self._fail(AGENT, "no EndOfData from the hub after the upload")
        if isinstance(exc, BufferTooSmall):
            return self._fail(AGENT, str(exc))
        if isinstance(exc, StreamError | CreditError | InvalidTransition):
            return self._fail(AGENT, f"protocol violation: {exc}")
        log.error("task %s: unexpected error", self.task_id, exc_info=exc)
        return self._fail(AGENT, f"agent error: {type(exc).__name__}")

    async def _report(self, result: pb.Result) -> None:
        result.task_id, result.attempt = self.task_id, self.attempt
        result.md5 = self.source.md5() if self.source else ""
        if isinstance(self.source, LocalSource):
            result.file_digest = self.source.digest
        if isinstance(self.source, StreamSource) and self.source.crc32_mode:
            result.crc32 = self.source.crc32() or 0
        if result.success:
            log.info("task %s attempt %d: uploaded %s", self.task_id, self.attempt, result.filename)
        else:
            log.warning(
                "task %s attempt %d: %s: %s",
                self.task_id,
                self.attempt,
                result.error_kind,
                result.error_message,
            )
        self._send(pb.AgentMessage(result=result))

    def _fail(self, kind: str, message: str) -> pb.Result:
        if kind == CANCELLED:
            self.state.cancel()
        else:
            self.state.fail()
        return pb.Result(success=False, error_kind=kind, error_message=message)

    async def _upload(self) -> Any:
        assert self.credentials is not None and self.source is not None
        self._gate = ProgressGate(self.size, now=self._clock())
        # Threads from the window this task has now: alone it may use the whole budget;
        # the budget, not the thread count, is what bounds memory when others arrive.
        # A local read has no window (nothing streamed): its fair share bounds its threads.
        share = max(
            0 if self.local_read else self.budget.window(self.task_id),
            self.settings.buffer_bytes // self.settings.max_concurrent,
        )
        chunk = self.session.chunk_size if self.session else self.settings.chunk_size
        try:
            client_cm = self._client_factory(
                self.credentials,
                member_url=self.member_url,
                source_ip=self.settings.source_ip,
                proxy=self.settings.proxy,
            )
        except ValueError as exc:  # e.g. a member URL that is not http(s)://host
            raise TaskFailure(ErrorKind.BAD_REQUEST.value, f"offer unusable: {exc}") from None
        async with client_cm as client:
            uploader = self._uploader_factory(
                client,
                line=self.line,
                threads=threads_for(share, chunk),
                on_progress=self._on_progress,
                on_commit=self._on_commit,
                before_complete=self._before_complete,
                lines=self._lines,
                completed=self._completed,
                # A refused resume session ends the attempt (session_rejected): the hub
                # decides where the fresh session starts, and counts the parts it drops.
                restart_rejected=False,
            )
            return await uploader.upload(self.source, self.file_name, session=self.session)

    async def _end_of_data(self) -> None:
        """Every byte of the attempt is here and matches what the hub says it sent.

        For a stream: wait for ``EndOfData`` and check its checksum. For a local read:
        the file is still the one whose digest was checked before ``Accept``.
        """
        assert self.source is not None
        if self.local_read and self.state.state is State.ACCEPTED:
            self.state.on_end_of_data()  # the whole file was here from the start
        with anyio.fail_after(END_TIMEOUT):
            await self.source.wait_end()
        self.source.verify()

    async def _before_complete(self, session: UposSession) -> None:
        """Between the last part and the upos completion request (the uploader's hook).

        Nothing unverified is ever completed: the stream's checksum (or the local file) is
        checked first. With ``await_proceed`` the hub is then asked (``Finishing``) and
        the completion goes out only on its ``Proceed``: a ``Cancel`` ends the attempt
        through :meth:`stop` (the scope around the upload is cancelled), and silence for
        ``PROCEED_TIMEOUT`` (a half-open link, say) abandons it, so an attempt the hub
        gave up on never completes behind its back. A stream that ends meanwhile
        cancels the whole session, this wait included.
        """
        await self._end_of_data()
        if not self.await_proceed:
            return
        self._awaiting_proceed = True
        log.info(
            "task %s attempt %d: every part uploaded; asking the hub to complete",
            self.task_id,
            self.attempt,
        )
        self._send(
            pb.AgentMessage(
                finishing=pb.Finishing(
                    task_id=self.task_id,
                    attempt=self.attempt,
                    offset=session.size,
                    session=session.to_json(),
                )
            )
        )
        with anyio.fail_after(PROCEED_TIMEOUT):
            await self._proceed.wait()
        self._awaiting_proceed = False
        log.info("task %s attempt %d: proceed: completing", self.task_id, self.attempt)

    # -- uploader callbacks ------------------------------------------------------------------

    def _on_commit(self, session: UposSession) -> None:
        if self.state.terminal or self._stop is not None:
            return
        self._send(
            pb.AgentMessage(
                committed=pb.Committed(
                    task_id=self.task_id,
                    attempt=self.attempt,
                    offset=session.committed_offset(),
                    session=session.to_json(),
                )
            )
        )

    def _on_progress(self, progress: Progress) -> None:
        self.uploaded = progress.uploaded
        self.speed = progress.speed_bps
        eta = progress.eta_seconds
        self.eta = eta if eta == eta and eta != float("inf") else 0.0
        self.report_progress()

    def report_progress(self, *, force: bool = False) -> None:
        """Send ``Progress`` if due (every 10% or 10 s); the link's ticker calls this too."""
        if self._gate is None or self.state.terminal or self._stop is not None:
            return
        if self._gate.should_report(self.uploaded, self._clock()) or force:
            self._send(pb.AgentMessage(progress=self.progress_message()))

    def progress_message(self) -> pb.Progress:
        return pb.Progress(
            task_id=self.task_id,
            attempt=self.attempt,
            uploaded_bytes=self.uploaded,
            total_bytes=self.size,
            speed_bps=self.speed,
            eta_seconds=self.eta,
        )

    @property
    def running(self) -> bool:
        return not self.state.terminal

    @property
    def holdable(self) -> bool:
        """May this attempt outlive its stream (spoke/held.py)?

        Only while it still receives bytes: accepted, streamed (not a local read), no
        ``EndOfData`` yet, so no ``Finishing`` either (the completion handshake stays
        on the stream that carried it), and not being stopped.
        """
        return (
            self._stop is None
            and self.state.state in (State.ACCEPTED, State.STREAMING)
            and isinstance(self.source, StreamSource)
            and not self.source.ended
        )

    @property
    def state_name(self) -> State:
        return self.state.state


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _completed_elsewhere(session: UposSession | None, exc: StaleSessionError) -> UploadResult | None:
    """The resume session was refused because its upload is already complete.

    That happens when an earlier attempt lost its link to the hub after the last byte
    and finished the upos upload on its own (it had verified the hub's checksum first).
    The object exists exactly once, so this attempt reports it instead of failing.
    """
    if session is None or "already completed" not in exc.message:
        return None
    return UploadResult(
        filename=server_filename(session.upos_uri), biz_id=session.biz_id, session=session
    )
