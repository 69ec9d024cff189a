"""The web console in a real browser, in Chinese: a QR login, a room, a submission.

A real simulator, hub and agent. The browser says it speaks zh-CN, so the page does.
From the page: add accounts from a cookie string and from biliup's cookies.json, log
one in by QR code (the page draws the code and follows the login's state while the
test plays the phone through the simulator's ``/_sim/qr`` routes), add a room that uses that account, submits by itself and deletes its files
once uploaded (after a refused value, which the page marks), then watch a
BililiveRecorder session of that room become an archive on the page, the charts
fill, and the retention section and the recording's history show the deletions.
Last, the language switch: the page turns English and stays English after a reload.

A screenshot of the Chinese page is kept in the test's directory (``console-zh.png``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import qrcode

from bupmesh.localmesh import OPEN_RISK_YAML, SIM_COOKIES, LocalMesh, write_random_file
from tests.support.browser import open_page

pytestmark = pytest.mark.e2e

KiB = 1024
SECRET = "console-hook-secret"
ROOM = 4242


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    recorder = tmp_path / "brec"
    recorder.mkdir()
    with LocalMesh(tmp_path / "mesh") as local:
        local.start_sim()
        local.start_hub(config_yaml=OPEN_RISK_YAML + f"""
bilibili:
  passport_url: {local.sim_url}
  api_url: {local.sim_url}
ingest:
  bililive_recorder_work_dir: {recorder}
  webhook_secret: {SECRET}
retention:
  interval_seconds: 0.5
submission:
  settle_seconds: 0.3
  unknown_wait_seconds: 1
  agent_deadline_seconds: 6
  retry_seconds: 1
""")
        local.start_agent(1)
        local.wait_agents_online(1)
        local.recorder = recorder  # type: ignore[attr-defined]
        yield local


@pytest.fixture
def page(tmp_path: Path) -> Iterator[object]:
    with open_page(tmp_path / "chromium-profile", "zh-CN") as opened:
        yield opened


def qr_dark_modules(url: str) -> int:
    """How many dark modules the QR code of ``url`` has (as the hub draws it)."""
    qr = qrcode.QRCode(border=0)
    qr.add_data(url)
    qr.make(fit=True)
    return sum(row.count(True) for row in qr.get_matrix())


def brec_event(kind: str, session: str, **data: object) -> dict:
    return {
        "EventType": kind, "EventTimestamp": "2026-12-01T20:00:00+08:00",
        "EventId": str(uuid.uuid4()),
        "EventData": {"SessionId": session, "RoomId": ROOM, "ShortId": 0, "Name": "主播",
                      "Title": "深夜杂谈", "AreaNameParent": "聊天", "AreaNameChild": "聊天电台",
                      "Recording": True, "Streaming": True, **data},
    }


def record_session(mesh: LocalMesh) -> tuple[list[str], list[Path]]:
    """One recorder session of room ROOM with two files -> their MD5s and paths."""
    root: Path = mesh.recorder  # type: ignore[attr-defined]
    session = str(uuid.uuid4())
    (root / f"{ROOM}-主播").mkdir()
    events, md5s, files = [brec_event("SessionStarted", session)], [], []
    for n in range(2):
        rel = f"{ROOM}-主播/录制-{ROOM}-20261201-20000{n}-深夜杂谈.flv"
        md5s.append(write_random_file(root / rel, 400 * KiB + n, seed=40 + n))
        files.append(root / rel)
        events.append(brec_event("FileClosed", session, RelativePath=rel,
                                 FileSize=400 * KiB + n,
                                 FileOpenTime=f"2026-12-01T20:0{n}:00+08:00",
                                 FileCloseTime=f"2026-12-01T20:0{n}:59+08:00"))
    events.append(brec_event("SessionEnded", session))
    for event in events:
        answer = httpx.post(f"{mesh.hub_url}/api/webhook/bililive-recorder", json=event,
                            params={"secret": SECRET}, timeout=30)
        assert answer.status_code == 200, answer.text
    return md5s, files


def test_console_in_chinese(mesh: LocalMesh, page: object, tmp_path: Path) -> None:
    from playwright.sync_api import Page, expect

    p: Page = page  # type: ignore[assignment]
    errors: list[str] = []  # whatever the page's code throws
    p.on("pageerror", lambda error: errors.append(str(error)))
    p.goto(mesh.hub_url + "/")

    # The browser speaks Chinese, so does the page, before and after logging in.
    expect(p.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(p.locator("#login-form button[type=submit]")).to_have_text("登录")
    p.fill("#token", "wrong")
    p.click("#login-form button[type=submit]")
    expect(p.locator("#login-error")).to_have_text("管理令牌错误。")
    p.fill("#token", mesh.admin_token)
    p.click("#login-form button[type=submit]")
    expect(p.locator("#live")).to_have_attribute("data-state", "live")
    expect(p.locator("#live")).to_have_text("实时")
    expect(p.locator("#rooms h2")).to_contain_text("直播间")
    expect(p.locator("#accounts-empty")).to_be_visible()

    # -- accounts from a cookie string and from biliup's cookies.json --------------------
    p.fill("#acc-cookie-name", "坏的")
    p.fill("#acc-cookie-text", "no cookie here")
    p.click("#acc-cookie-form button[type=submit]")
    expect(p.locator("#account-error")).to_contain_text("cookies")
    p.fill("#acc-cookie-name", "cookie账号")
    p.fill("#acc-cookie-text", SIM_COOKIES)
    p.click("#acc-cookie-form button[type=submit]")
    expect(p.locator("#accounts-body tr", has_text="cookie账号")).to_contain_text("mid 10001")
    biliup = tmp_path / "cookies.json"
    biliup.write_text(json.dumps({
        "cookie_info": {"cookies": [{"name": "SESSDATA", "value": "json-sess"},
                                    {"name": "bili_jct", "value": "json-csrf"},
                                    {"name": "DedeUserID", "value": "10002"}]},
        "token_info": {"access_token": "json-ak", "mid": 10002, "refresh_token": "json-rt"}}))
    p.click("#acc-tab-json")
    p.fill("#acc-json-name", "json账号")
    p.set_input_files("#acc-json-file", str(biliup))
    p.click("#acc-json-form button[type=submit]")
    json_row = p.locator("#accounts-body tr", has_text="json账号")
    expect(json_row).to_contain_text("mid 10002")
    expect(json_row.locator(".col-keys")).to_have_text("Cookie, access key, refresh token")

    # -- an account, by QR code ---------------------------------------------------------
    p.click("#acc-tab-qr")
    p.fill("#acc-qr-name", "扫码账号")
    p.click("#acc-qr-form button[type=submit]")
    state = p.locator("#qr-state")
    expect(state).to_have_attribute("data-state", "waiting")
    expect(state).to_have_text("请用哔哩哔哩 App 扫描二维码")
    url = p.locator("#qr-url").inner_text()
    (auth_code,) = parse_qs(urlparse(url).query)["auth_code"]
    # The code on the page is the QR code of that URL, module for module.
    expect(p.locator("#qr-code svg rect.qr-dark")).to_have_count(qr_dark_modules(url))
    mesh.sim("POST", f"/_sim/qr/{auth_code}/scan")
    expect(state).to_have_attribute("data-state", "scanned")
    expect(state).to_contain_text("请在手机上确认登录")
    mesh.sim("POST", f"/_sim/qr/{auth_code}/confirm", json={"mid": 7777, "uname": "录播姬"})
    expect(state).to_have_attribute("data-state", "done")
    expect(state).to_contain_text("扫码账号")
    account_row = p.locator("#accounts-body tr", has_text="扫码账号")
    expect(account_row).to_have_attribute("data-valid", "valid")  # checked after the login
    expect(account_row.locator(".col-user")).to_have_text("录播姬 · mid 7777")
    assert [(a["name"], a["mid"]) for a in mesh.admin("GET", "/api/manage/accounts")["accounts"]] \
        == [("cookie账号", 10001), ("json账号", 10002), ("扫码账号", 7777)]

    # -- a room that uses it and submits by itself ---------------------------------------
    p.click("#rooms-add")
    dialog = p.locator("#room-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#room-dialog-title")).to_have_text("添加直播间")
    field = lambda path: dialog.locator(f'[name="{path}"]')  # noqa: E731
    expect(field("tid")).to_have_attribute("placeholder", "继承：171")
    p.fill("#room-id", str(ROOM))
    field("account").fill("扫码账号")
    field("auto_submit").select_option("true")
    field("title_template").fill("【${uname}】${title}")
    field("tags").fill("录播,${uname}")
    # Retention is a section of the room's settings: the form draws it from the schema.
    expect(dialog.locator('fieldset[data-path="retention"] legend')).to_have_text("文件保留")
    field("retention.trigger").select_option("uploaded")
    field("retention.action").select_option("delete")
    field("tid").fill("0")  # refused by the hub, which names the key; nothing is saved
    p.click("#room-save")
    expect(p.locator("#room-error")).to_contain_text("tid")
    expect(field("tid")).to_have_class(re.compile(r"\binvalid\b"))
    expect(dialog).to_be_visible()
    assert mesh.admin("GET", "/api/manage/rooms")["rooms"] == []
    field("tid").fill("27")
    p.click("#room-save")
    expect(dialog).to_be_hidden()
    room_row = p.locator(f'#rooms-body tr[data-key="{ROOM}"]')
    expect(room_row).to_have_attribute("data-origin", "console")
    expect(room_row.locator(".col-account")).to_have_text("扫码账号")
    expect(room_row.locator(".col-auto")).to_have_text("是")
    room = mesh.admin("GET", f"/api/manage/rooms/{ROOM}")
    assert room["settings"] == {"account": "扫码账号", "auto_submit": True, "tid": 27,
                                "title_template": "【${uname}】${title}", "tags": "录播,${uname}",
                                "retention": {"trigger": "uploaded", "action": "delete"}}

    # -- a recording of that room becomes an archive, on the page ------------------------
    md5s, files = record_session(mesh)
    rec_row = p.locator("#recordings-body tr").first
    expect(rec_row).to_have_attribute("data-state", "submitted", timeout=90_000)
    expect(rec_row.locator(".col-submission")).to_contain_text("已投稿")
    expect(rec_row.locator(".col-parts")).to_have_text("已上传 2 / 2")
    (rec,) = mesh.admin("GET", "/api/manage/recordings")["recordings"]
    expect(rec_row.locator(".bvid")).to_have_text(rec["bvid"])
    (sub,) = mesh.sim("GET", "/_sim/submissions")["submissions"]
    assert sub["mid"] == 7777 and sub["tid"] == 27 and sub["title"] == "【主播】深夜杂谈"
    assert [v["filename"] for v in sub["videos"]] == [part["filename"] for part in rec["parts"]]
    uploads = {u["filename"]: u["md5"] for u in mesh.sim_uploads()}
    assert [uploads[part["filename"]] for part in rec["parts"]] == md5s

    # -- the charts: the agent's throughput and its IP's uploads -------------------------
    # (the history comes over the stream every HISTORY_SECONDS, 10 s)
    assert errors == []
    expect(p.locator('#chart-throughput polyline[data-agent="agent-1"]')).to_have_count(
        1, timeout=30_000)
    strip = p.locator('#chart-ips .ip-strip[data-ip="127.0.0.2"]')
    expect(strip).to_have_attribute("data-uploads", "2", timeout=30_000)
    expect(strip).to_contain_text("2 次上传")
    history = mesh.admin("GET", "/api/manage/history")  # what the charts draw, exactly
    assert sum(history["throughput"]["agents"]["agent-1"]) == 2 * 400 * KiB + 1

    # -- retention: the room's rule deleted both files once uploaded, and the page says so
    done = p.locator('#retention-body tr[data-state="done"][data-action="delete"]')
    expect(done).to_have_count(2, timeout=30_000)
    expect(done.first.locator(".col-action")).to_have_text("删除")
    expect(done.first.locator(".col-state")).to_have_text("已处理")
    assert not any(f.exists() for f in files)
    rec_row.locator("button.act-history").click()
    history = p.locator("#history-dialog")
    expect(history).to_be_visible()
    expect(history.locator('#history-body tr[data-kind="retention"]').first).to_be_visible()
    history.locator("form[method=dialog] button").click()

    p.screenshot(path=str(tmp_path / "console-zh.png"), full_page=True)

    # -- the language switch, remembered across a reload ---------------------------------
    p.select_option("#lang", "en")
    expect(p.locator("html")).to_have_attribute("lang", "en")
    expect(p.locator("#rooms h2")).to_contain_text("Rooms")
    expect(rec_row.locator(".col-submission")).to_contain_text("submitted")
    p.reload()
    expect(p.locator("#live")).to_have_attribute("data-state", "live")  # same tab: same token
    expect(p.locator("html")).to_have_attribute("lang", "en")
    expect(p.locator("#accounts h2")).to_have_text("Accounts")
    assert p.evaluate("localStorage.getItem('bupmesh.lang')") == "en"
