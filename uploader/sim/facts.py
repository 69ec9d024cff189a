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
    -404: "啥都木有",
    21006: "发布时间离当前时间必须≥2小时且≤15天，请重新选择",
    21010: "简介字数过长，请缩减内容",
    21103: "稿件标题过长,已经超过80个字符",
    20080: "该视频已在合集中",  # the code is in a public note; the text is ours
}

# --- archives ---------------------------------------------------------------
# Replies quoted in public issue threads: biliup-app #68 (21058), biliup-rs
# #47 and #197 (21104), YoutubeToBilibili #2 (21103), biliup #221 (21006, when
# the window began at 4 hours), biliup #1364 (21010).

TITLE_LIMIT = 80
DESC_LIMIT = 2000  # the submission page's counter


def too_many_parts(limit: int) -> str:
    return f"当前单次操作添加的视频数已经超过限制,当前最大值为{limit}个"


def part_title_too_long(index: int) -> str:
    return f"第({index})个视频的标题过长,已经超过{TITLE_LIMIT}个字符"


# Archive states (archive.state), as Bilibili's own constants name them.
STATE_OPEN = 0  # 开放浏览
STATE_REJECTED = -2  # 被打回
STATE_SUBMITTED = -30  # 创建已提交: waiting for review, also after an edit
STATE_SCHEDULED = -40  # 定时发布: approved, waiting for its dtime
STATE_DESCS = {STATE_REJECTED: "已退回", STATE_SUBMITTED: "审核中", STATE_SCHEDULED: "定时发布"}


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
