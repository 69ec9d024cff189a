"""Logging for every long-running command: human lines or JSON lines, secrets scrubbed.

Redaction is done by construction, at the one place every record passes
through on its way out: the formatter of the handler ``setup_logging``
installs. Whatever a module logs (a message, its arguments, an exception's
traceback, an ``extra`` field), the finished text is scrubbed of

- every secret value the process knows (``register_secret``: the PSK, the admin
  token, a webhook URL, ...) and its base64 / URL-encoded forms, and
- secret *shapes* that need no registration: JWTs, per-agent tokens, ``Authorization: Bearer``
  values, ``X-Upos-Auth`` values, and ``key=value`` / ``"key": "value"`` pairs
  whose key names a secret (``SESSDATA``, ``bili_jct``, ``access_key``, ...).

``Secret`` is the typed wrapper for values that are passed around: its
``str``/``repr`` never show the value, so an f-string or a ``%r`` of a settings
object cannot leak it; ``reveal()`` is the one, greppable, way to use it.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable
from typing import IO, Any, Literal

REDACTED = "[REDACTED]"
LogFormat = Literal["human", "json"]
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Shorter values are not scrubbed as plain text: redacting every "a" would make
# logs unreadable and protect nothing (such a secret is guessable anyway).
MIN_SECRET_LENGTH = 6

# Library loggers whose INFO lines may carry URLs or headers.
NOISY_LOGGERS = ("httpx", "httpcore", "uvicorn", "uvicorn.error", "uvicorn.access", "grpc",
                 "hpack")


class Secret:
    """A secret string whose ``str``/``repr`` are redacted; ``reveal()`` returns the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    __hash__ = None  # type: ignore[assignment]  # equal secrets must not be dict keys by value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    __str__ = __repr__


# Secret shapes recognised without registration. Each keeps the part that says
# what was there (the key, "Bearer ") and replaces the value.
_SECRET_KEYS = (
    r"SESSDATA|bili_jct|DedeUserID__ckMd5|sid|access_key|access_token|refresh_token|"
    r"psk|admin_token|token|password|passwd|secret|webhook_secret|auth|cookies?|"
    r"csrf|sign|appsec"
)
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # JWT: header.payload.signature, header and payload are base64url JSON ("eyJ" = '{"').
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"), REDACTED),
    # A per-agent token (hub/agents/agent_tokens.py): its id may show, its secret never.
    (re.compile(r"\b(bma_[0-9a-f]{12}_)[A-Za-z0-9_-]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(\bbearer\s+)[^\s\"',;]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(x-upos-auth['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"), r"\1" + REDACTED),
    (re.compile(rf"(?i)(\b(?:{_SECRET_KEYS})=)[^;&\s\"',]+"), r"\1" + REDACTED),
    (re.compile(rf"(?i)(['\"](?:{_SECRET_KEYS})['\"]\s*:\s*)(['\"])(?:\\.|(?!\2).)*\2"),
     r"\1\2" + REDACTED + r"\2"),
    # user:password@ in URLs
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@"), r"\1" + REDACTED + "@"),
]


def encoded_forms(value: str) -> set[str]:
    """The forms a secret may take in text: itself, base64 (both alphabets, with and
    without padding), URL-encoded. Tests grep for the same set."""
    raw = value.encode()
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode()
        forms.update({text, text.rstrip("=")})
    return {f for f in forms if f}


class SecretRegistry:
    """Known secret values (and their encoded forms) to scrub from text. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._ordered: tuple[str, ...] = ()

    def add(self, value: str | Secret | None) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not value or len(value) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            new = {f for f in encoded_forms(value) if len(f) >= MIN_SECRET_LENGTH}
            if new <= self._values:
                return
            self._values |= new
            # Longest first: a value that contains another is replaced whole.
            self._ordered = tuple(sorted(self._values, key=len, reverse=True))

    def add_url(self, url: str | Secret | None) -> None:
        """A URL that may carry a token anywhere: the whole URL, its user info, path
        segments and query values are each treated as secret."""
        if isinstance(url, Secret):
            url = url.reveal()
        if not url:
            return
        self.add(url)
        parts = urllib.parse.urlsplit(url)
        self.add(parts.password)
        self.add(parts.username)
        for segment in parts.path.split("/"):
            if len(segment) >= 16:  # a token, not a word such as "hooks" or "alerts"
                self.add(segment)
        for _, value in urllib.parse.parse_qsl(parts.query):
            self.add(value)

    def scrub(self, text: str) -> str:
        for value in self._ordered:
            if value in text:
                text = text.replace(value, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._ordered = ()


# The process's registry: every secret the process learns is added here.
SECRETS = SecretRegistry()


def register_secret(value: str | Secret | None) -> None:
    SECRETS.add(value)


def register_secret_url(url: str | Secret | None) -> None:
    SECRETS.add_url(url)


def scrub(text: str) -> str:
    return SECRETS.scrub(text)


_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class _Base(logging.Formatter):
    def __init__(self, registry: SecretRegistry) -> None:
        super().__init__()
        self.registry = registry

    def format(self, record: logging.LogRecord) -> str:
        try:
            text = self.render(record)
        except Exception:  # a bad %-format must not lose the line
            text = f"{record.levelname} {record.name}: unformattable log record {record.msg!r}"
        return self.registry.scrub(text)

    def render(self, record: logging.LogRecord) -> str:
        raise NotImplementedError

    @staticmethod
    def extras(record: logging.LogRecord) -> dict[str, Any]:
        return {k: v for k, v in vars(record).items()
                if k not in _STANDARD_ATTRS and not k.startswith("_")}


class HumanFormatter(_Base):
    """``2026-11-29 15:40:01,123 INFO bupmesh.hub: message`` (+ ``[agent]`` when set)."""

    def render(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        agent = getattr(record, "agent", None)
        where = f" [{agent}]" if agent else ""
        line = (f"{stamp},{int(record.msecs):03d} {record.levelname} {record.name}{where}: "
                f"{record.getMessage()}")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(_Base):
    """One JSON object per line: ``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``msg``,
    ``extra`` fields (e.g. ``agent``), ``exc`` (traceback text) when there is one."""

    def render(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, Any] = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in self.extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup_logging(
    level: str = "INFO",
    fmt: LogFormat = "human",
    *,
    secrets: Iterable[str | Secret | None] = (),
    stream: IO[str] | None = None,
    registry: SecretRegistry = SECRETS,
) -> logging.Handler:
    """Install one scrubbing handler on the root logger (replacing any others)."""
    from bupmesh.config import ConfigError

    level_name = str(level).upper()
    if level_name not in LEVELS:
        raise ConfigError(f"--log-level: expected one of {', '.join(LEVELS)}, got {level!r}")
    if fmt not in ("human", "json"):
        raise ConfigError(f"--log-format: expected human or json, got {fmt!r}")
    for value in secrets:
        registry.add(value)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(registry) if fmt == "json" else HumanFormatter(registry))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level_name))
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    return handler


def add_arguments(parser: Any) -> None:
    """``--log-level`` and ``--log-format`` for a subcommand's parser."""
    parser.add_argument("--log-level", default="INFO", type=str.upper, choices=list(LEVELS),
                        help="logging level (default INFO)")
    parser.add_argument("--log-format", default="human", choices=["human", "json"],
                        help="human-readable lines (default) or JSON lines")
