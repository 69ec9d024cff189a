"""bupmesh/logs.py: every line leaves scrubbed, in human or JSON form, whatever logged it."""

from __future__ import annotations

import base64
import io
import json
import logging
import urllib.parse
from collections.abc import Iterator

import pytest

from bupmesh.config import ConfigError
from bupmesh.logs import REDACTED, Secret, SecretRegistry, setup_logging

PSK = "psk-Distinctive-7f3a9c"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZ2VudC0xIiwiZXhwIjoxfQ."
       "c2lnbmF0dXJlLWJ5dGVz")


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, SecretRegistry, logging.Logger]]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream, registry = io.StringIO(), SecretRegistry()
    yield stream, registry, logging.getLogger("bupmesh.test")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def test_registered_secrets_and_their_encodings_are_scrubbed_everywhere(capture) -> None:
    stream, registry, log = capture
    setup_logging("DEBUG", "human", secrets=[PSK, None, ""], stream=stream, registry=registry)
    b64 = base64.b64encode(PSK.encode()).decode()
    log.info("psk %s, b64 %s, url %s", PSK, b64, urllib.parse.quote(PSK + "/x", safe=""))
    try:
        raise ValueError(f"bad key {PSK!r}")
    except ValueError:
        log.exception("while checking")
    log.warning("agent says hi", extra={"agent": "a1"})
    text = stream.getvalue()
    assert PSK not in text and b64 not in text and b64.rstrip("=") not in text
    assert text.count(REDACTED) >= 4
    assert "Traceback" in text and "ValueError" in text  # the traceback stays, minus the key
    assert "bupmesh.test [a1]: agent says hi" in text


def test_secret_shapes_are_scrubbed_without_registration(capture) -> None:
    stream, registry, log = capture
    setup_logging("INFO", "human", stream=stream, registry=registry)
    log.info("token %s", JWT)
    log.info("Cookie: SESSDATA=sess-value-1; bili_jct=csrf-value-2; DedeUserID=10001")
    log.info("GET /x/vu/app/add?access_key=ak-value-3&appkey=1&sign=abcdef0123")
    log.info("headers {'Authorization': 'Bearer bearer-value-4', 'X-Upos-Auth': 'upos-value-5'}")
    log.info('session {"auth": "upos-value-6", "biz_id": 7}')
    log.info("webhook http://user:pass-value-7@example.test/x")
    text = stream.getvalue()
    for value in (JWT, "sess-value-1", "csrf-value-2", "ak-value-3", "bearer-value-4",
                  "upos-value-5", "upos-value-6", "pass-value-7", "abcdef0123"):
        assert value not in text, value
    # what is not secret stays readable
    assert "DedeUserID=10001" in text and '"biz_id": 7' in text and "appkey=1" in text


def test_json_lines(capture) -> None:
    stream, registry, log = capture
    setup_logging("INFO", "json", secrets=[PSK], stream=stream, registry=registry)
    log.info("registered with %s", PSK, extra={"agent": "a1", "count": 3})
    log.debug("not at INFO")
    [line] = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "INFO" and entry["logger"] == "bupmesh.test"
    assert entry["msg"] == f"registered with {REDACTED}"
    assert entry["agent"] == "a1" and entry["count"] == 3 and entry["ts"].endswith("Z")


def test_short_values_are_not_scrubbed_as_text() -> None:
    registry = SecretRegistry()
    registry.add("abc")
    assert registry.scrub("abc abcdef") == "abc abcdef"


def test_webhook_url_parts_are_secret() -> None:
    registry = SecretRegistry()
    registry.add_url("https://hooks.example/services/T0KEN0123456789abc?access=q-value-1234")
    out = registry.scrub("posting to T0KEN0123456789abc with q-value-1234 via hooks.example")
    assert "T0KEN0123456789abc" not in out and "q-value-1234" not in out
    assert "hooks.example" in out  # the host alone is no secret


def test_secret_wrapper_never_shows_its_value() -> None:
    secret = Secret(PSK)
    assert PSK not in f"{secret} {secret!r} {[secret]} {dict(k=secret)}"
    assert secret.reveal() == PSK and secret == Secret(PSK) and secret != Secret("other")
    assert not Secret("")
    with pytest.raises(TypeError):
        hash(secret)


def test_bad_level_or_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--log-level"):
        setup_logging("LOUD", "human", stream=io.StringIO(), registry=SecretRegistry())
    with pytest.raises(ConfigError, match="--log-format"):
        setup_logging("INFO", "xml", stream=io.StringIO(), registry=SecretRegistry())  # type: ignore[arg-type]
