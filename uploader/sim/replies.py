"""Every reply the simulator sends, in one place, shaped as the real service shapes them.

Bilibili speaks three dialects and clients tell them apart, so the shapes
matter to the byte:
- the JSON API envelope of member, passport and web-interface routes:
  HTTP 200 with ``{"code", "message", "ttl": 1, "data"?}``, errors in ``code``;
- upos: ``{"OK": 1, ...}`` on success, ``{"OK": 0, ...}`` with an HTTP status
  on failure, a bare 403 for a bad ``X-Upos-Auth``, plain text for chunk PUTs;
- risk control on preupload: HTTP 406, or the JSON ``601`` with a voucher;
- a refused upos session: 403, empty body, the reason in ``X-Upos-Auth``.
The ``/_sim`` control API answers plain JSON, ``{"error": ...}`` on a bad call.

Route groups decide *what* to answer; this module alone knows *how it looks*
(sources: :mod:`uploader.sim.facts`).
"""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Iterable
from typing import Any

from starlette.responses import JSONResponse, PlainTextResponse, Response

from uploader.sim.facts import (
    BAD_REQUEST,
    BUCKET,
    PROBE_VERSION,
    PUT_SUCCESS,
    TOO_FAST,
    ZONE_PLACE,
    message_for,
)

NULL_VOUCHER = "voucher_00000000-0000-4000-8000-000000000000"

# --- the JSON API envelope ------------------------------------------------------


def api_reply(code: int, message: str | None = None, data: Any = None) -> JSONResponse:
    """``{"code", "message", "ttl", "data"?}``; the message defaults to Bilibili's for the code."""
    body: dict[str, Any] = {"code": code, "message": message or message_for(code), "ttl": 1}
    if data is not None:
        body["data"] = data
    return JSONResponse(body)


def api_bad_request(problem: str) -> JSONResponse:
    return api_reply(-400, f"{BAD_REQUEST}: {problem}")


def api_server_error(status: int) -> JSONResponse:
    """A member route failing with a 5xx still carries the envelope."""
    return JSONResponse({"code": -500, "message": "服务器错误", "ttl": 1}, status_code=status)


# --- risk control -------------------------------------------------------------


def too_fast_406() -> JSONResponse:
    return JSONResponse({"code": 406, "message": TOO_FAST}, status_code=406)


def code_601(voucher: str = NULL_VOUCHER, status: int = 200) -> JSONResponse:
    """Risk control since late 2025: JSON 601 with a captcha voucher to clear it.

    Clients report it as a failed preupload (a non-2xx reply) with this body;
    the fixed ``code_601`` IP list still answers it with HTTP 200.
    """
    return JSONResponse(
        {
            "OK": 0,
            "info": TOO_FAST,
            "code": 601,
            "message": TOO_FAST,
            "detail": {"v_voucher": voucher},
        },
        status_code=status,
    )


def captcha_solved(voucher: str, key: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"solved": voucher, "key": key})


# --- preupload and lines --------------------------------------------------------


def upos_code(code: int) -> JSONResponse:
    """A refused preupload (or injected upos code) in upos' dialect: HTTP 200, ``OK: 0``."""
    return JSONResponse({"OK": 0, "code": code, "message": message_for(code)})


def preupload_bad_request(problem: str) -> JSONResponse:
    return JSONResponse({"OK": 0, "code": -400, "message": f"{BAD_REQUEST}: {problem}"}, 400)


def preupload_ticket(
    *,
    auth: str,
    biz_id: int,
    chunk_size: int,
    host: str,
    profile: str,
    threads: int,
    ip: str,
    key: str,
) -> JSONResponse:
    """What a granted preupload hands out; ``endpoint`` is the simulator itself."""
    endpoint = f"//{host}"
    return JSONResponse(
        {
            "OK": 1,
            "auth": auth,
            "biz_id": biz_id,
            "chunk_retry": 10,
            "chunk_retry_delay": 3,
            "chunk_size": chunk_size,
            "endpoint": endpoint,
            "endpoints": [endpoint],
            "expose_params": None,
            "put_query": "os=upos&profile=" + urllib.parse.quote(profile, safe=""),
            "threads": threads,
            "timeout": 1200,
            "uip": ip,
            "upos_uri": f"upos://{BUCKET}/{key}",
        }
    )


def probe_list(host: str, line_names: Iterable[str]) -> JSONResponse:
    """``preupload?r=probe``: each line with the URL to time it at."""
    lines = []
    for name in line_names:
        zone, _, upcdn = name.partition("_") if "_" in name else ("cs", "", name)
        lines.append(
            {
                "os": "upos",
                "probe_url": f"//{host}/upcdn/{name}/OK",
                "query": f"upcdn={upcdn}&probe_version={PROBE_VERSION}&zone={zone}",
                "zone": zone,
                "upcdn": upcdn,
                "line": name,
            }
        )
    # No "get" key in "probe": biliup and biliup-rs then POST 0.1 MB, as
    # bilibili-api-python always does.
    return JSONResponse({"OK": 1, "lines": lines, "probe": {}})


def probe_ok() -> PlainTextResponse:
    return PlainTextResponse("OK")


def no_such_line() -> PlainTextResponse:
    return PlainTextResponse("no such line", status_code=404)


# --- upos objects ---------------------------------------------------------------


def upos_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"OK": 0, "message": message}, status_code=status)


def auth_refused() -> Response:
    """A wrong ``X-Upos-Auth``: upos answers 403 with an empty body."""
    return Response(status_code=403)


def auth_expired(now: int, age: int) -> Response:
    """A session past the simulator's ``session_ttl_seconds``: 403, the reason in a header."""
    return Response(
        status_code=403,
        headers={"X-Upos-Auth": f"AUTH_TS_GT_TTL Now={now} DURATION={age}"},
    )


def auth_too_old(auth: str, now: int, age: int) -> Response:
    """An ``X-Upos-Auth`` older than five days, as upos answers it: 403, an empty body,
    ``X-Upos-Auth: AUTH_TS_GT_5DAY AUTH=<the auth> Now=<unix s> DURATION=<age s>``."""
    return Response(
        status_code=403,
        headers={"X-Upos-Auth": f"AUTH_TS_GT_5DAY AUTH={auth} Now={now} DURATION={age}"},
    )


def wrong_address(uip: str, ip: str) -> Response:
    """A request from another address than the auth's ``uip``: 403, an empty body.

    What real upos answers here has not been observed; the header is the
    simulator's own hint, in the shape of the expired-auth one.
    """
    return Response(status_code=403, headers={"X-Upos-Auth": f"AUTH_UIP_MISMATCH UIP={uip} IP={ip}"})


def upload_started(key: str, upload_id: str) -> JSONResponse:
    return JSONResponse({"OK": 1, "bucket": BUCKET, "key": f"/{key}", "upload_id": upload_id})


def part_stored() -> Response:
    return Response(PUT_SUCCESS, media_type="text/plain")


def upload_completed(key: str) -> JSONResponse:
    return JSONResponse(
        {"OK": 1, "location": f"{BUCKET}/{key}", "bucket": BUCKET, "key": f"/{key}"}
    )


def nobody_listening() -> Response:
    """What a handler returns once the connection is gone (dropped, stalled out): never sent."""
    return Response(status_code=499)


# --- web-interface ---------------------------------------------------------------------


def zone(addr: str) -> JSONResponse:
    """``x/web-interface/zone``: the caller's address as Bilibili sees it, and where it is."""
    return api_reply(0, "0", {"addr": addr, **ZONE_PLACE})


# --- member: covers, archives ---------------------------------------------------------


COVER_HOST = "https://archive.biliimg.com/bfs/archive/"


def cover_uploaded(name: str) -> JSONResponse:
    """``x/vu/web/cover/up``: where the image now lives (``name`` is ``{sha1}.{ext}``)."""
    return api_reply(0, "0", {"url": COVER_HOST + name})


def archive_created(aid: int, bvid: str) -> JSONResponse:
    return api_reply(0, "0", {"aid": aid, "bvid": bvid})


def _archive_object(record: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """The ``Archive``/``archive`` object of list and view replies (the fields a client reads)."""
    return {
        "aid": record["aid"],
        "bvid": record["bvid"],
        "mid": record["mid"],
        "title": record["title"],
        "tid": record["tid"],
        "tag": record["tag"],
        "desc": record["desc"],
        "copyright": record["copyright"],
        "source": record["source"],
        "cover": record["cover"],
        "dynamic": record["dynamic"],
        "no_reprint": record["no_reprint"],
        "dtime": record["dtime"] or 0,
        "ctime": record["ctime"],
        "state": status["state"],
        "state_desc": status["state_desc"],
        "reject_reason": status["reject_reason"],
    }


def _videos(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "aid": record["aid"],
            "bvid": record["bvid"],
            "title": v["title"],
            "desc": v["desc"],
            "filename": v["filename"],
            "cid": v["cid"],
            "index": i,
        }
        for i, v in enumerate(record["videos"], start=1)
    ]


def archive_list(
    page: list[tuple[dict[str, Any], dict[str, Any]]],
    *,
    pn: int,
    ps: int,
    count: int,
    with_videos: bool,
) -> JSONResponse:
    """``x/web/archives``: one ``arc_audits`` entry per (archive, review status) on the page.

    ``with_videos`` False answers ``"Videos": null``, as the creative centre's
    sibling list does (whether this one does is not confirmed).
    """
    audits = [
        {
            "Archive": _archive_object(record, status),
            "Videos": _videos(record) if with_videos else None,
            "stat": {"aid": record["aid"], "view": 0},
        }
        for record, status in page
    ]
    return api_reply(0, "0", {"arc_audits": audits, "page": {"pn": pn, "ps": ps, "count": count}})


def archive_view(record: dict[str, Any], status: dict[str, Any]) -> JSONResponse:
    """``x/vupre/web/archive/view``: the archive and every video with its server file name."""
    return api_reply(0, "0", {"archive": _archive_object(record, status), "videos": _videos(record)})


def archive_edited(aid: int, bvid: str) -> JSONResponse:
    return api_reply(0, "0", {"aid": aid, "bvid": bvid})


def season_list(seasons: list[dict[str, Any]], *, total: int) -> JSONResponse:
    """``x2/creative/web/seasons``: each collection with its sections and episodes."""
    items = []
    for season in seasons:
        episodes = [e for section in season["sections"] for e in section["episodes"]]
        items.append({
            "season": {"id": season["season_id"], "title": season["title"], "desc": "",
                       "cover": "", "isEnd": 0, "mid": season["mid"], "state": 0,
                       "ctime": season["ctime"], "mtime": season["ctime"], "ep_num": len(episodes)},
            "sections": {"sections": [
                {"id": section["section_id"], "type": 1, "seasonId": season["season_id"],
                 "title": section["title"], "order": order, "state": 0,
                 "epCount": len(section["episodes"]), "Episodes": None}
                for order, section in enumerate(season["sections"], start=1)
            ]},
            "part_episodes": [
                {"id": e["episode_id"], "title": e["title"], "aid": e["aid"], "bvid": e["bvid"],
                 "cid": e["cid"], "seasonId": season["season_id"], "sectionId": e["section_id"],
                 "order": order}
                for order, e in enumerate(episodes, start=1)
            ] or None,
        })  # fmt: skip
    return api_reply(0, "0", {"seasons": items, "tip": {"title": "", "url": ""}, "total": total,
                              "play_type": 1})  # fmt: skip


def episodes_added() -> JSONResponse:
    """``season/section/episodes/add``: the envelope alone."""
    return api_reply(0, "0")


def cover_image(image: bytes, mime: str) -> Response:
    return Response(image, media_type=mime)


# --- passport ---------------------------------------------------------------------


def qr_code(auth_code: str) -> JSONResponse:
    url = "https://passport.bilibili.com/x/passport-tv-login/h5/qrcode/auth?auth_code=" + auth_code
    return api_reply(0, "0", {"url": url, "auth_code": auth_code})


def qr_login(
    *,
    mid: int,
    sessdata: str,
    bili_jct: str,
    access_token: str,
    refresh_token: str,
    sid: str,
    expires_in: int,
    now: float,
) -> JSONResponse:
    """A confirmed TV login: the tokens twice (old and new field names) and the web cookies."""
    token_info = {
        "mid": mid,
        "access_token": access_token,
        "refresh_token": refresh_token,
        "expires_in": expires_in,
    }
    cookies = [
        ("SESSDATA", sessdata, 1),
        ("bili_jct", bili_jct, 0),
        ("DedeUserID", str(mid), 0),
        ("DedeUserID__ckMd5", hashlib.md5(str(mid).encode()).hexdigest()[:16], 0),
        ("sid", sid, 0),
    ]
    expires = int(now) + expires_in
    data = {
        "is_new": False,
        **token_info,
        "token_info": token_info,
        "cookie_info": {
            "cookies": [
                {"name": n, "value": v, "http_only": h, "expires": expires, "secure": 0}
                for n, v, h in cookies
            ],
            "domains": [".bilibili.com", ".biligame.com"],
        },
        "sso": ["https://passport.bilibili.com/api/v2/sso"],
    }
    return api_reply(0, "0", data)


def nav_logged_in(mid: int, uname: str) -> JSONResponse:
    return api_reply(0, "0", {"isLogin": True, "mid": mid, "uname": uname, "email_verified": 1})


def nav_logged_out() -> JSONResponse:
    return api_reply(-101, None, {"isLogin": False})


# --- the /_sim control API --------------------------------------------------------------


def control_ok(body: Any) -> JSONResponse:
    return JSONResponse(body)


def control_error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
