"""Rooms in the database: ``hub.yml`` seeds them, the console's edits win, and the
admin API refuses what ``hub.yml`` would refuse, naming the key.

Each hub start is modelled by a fresh ``RoomBook`` over the same database file with
the config as that start would load it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from hub.api.routes import build_app
from hub.app import build_service
from hub.config import HubConfig, RoomSettings
from hub.rooms.book import RoomBook, RoomInvalid
from hub.rooms.store import RoomStore
from hub.submission.settings import room_settings

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

ADMIN = "admin-token-for-rooms"


def config(rooms: dict[str, Any], **extra: Any) -> HubConfig:
    return msgspec.convert({"psk": "p", "admin_token": ADMIN, "rooms": rooms,
                            "submission": {"tid": 171, "tags": "录播"}, **extra}, HubConfig)


async def start(db: Path, rooms: dict[str, Any]) -> tuple[RoomBook, HubConfig]:
    cfg = config(rooms)
    book = RoomBook(cfg, RoomStore(db))
    await book.open()
    return book, cfg


async def test_yaml_seeds_then_the_console_wins_until_deleted(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture
                                                              ) -> None:
    db = tmp_path / "bupmesh.db"
    book, cfg = await start(db, {"7": {"tid": 27}, "8": {"auto_submit": True}})
    assert [(r["room_id"], r["origin"], r["settings"]) for r in book.list()] == [
        ("7", "yaml", {"tid": 27}), ("8", "yaml", {"auto_submit": True})]
    assert room_settings(cfg, "7").tid == 27
    book.close()

    # A room nobody edited follows hub.yml: changed and removed entries take effect.
    book, cfg = await start(db, {"7": {"tid": 28}})
    assert [(r["room_id"], r["settings"]) for r in book.list()] == [("7", {"tid": 28})]

    # Edited in the console: the database's version is live at once, and wins over
    # hub.yml at the next start (which says so in its log).
    saved = await book.put("7", RoomSettings(tid=30, account="main"))
    assert saved["origin"] == "console" and saved["settings"] == {"tid": 30, "account": "main"}
    assert saved["effective"]["tid"] == 30 and saved["effective"]["tags"] == "录播"
    assert room_settings(cfg, "7").tid == 30 and room_settings(cfg, "7").account == "main"
    await book.put("9", RoomSettings(auto_submit=True))
    book.close()
    with caplog.at_level(logging.WARNING, logger="bupmesh.hub.rooms"):
        book, cfg = await start(db, {"7": {"tid": 31}})
    assert "room 7: its hub.yml settings are ignored" in caplog.text
    assert {r["room_id"]: r["settings"] for r in book.list()} == {
        "7": {"tid": 30, "account": "main"}, "9": {"auto_submit": True}}
    assert room_settings(cfg, "7").tid == 30 and room_settings(cfg, "9").auto_submit is True

    # DELETE forgets the console's version: back to hub.yml, or gone.
    back = await book.delete("7")
    assert back["deleted"] is False and back["origin"] == "yaml" and back["settings"] == {"tid": 31}
    assert room_settings(cfg, "7").tid == 31
    assert (await book.delete("9"))["deleted"] is True
    assert room_settings(cfg, "9") is cfg.submission
    assert [r["room_id"] for r in book.list()] == ["7"]
    book.close()


async def test_a_stored_room_that_no_longer_passes_is_kept_and_flagged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "bupmesh.db"
    store = RoomStore(db)
    await store.open()
    await store.put("5", '{"tid": 0}', "console")  # as if an older hub had allowed it
    await store.put("6", '{"title_template": "${nope}"}', "console")
    store.close()
    with caplog.at_level(logging.ERROR, logger="bupmesh.hub.rooms"):
        book, cfg = await start(db, {"6": {"tid": 20}})
    rows = {r["room_id"]: r for r in book.list()}
    assert "tid" in rows["5"]["error"] and "${nope}" in rows["6"]["error"]
    assert "5" not in cfg.rooms  # the defaults apply meanwhile
    assert room_settings(cfg, "6").tid == 20  # hub.yml's version meanwhile
    assert "room 5: stored settings no longer valid" in caplog.text
    with pytest.raises(RoomInvalid, match="title_template: unknown placeholder"):
        await book.put("5", RoomSettings(title_template="${nope}"))
    await book.put("5", RoomSettings(tid=21))
    assert "error" not in book.get("5") and room_settings(cfg, "5").tid == 21
    book.close()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[HubConfig, httpx.AsyncClient]]:
    cfg = config({"42": {"tid": 27}}, data_dir=str(tmp_path / "data"), insecure=True)
    service = await build_service(cfg)
    app = build_app(service, admin_token=ADMIN)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://hub",
                                     headers={"Authorization": f"Bearer {ADMIN}"}) as client:
            yield cfg, client
    finally:
        assert service.rooms is not None
        service.rooms.close()
        service.accounts.close()
        service.store.close()


async def test_room_api(api: tuple[HubConfig, httpx.AsyncClient]) -> None:
    cfg, client = api

    async def call(method: str, path: str, **kw: Any) -> tuple[int, Any]:
        r = await client.request(method, path, **kw)
        body = r.json()
        return r.status_code, body["data"] if r.status_code == 200 else body["message"]

    code, data = await call("GET", "/api/manage/rooms")
    assert code == 200 and [(r["room_id"], r["origin"], r["in_yaml"]) for r in data["rooms"]] \
        == [("42", "yaml", True)]

    # The schema the page draws its form from: every RoomSettings key, with ranges,
    # descriptions and the inherited values.
    code, data = await call("GET", "/api/manage/rooms/schema")
    assert code == 200
    schema = data["schema"]
    props = schema["$defs"][schema["$ref"].split("/")[-1]]["properties"]
    assert set(props) == set(RoomSettings.__struct_fields__)
    tid = next(s for s in props["tid"]["anyOf"] if s.get("type") == "integer")
    assert (tid["minimum"], tid["maximum"]) == (1, 100_000)
    assert "分区" in props["tid"]["description"]  # what submission.tid says about itself
    assert data["defaults"]["tid"] == 171 and data["defaults"]["tags"] == "录播"

    body = {"account": "main", "tid": 27, "tags": ["录播", "${uname}"], "auto_submit": True,
            "title_template": "【${uname}】${title}"}
    code, room = await call("PUT", "/api/manage/rooms/4242", json=body)
    assert code == 200 and room["origin"] == "console" and room["settings"] == body
    assert room_settings(cfg, "4242").auto_submit is True
    code, room = await call("GET", "/api/manage/rooms/4242")
    assert code == 200 and room["effective"]["copyright"] == 2
    # A section (retention) inherits key by key from the global one.
    assert room["effective"]["retention"]["trigger"] == "never"
    code, room = await call("PUT", "/api/manage/rooms/4243",
                            json={"retention": {"trigger": "uploaded", "delay_days": 2}})
    assert code == 200 and room["settings"] == {"retention": {"trigger": "uploaded",
                                                              "delay_days": 2}}
    assert room["effective"]["retention"]["trigger"] == "uploaded"
    assert room["effective"]["retention"]["action"] == "delete"  # the global one
    assert room_settings(cfg, "4243").tid == 171
    assert cfg.rooms["4243"].retention.delay_days == 2

    # Refusals name the key, as hub.yml's would, and change nothing.
    for bad, words in (({"tid": 0}, "tid: Expected `int` >= 1"),
                       ({"copyright": 3}, "copyright: Expected `int` <= 2"),
                       ({"auto_submit": "yes"}, "auto_submit: Expected `bool | null`"),
                       ({"tidd": 1}, "tidd: unknown field"),
                       ({"title_template": "${nope}"}, "title_template: unknown placeholder"),
                       ({"tags": ["${x"]}, "tags: a lone '$'"),
                       ({"section_id": 5}, "section_id: needs a season_id"),
                       ({"publish_delay_seconds": 60}, "publish_delay_seconds: Bilibili"),
                       ({"cover": "/no/such/cover.jpg"}, "cover: "),
                       ({"retention": {"trigger": "uploaded", "action": "move"}},
                        "retention.move_to: required with action: move"),
                       ({"retention": {"move_to": "relative/dir"}},
                        "retention.move_to: expected an absolute path"),
                       ({"retention": {"delay_days": -1}}, "retention.delay_days: Expected")):
        code, message = await call("PUT", "/api/manage/rooms/4242", json=bad)
        assert code == 400 and words in message, (bad, message)
    assert (await call("GET", "/api/manage/rooms/4242"))[1]["settings"] == body
    code, message = await call("PUT", "/api/manage/rooms/abc", json={})
    assert code == 400 and "room id" in message
    assert (await call("PUT", "/api/manage/rooms/1", content=b"[]"))[0] == 400
    assert (await call("GET", "/api/manage/rooms/1"))[0] == 404
    assert (await call("DELETE", "/api/manage/rooms/1"))[0] == 404

    code, data = await call("DELETE", "/api/manage/rooms/4242")
    assert code == 200 and data["deleted"] is True
    code, data = await call("PUT", "/api/manage/rooms/0042", json={"tid": 30})
    assert code == 200 and data["room_id"] == "42"
    code, data = await call("DELETE", "/api/manage/rooms/42")
    assert code == 200 and data["deleted"] is False and data["settings"] == {"tid": 27}
