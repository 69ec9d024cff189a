"""The account routes' refusals, in process: unreachable Bilibili, unknown ids, bad bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from bupmesh.localmesh import free_port
from hub.accounts.store import AccountStore
from hub.api.routes import build_app
from hub.config import BilibiliSettings

pytestmark = pytest.mark.anyio

ADMIN = "admin-token-for-account-routes"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    nobody = f"http://127.0.0.1:{free_port()}"  # a closed port: Bilibili unreachable
    store = AccountStore(tmp_path / "bupmesh.db", tmp_path / "secret.key")
    await store.open()
    await store.add("web", cookies="SESSDATA=s; bili_jct=j; DedeUserID=1")
    await store.add("app", cookies_json={"token_info": {"access_token": "ak", "mid": 2}})
    service = SimpleNamespace(
        accounts=store,
        config=SimpleNamespace(bilibili=BilibiliSettings(passport_url=nobody, api_url=nobody)),
    )
    app = build_app(service, admin_token=ADMIN)  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://hub",
        headers={"Authorization": f"Bearer {ADMIN}"},
    ) as http:
        yield http
    store.close()


async def test_refusals(client: httpx.AsyncClient) -> None:
    async def status(method: str, path: str, **kw: object) -> tuple[int, str]:
        response = await client.request(method, path, **kw)
        return response.status_code, response.json()["message"]

    code, message = await status("POST", "/api/manage/accounts/qr-login")
    assert code == 502 and "cannot reach the passport" in message
    code, message = await status("POST", "/api/manage/accounts/qr-login", json={"nme": "x"})
    assert code == 400 and "nme: unknown field" in message
    assert (await status("GET", "/api/manage/accounts/qr-login/nope"))[0] == 404
    code, message = await status("POST", "/api/manage/accounts/web/check")
    assert code == 502 and "validity check failed" in message
    code, message = await status("POST", "/api/manage/accounts/app/check")
    assert code == 400 and "no cookies" in message
    assert (await status("POST", "/api/manage/accounts/nope/check"))[0] == 404
    assert (await status("DELETE", "/api/manage/accounts/nope"))[0] == 404
    for method, path in (("POST", "/api/manage/accounts/qr-login"),
                         ("GET", "/api/manage/accounts/qr-login/x"),
                         ("POST", "/api/manage/accounts/web/check"),
                         ("DELETE", "/api/manage/accounts/web")):
        response = await client.request(method, path, headers={"Authorization": "Bearer no"})
        assert response.status_code == 401
    # An unchecked account stays unchecked after a failed check: unknown is not invalid.
    listed = (await client.get("/api/manage/accounts")).json()["data"]["accounts"]
    assert [a["valid"] for a in listed] == [None, None]
