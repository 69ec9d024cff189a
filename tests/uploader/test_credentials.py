"""Credentials: both input shapes import, bad input says where, secrets never show."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from uploader.credentials import Credentials, CredentialsError

BILIUP_JSON = {
    "cookie_info": {
        "cookies": [
            {
                "name": "SESSDATA",
                "value": "sess%2Cvalue*x",
                "http_only": 1,
                "expires": 1,
                "secure": 0,
            },
            {"name": "bili_jct", "value": "jct-value", "http_only": 0, "expires": 1, "secure": 0},
            {"name": "DedeUserID", "value": "12345", "http_only": 0, "expires": 1, "secure": 0},
            {
                "name": "DedeUserID__ckMd5",
                "value": "abc",
                "http_only": 0,
                "expires": 1,
                "secure": 0,
            },
        ],
        "domains": [".bilibili.com"],
    },
    "sso": ["https://passport.bilibili.com/api/v2/sso"],
    "token_info": {
        "access_token": "token-value",
        "expires_in": 15552000,
        "mid": 12345,
        "refresh_token": "refresh-value",
    },
    "platform": "BiliTV",
}

SECRETS = ("sess%2Cvalue", "jct-value", "token-value", "refresh-value")


def test_cookie_string() -> None:
    creds = Credentials.from_cookie_string(" SESSDATA=a%2Cb; bili_jct=c ;DedeUserID=77; ")
    assert creds.cookies == {"SESSDATA": "a%2Cb", "bili_jct": "c", "DedeUserID": "77"}
    assert creds.csrf == "c"
    assert creds.mid == 77
    assert creds.access_key is None
    assert creds.cookie_header() == "SESSDATA=a%2Cb; bili_jct=c; DedeUserID=77"


def test_cookie_string_with_access_key_and_mid() -> None:
    creds = Credentials.from_cookie_string("SESSDATA=a", access_key="k", mid=5)
    assert (creds.access_key, creds.mid) == ("k", 5)


@pytest.mark.parametrize("text", ["", "   ", ";;", "SESSDATA", "=x", "a b=c"])
def test_bad_cookie_strings(text: str) -> None:
    with pytest.raises(CredentialsError):
        Credentials.from_cookie_string(text)


def test_bad_cookie_string_error_does_not_echo_it() -> None:
    with pytest.raises(CredentialsError) as info:
        Credentials.from_cookie_string("SESSDATA=topsecret; garbage")
    assert "topsecret" not in str(info.value)
    assert "item 2" in str(info.value)


def test_biliup_json_from_dict_text_and_path(tmp_path: Path) -> None:
    path = tmp_path / "cookies.json"
    path.write_text(json.dumps(BILIUP_JSON), encoding="utf-8")
    variants = [BILIUP_JSON, json.dumps(BILIUP_JSON), path, str(path)]
    results = [Credentials.from_biliup_json(v) for v in variants]
    for creds in results:
        assert creds == results[0]
        assert creds.cookies["SESSDATA"] == "sess%2Cvalue*x"
        assert creds.csrf == "jct-value"
        assert creds.access_key == "token-value"
        assert creds.mid == 12345


def test_biliup_json_token_only() -> None:
    creds = Credentials.from_biliup_json({"token_info": {"access_token": "t", "mid": "9"}})
    assert creds.cookies == {} and creds.access_key == "t" and creds.mid == 9
    with pytest.raises(CredentialsError, match="bili_jct"):
        _ = creds.csrf


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "must be an object"),
        ({}, "no cookies and no access token"),
        ({"cookie_info": {"cookies": "x"}}, "must be a list"),
        ({"cookie_info": {"cookies": [1]}}, "cookies[0] is not an object"),
        ({"cookie_info": {"cookies": [{"name": "a"}]}}, "cookies[0] needs"),
        ({"token_info": []}, "token_info must be an object"),
        ({"token_info": {"access_token": 5}}, "access_token must be a string"),
    ],
)
def test_bad_biliup_json(data: object, fragment: str) -> None:
    with pytest.raises(CredentialsError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        Credentials.from_biliup_json(data)  # type: ignore[arg-type]


def test_missing_cookie_file(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="cookies file"):
        Credentials.from_biliup_json(tmp_path / "nope.json")


def test_repr_and_str_never_show_secrets() -> None:
    creds = Credentials.from_biliup_json(BILIUP_JSON)
    for text in (repr(creds), str(creds), f"{creds}", f"{creds!r}"):
        assert "SESSDATA" in text  # names are fine
        for secret in SECRETS:
            assert secret not in text
    with pytest.raises(TypeError):
        pickle.dumps(creds)
