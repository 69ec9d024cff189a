"""Failure kinds the hub can act on, and the pure rules that map replies to them.

The hub reacts differently to each kind, so classification is the one place
where the uploader must be exact; it is a pure function of (operation, HTTP
status, decoded body, reply headers) so it can be tested without sockets.

================= =========================================================================
kind              what Bilibili said, and what it asks of the hub
================= =========================================================================
risk_control      HTTP 406/412/429, JSON 601 (its captcha ``voucher`` kept), 21540, 21070,
                  -412, -509: this address (or this account here) goes too fast; move on.
account_throttle  21566 "投稿过于频繁，建议将APP升级至最新版本后再试", 137022 "投稿过于频繁，
                  请稍后再试": the *account* submits too often, whatever the IP; wait
                  (``retry_after`` when the reply says how long), more IPs do not help.
account_penalty   21515 "批量作弊投稿", 21590 "投稿工具已停用": sticky, the account is
                  stopped until a human looks.
session_rejected  HTTP 403 from upos on init, a chunk or completion: the session's
                  ``X-Upos-Auth`` is refused (bound to another IP, or older than five days:
                  ``AUTH_TS_GT_5DAY``); start a fresh session, the old one is lost.
network           timeouts, resets, 5xx: retried.
auth              -101, -2, -111, HTTP 401: the cookies or token need a human.
bad_request       other 4xx, OK != 1, other codes: final.
file              size or hash mismatch, unreadable source: final.
================= =========================================================================

:class:`UploadError` carries what the hub needs besides the kind: the HTTP
``status``, Bilibili's ``code``, a captcha ``voucher`` (601) and a known
wait ``retry_after`` (seconds, from a ``Retry-After`` header).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import httpx


class ErrorKind(enum.StrEnum):
    RISK_CONTROL = "risk_control"  # HTTP 406, JSON 601, 21540-style "too fast"
    ACCOUNT_THROTTLE = "account_throttle"  # 21566, 137022: the account submits too often
    ACCOUNT_PENALTY = "account_penalty"  # 21515, 21590: the account is stopped (sticky)
    SESSION_REJECTED = "session_rejected"  # upos 403: session bound elsewhere or too old
    NETWORK = "network"  # timeouts, resets, 5xx
    AUTH = "auth"  # -101, expired cookies
    BAD_REQUEST = "bad_request"  # other 4xx, OK != 1
    FILE = "file"  # size or hash mismatch, unreadable source


class UploadError(Exception):
    """One classified failure; ``str(err)`` is ``"{kind}: {message}"``.

    Messages name the operation and the status/code, never a secret: they end
    up in logs, task rows and API responses.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        voucher: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(kind, message)
        self.kind = ErrorKind(kind)
        self.message = message
        self.status = status
        self.code = code
        self.voucher = voucher  # the captcha a 601 asks for: an admin solves it
        self.retry_after = retry_after  # seconds Bilibili said to wait, when it said

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"

    def __repr__(self) -> str:
        extra = "".join(
            f", {name}={value!r}"
            for name, value in (("voucher", self.voucher), ("retry_after", self.retry_after))
            if value is not None
        )
        return (
            f"UploadError({self.kind.value!r}, {self.message!r}, status={self.status}, "
            f"code={self.code}{extra})"
        )

    @property
    def retryable(self) -> bool:
        """Only network trouble is worth trying again from the same IP."""
        return self.kind is ErrorKind.NETWORK


class StaleSessionError(UploadError):
    """A resume session was rejected (expired, refused or unknown upload) and the
    uploader was not to start over by itself (a one-pass source, or told not to).

    Kind ``session_rejected``; the caller should drop the saved session and
    start the part again from offset 0 in a fresh session.
    """


# JSON codes Bilibili uses when it throttles an account or an IP. 601 is
# upos' "上传视频过快", 21540 member's "请求过于频繁", -412 "请求被拦截" and
# -509 "请求过于频繁" on the API gateway, 21070 "投稿过快".
RISK_CODES: frozenset[int] = frozenset({601, 21540, 21070, -412, -509} | {20111, 20113})
# 20111 "合集编辑过于频繁" and 20113 "手速太快啦" throttle collection (合集) edits.
# -101 "账号未登录" (expired SESSDATA), -2 bad access_key, -111 csrf mismatch
# (bili_jct does not belong to the session), -400 is a plain bad request.
AUTH_CODES: frozenset[int] = frozenset({-101, -2, -111})
# Statuses that mean "slow down" whatever the body says.
RISK_STATUSES: frozenset[int] = frozenset({406, 412, 429})
# Per-account submission throttles users report: 21566 "投稿过于频繁，建议将APP升级至
# 最新版本后再试" (a minimum gap; the official app clears it with a captcha), 137022
# "投稿过于频繁，请稍后再试" (after about 15 submissions 10 minutes apart).
ACCOUNT_THROTTLE_CODES: frozenset[int] = frozenset({21566, 137022})
# Sticky account penalties: 21515 "批量作弊投稿" (a regular cadence of submissions),
# 21590 "投稿工具已停用" (the submission route is closed to this tool).
ACCOUNT_PENALTY_CODES: frozenset[int] = frozenset({21515, 21590})
# Requests that speak to upos itself (the session's X-Upos-Auth), by operation name.
UPOS_OPS: tuple[str, ...] = ("init", "put", "complete")


def is_upos_op(op: str) -> bool:
    """``init``, ``put part N``, ``complete``: a request carrying the session's auth."""
    return op.split(" ", 1)[0] in UPOS_OPS


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _server_message(payload: Any) -> str:
    if isinstance(payload, dict):
        for key in ("message", "msg", "error"):
            value = payload.get(key)
            if isinstance(value, str) and value:
                # Bounded: a reply may be huge; a log line should not be.
                return value[:200]
    return ""


def voucher_of(payload: Any) -> str | None:
    """The captcha voucher of a 601: ``detail.v_voucher`` (upos' preupload) or
    ``data.v_voucher`` (the JSON API envelope)."""
    if not isinstance(payload, dict):
        return None
    for field in ("detail", "data"):
        inner = payload.get(field)
        voucher = inner.get("v_voucher") if isinstance(inner, dict) else None
        if isinstance(voucher, str) and voucher:
            return voucher[:200]
    return None


def retry_after_of(headers: Mapping[str, str] | None) -> float | None:
    """``Retry-After: <seconds>`` as a float; an HTTP date or junk means unknown."""
    if not headers:
        return None
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        seconds = float(raw) if raw is not None else None
    except ValueError:
        return None
    if seconds is None or not 0 <= seconds < 1e9:  # also refuses nan and inf
        return None
    return seconds


def upos_reason(headers: Mapping[str, str] | None) -> str:
    """The reason word of upos' ``X-Upos-Auth`` reply header (``AUTH_TS_GT_5DAY``, ...).

    Only the first word: the rest repeats the session's auth, a secret.
    """
    if not headers:
        return ""
    raw = next((v for k, v in headers.items() if k.lower() == "x-upos-auth"), "")
    word = raw.strip().split(" ", 1)[0]
    return word[:40] if word.isascii() and word.replace("_", "").isalnum() else ""


def classify(
    op: str, status: int, payload: Any = None, headers: Mapping[str, str] | None = None
) -> UploadError | None:
    """The error a reply means, or ``None`` when it is a success.

    ``payload`` is the decoded JSON body (or ``None`` when the body was not
    JSON, as with upos' plain-text PUT replies). Both member replies
    (``{"code": 0}``) and upos replies (``{"OK": 1}``) are understood.
    ``headers`` (optional) give ``Retry-After`` and upos' ``X-Upos-Auth`` reason.
    """
    body = payload if isinstance(payload, dict) else {}
    code = _int_or_none(body.get("code"))
    detail = _server_message(body)
    suffix = f": {detail}" if detail else ""
    wait = retry_after_of(headers)

    if code is not None and code in ACCOUNT_PENALTY_CODES:
        return UploadError(
            ErrorKind.ACCOUNT_PENALTY, f"code {code} on {op}{suffix}", status=status, code=code
        )
    if code is not None and code in ACCOUNT_THROTTLE_CODES:
        return UploadError(
            ErrorKind.ACCOUNT_THROTTLE,
            f"code {code} on {op}{suffix}",
            status=status,
            code=code,
            retry_after=wait,
        )
    if status in RISK_STATUSES or (code is not None and code in RISK_CODES):
        what = f"code {code}" if code in RISK_CODES else f"HTTP {status}"
        return UploadError(
            ErrorKind.RISK_CONTROL,
            f"{what} on {op}{suffix}",
            status=status,
            code=code,
            voucher=voucher_of(body),
            retry_after=wait,
        )
    if status == 403 and is_upos_op(op):
        reason = upos_reason(headers)
        return UploadError(
            ErrorKind.SESSION_REJECTED,
            f"upos refused the session: HTTP 403 on {op}{f': {reason}' if reason else ''}",
            status=status,
            code=code,
        )
    if status >= 500:
        return UploadError(
            ErrorKind.NETWORK, f"HTTP {status} on {op}{suffix}", status=status, code=code
        )
    if status == 401 or (code is not None and code in AUTH_CODES):
        what = f"code {code}" if code in AUTH_CODES else f"HTTP {status}"
        return UploadError(
            ErrorKind.AUTH,
            f"{what} on {op}{suffix or ': not logged in or expired'}",
            status=status,
            code=code,
        )
    if status >= 400:
        return UploadError(
            ErrorKind.BAD_REQUEST, f"HTTP {status} on {op}{suffix}", status=status, code=code
        )
    if status < 200 or status >= 300:
        return UploadError(
            ErrorKind.BAD_REQUEST, f"unexpected HTTP {status} on {op}", status=status, code=code
        )
    if "OK" in body and _int_or_none(body.get("OK")) != 1:
        return UploadError(
            ErrorKind.BAD_REQUEST,
            f"OK={body.get('OK')!r} on {op}{suffix}",
            status=status,
            code=code,
        )
    if "OK" not in body and code is not None and code != 0:
        return UploadError(
            ErrorKind.BAD_REQUEST, f"code {code} on {op}{suffix}", status=status, code=code
        )
    return None


def from_transport_error(op: str, exc: Exception) -> UploadError:
    """A failure below HTTP (no reply at all) is always network trouble."""
    if isinstance(exc, httpx.TimeoutException):
        what = f"timeout ({type(exc).__name__})"
    elif isinstance(exc, httpx.RemoteProtocolError):
        what = "connection closed by the server"
    elif isinstance(exc, httpx.TransportError):
        what = f"connection failed ({type(exc).__name__})"
    else:
        what = type(exc).__name__
    return UploadError(ErrorKind.NETWORK, f"{what} on {op}")


# --- archive problems: what a refused submission, edit or collection add needs changed ---


class ArchiveProblem(enum.StrEnum):
    """Why Bilibili (or the check before sending) refused an archive write.

    These are all ``bad_request`` (the same request gets the same answer); the
    problem says what to change before trying again: split the parts, shorten
    a title, pick another publishing time, or nothing at all
    (``already_in_season`` means the goal is reached).
    """

    TOO_MANY_PARTS = "too_many_parts"  # 21058: more than 100 videos added by one request
    TITLE_TOO_LONG = "title_too_long"  # 21103: archive title over 80 characters
    PART_TITLE_TOO_LONG = "part_title_too_long"  # 21104: a part title over 80 characters
    DESC_TOO_LONG = "desc_too_long"  # 21010: description too long
    DTIME_OUT_OF_RANGE = "dtime_out_of_range"  # 21006: publishing time outside its window
    NO_SUCH_ARCHIVE = "no_such_archive"  # -404 on view/edit: not this account's archive
    SEASON_NOT_FOUND = "season_not_found"  # no such collection or section for this account
    ALREADY_IN_SEASON = "already_in_season"  # 20080: the archive is in the collection already


ARCHIVE_PROBLEM_CODES: dict[int, ArchiveProblem] = {
    21058: ArchiveProblem.TOO_MANY_PARTS,
    21103: ArchiveProblem.TITLE_TOO_LONG,
    21104: ArchiveProblem.PART_TITLE_TOO_LONG,
    21010: ArchiveProblem.DESC_TOO_LONG,
    21006: ArchiveProblem.DTIME_OUT_OF_RANGE,
    -404: ArchiveProblem.NO_SUCH_ARCHIVE,
    20080: ArchiveProblem.ALREADY_IN_SEASON,
}


class ArchiveError(UploadError):
    """A ``bad_request`` refused before anything was sent, naming its :class:`ArchiveProblem`.

    ``code`` is the one Bilibili would have answered (None when it has none),
    so a caller classifies a local refusal and a server's the same way.
    """

    def __init__(self, problem: ArchiveProblem, message: str, *, code: int | None = None) -> None:
        super().__init__(ErrorKind.BAD_REQUEST, message, code=code)
        self.problem = ArchiveProblem(problem)


def archive_problem(error: UploadError | None = None, *, code: int | None = None
                    ) -> ArchiveProblem | None:
    """The problem behind a refused archive write, or None when it is not one of those.

    Takes an error (local or from a reply), or just a Bilibili ``code`` as it
    travels in a result message.
    """
    if isinstance(error, ArchiveError):
        return error.problem
    if error is not None:
        if error.kind is not ErrorKind.BAD_REQUEST:
            return None
        code = error.code
    return ARCHIVE_PROBLEM_CODES.get(code) if code is not None else None
