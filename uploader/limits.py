"""What Bilibili accepts in one archive write, as pure functions checked before anything is sent.

Bilibili refuses, and the refusal costs a round trip from a risk-watched IP:

- an archive title over 80 characters (21103) and a part title over 80 (21104):
  titles come from templates, so they are cut rather than refused;
- more than 100 videos added by one submission or one edit (21058): the caller
  splits the parts (:func:`batches`) into several archives or several edits;
- a scheduled publishing time (``dtime``, unix seconds) less than 2 hours or
  more than 15 days ahead (21006): refused here, naming the window.

Lengths are counted in Unicode code points, as Bilibili's messages count
characters (an emoji may count differently there; none of the templates make one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from uploader.errors import ArchiveError, ArchiveProblem

TITLE_LIMIT = 80
PART_TITLE_LIMIT = 80
PARTS_PER_REQUEST = 100
DTIME_MIN_AHEAD = 2 * 3600.0
DTIME_MAX_AHEAD = 15 * 86400.0

T = TypeVar("T")


def cut(text: str, limit: int = TITLE_LIMIT) -> str:
    """``text`` shortened to ``limit`` characters, without trailing blanks left by the cut."""
    if limit < 1:
        raise ValueError("limit must be positive")
    return text if len(text) <= limit else text[:limit].rstrip()


def batches(items: Sequence[T], size: int = PARTS_PER_REQUEST) -> list[list[T]]:
    """``items`` in order, in consecutive lists of at most ``size`` (none for no items)."""
    if size < 1:
        raise ValueError("size must be positive")
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def dtime_problem(
    dtime: int,
    now: float,
    *,
    min_ahead: float = DTIME_MIN_AHEAD,
    max_ahead: float = DTIME_MAX_AHEAD,
) -> str | None:
    """Why ``dtime`` cannot be a publishing time at ``now``, or None when it can."""
    ahead = dtime - now
    if ahead < min_ahead:
        return (
            f"dtime {dtime} is {_span(ahead)} ahead; Bilibili needs at least "
            f"{_span(min_ahead)} (scheduled publishing)"
        )
    if ahead > max_ahead:
        return (
            f"dtime {dtime} is {_span(ahead)} ahead; Bilibili takes at most "
            f"{_span(max_ahead)} (scheduled publishing)"
        )
    return None


def check_dtime(
    dtime: int | None,
    now: float,
    *,
    min_ahead: float = DTIME_MIN_AHEAD,
    max_ahead: float = DTIME_MAX_AHEAD,
) -> None:
    """Raise :class:`ArchiveError` (``dtime_out_of_range``, code 21006) unless ``dtime`` fits."""
    if dtime is None:
        return
    problem = dtime_problem(dtime, now, min_ahead=min_ahead, max_ahead=max_ahead)
    if problem is not None:
        raise ArchiveError(ArchiveProblem.DTIME_OUT_OF_RANGE, problem, code=21006)


def check_part_count(count: int, size: int = PARTS_PER_REQUEST) -> None:
    """Raise :class:`ArchiveError` (``too_many_parts``, code 21058) when one write adds too many."""
    if count > size:
        raise ArchiveError(
            ArchiveProblem.TOO_MANY_PARTS,
            f"{count} videos in one request; Bilibili takes at most {size} "
            "(split them with uploader.limits.batches)",
            code=21058,
        )


def _span(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds >= 86400:
        return f"{sign}{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{sign}{seconds / 3600:.1f} hours"
    return f"{sign}{seconds / 60:.0f} minutes"
