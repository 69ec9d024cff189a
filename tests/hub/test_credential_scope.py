"""What an Offer and a Submit carry of an account: only what that message needs."""

from __future__ import annotations

from hub.core.scheduler import upload_credentials
from hub.submission.manager import submit_credentials
from uploader.credentials import Credentials

CREDS = Credentials.from_cookie_string("SESSDATA=s1; bili_jct=j1; DedeUserID=42",
                                       access_key="app-key-1")


def test_an_offer_carries_the_cookies_and_never_the_access_key() -> None:
    sent = upload_credentials(CREDS)
    assert (sent.cookies, sent.access_key, sent.mid) == (CREDS.cookie_header(), "", 42)


def test_a_submit_carries_what_its_api_needs() -> None:
    web = submit_credentials(CREDS, "web")
    assert (web.cookies, web.access_key, web.mid) == (CREDS.cookie_header(), "", 42)
    app = submit_credentials(CREDS, "app")
    assert (app.cookies, app.access_key, app.mid) == ("", "app-key-1", 42)
