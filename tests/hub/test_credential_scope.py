"""What an Offer and a Submit carry of an account: only what that message needs."""

from __future__ import annotations

from hub.core.scheduler import upload_credentials
from hub.submission.manager import submit_credentials
from uploader.credentials import Credentials

CREDS = Credentials.from_cookie_string("SESSDATA=s1; bili_jct=j1; DedeUserID=42",
                                       access_key="app-key-1")
COOKIES = CREDS.cookie_header()


def test_an_offer_carries_the_cookies_and_never_the_access_key() -> None:
    sent = upload_credentials(CREDS)
    assert (sent.cookies, sent.access_key, sent.mid) == (COOKIES, "", 42)


def test_a_submit_carries_what_its_operation_needs() -> None:
    def sent(api: str, operation: str, **kw: object) -> tuple[str, str]:
        creds = submit_credentials(CREDS, api, operation, **kw)  # type: ignore[arg-type]
        assert creds.mid == 42
        return creds.cookies, creds.access_key

    assert sent("web", "add") == (COOKIES, "")  # add/v3: cookies, bili_jct as csrf
    assert sent("app", "add") == ("", "app-key-1")  # app/add: the access key alone
    # a later attempt first looks the archive up, a cover is uploaded: on the web API
    assert sent("app", "add", attempt=2) == (COOKIES, "app-key-1")
    assert sent("app", "add", cover=True) == (COOKIES, "app-key-1")
    for operation in ("append", "season", "review"):  # archive edits and reads: web API
        assert sent("app", operation) == (COOKIES, "")
        assert sent("web", operation) == (COOKIES, "")
