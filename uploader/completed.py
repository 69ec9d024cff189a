"""Upload sessions this process completed at upos: its own memory of what upos made.

upos answers a repeated completion of a finished session with the same object,
which is how an attempt whose answer was lost is finished without a second
object. But a repeat can be refused although nothing is wrong: the session's
auth has expired since (``AUTH_TS_GT_5DAY``), or it comes from another address
than the one the session is bound to. A client that completed the session
itself needs no answer from upos: the object is there. The mesh agent keeps one
of these for its life, so a re-offer of an upload it completed (its Result lost
with the link or the hub) is answered from here.
"""

from __future__ import annotations

from collections import OrderedDict

from uploader.session import UposSession

LIMIT = 4096  # sessions remembered; a re-offer follows its completion within minutes


class CompletedUploads:
    """The most recent ``limit`` upload sessions completed by this process."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._done: OrderedDict[tuple[str, str], None] = OrderedDict()

    @staticmethod
    def _key(session: UposSession) -> tuple[str, str]:
        return session.upload_url, session.upload_id

    def __contains__(self, session: object) -> bool:
        return (isinstance(session, UposSession) and bool(session.upload_id)
                and self._key(session) in self._done)

    def add(self, session: UposSession) -> None:
        if not session.upload_id:
            return
        self._done[self._key(session)] = None
        self._done.move_to_end(self._key(session))
        while len(self._done) > self.limit:
            self._done.popitem(last=False)
