"""What the real Bilibili member + upos service says, as the simulator repeats it.

Sources (public, read while building the simulator): biliup-rs
(`crates/biliup/src/uploader/line.rs`, `line/upos.rs`, `bilibili.rs`,
`credential.rs`), biliup's Python `bili_webup.py`, bilibili-api-python's
`video_uploader.py`, the bilibili-API-collect page `docs/creativecenter/upload.md`
and issue threads quoting real risk-control replies (biliup-rs #219 and
#181, biliup #1285, #1565 and #1610, DanmakuRender #515, biliup-app-new #37),
the bilibili-API-collect page on the expired ``X-Upos-Auth`` (403
``AUTH_TS_GT_5DAY``) and clients reading ``x/web-interface/zone``.
"""

from __future__ import annotations

# --- upos -------------------------------------------------------------------

BUCKET = "ugcfx2lf"  # upos_uri is upos://ugcfx2lf/n240728ad1p51if4g3ke4s3o95sznogy.mkv
PUT_SUCCESS = b"MULTIPART_PUT_SUCCESS"  # text body of a successful chunk PUT
PROBE_VERSION = 20221109

# zone_upcdn names a line; each is probed at its own URL.
DEFAULT_LINES = ("cs_bda2", "cs_tx", "cs_txa", "cs_alia", "cs_bldsa")

# What x/web-interface/zone says about an address besides the address itself
# (the simulator has no IP database: every caller is in the same place).
ZONE_PLACE = {
    "country": "中国",
    "province": "上海",
    "city": "上海",
    "isp": "电信",
    "latitude": 31.2317,
    "longitude": 121.4726,
    "zone_id": 4325376,
    "country_code": 86,
}

# --- app signing (x/vu/app/add) -----------------------------------------------
# appkey -> appsec pairs used by real tools: BiliTV (biliup-rs submit_by_app,
# bilibili-api-python), Android (biliup-rs), BCut Android (biliup-rs
# submit_by_bcut_android), biliup's Python plugin default.
APP_KEYS: dict[str, str] = {
    "4409e2ce8ffd12b8": "59b43e04ad6965f34319062b478f83dd",
    "783bbb7264451d82": "2653583c8873dea268ab9386918b1d65",
    "5dce947fe22167f9": "5491a31c6bc11fb764a9b1f8d4acf092",
    "ae57252b0c09105d": "c75875c596a69eb55bd119e74b07cfe3",
}

# --- replies ----------------------------------------------------------------

TOO_FAST = "您上传视频过快，请您稍作休息后再继续"
SUBMIT_TOO_FAST = "投稿过于频繁，请稍后再试"
SUBMIT_TOO_SOON = "投稿过于频繁，建议将APP升级至最新版本后再试"
SUBMIT_CHEATING = "批量作弊投稿"
TOOL_DISABLED = "投稿工具已停用"
NOT_LOGGED_IN = "账号未登录"
CSRF_FAILED = "csrf 校验失败"
BAD_REQUEST = "请求错误"
APP_UNKNOWN = "应用程序不存在或已被封禁"
BAD_SIGN = "API校验密匙错误"

CODE_MESSAGES: dict[int, str] = {
    -101: NOT_LOGGED_IN,
    -111: CSRF_FAILED,
    -400: BAD_REQUEST,
    -1: APP_UNKNOWN,
    -3: BAD_SIGN,
    406: TOO_FAST,
    601: TOO_FAST,
    21540: SUBMIT_TOO_FAST,
    21566: SUBMIT_TOO_SOON,
    137022: SUBMIT_TOO_FAST,
    21515: SUBMIT_CHEATING,
    21590: TOOL_DISABLED,
}


def message_for(code: int) -> str:
    return CODE_MESSAGES.get(code, "服务繁忙")


# --- aid -> bvid (the public 2024 algorithm) --------------------------------

_XOR_CODE = 23442827791579
_MAX_AID = 1 << 51
_ALPHABET = "FcwAPNKTMug3GV5Lj7EJnHpWsx4tb8haYeviqBz6rkCy12mUSDQX9RdoZf"


def av2bv(aid: int) -> str:
    chars = list("BV1000000000")
    index = len(chars) - 1
    value = (_MAX_AID | aid) ^ _XOR_CODE
    while value > 0:
        chars[index] = _ALPHABET[value % 58]
        value //= 58
        index -= 1
    chars[3], chars[9] = chars[9], chars[3]
    chars[4], chars[7] = chars[7], chars[4]
    return "".join(chars)
