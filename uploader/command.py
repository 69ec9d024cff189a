"""``bupmesh upload-direct``: upload one file straight from this machine, no mesh.

This is the baseline users and benchmarks compare the mesh to, so it is the
plain uploader with nothing added: one process, one egress, bounded memory.
Progress goes to stderr (a bar on a terminal, a line every 10 % otherwise);
stdout carries only the result, so ``--json`` output can be piped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import anyio
import msgspec

from bupmesh.config import ConfigError, load_config
from bupmesh.progress_bar import ProgressBar
from uploader.client import DEFAULT_MEMBER_URL, BiliClient
from uploader.credentials import Credentials, CredentialsError
from uploader.errors import ErrorKind, UploadError
from uploader.lines import parse_line
from uploader.progress import Progress
from uploader.retry import RetryPolicy
from uploader.source import FileSource
from uploader.upos import UploadResult, UposUploader


class UploadDirectSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    file: str
    member_url: str = DEFAULT_MEMBER_URL
    cookies: str | None = None
    cookies_file: str | None = None
    line: str = "auto"
    source_ip: str | None = None
    proxy: str | None = None
    threads: int | None = None
    timeout: float = 60.0
    retries: int = 3
    json: bool = False
    backend: str = "asyncio"


ENV_KEYS = {
    "BUPMESH_BILI_MEMBER_URL": "member_url",
    # Preferred over --cookies: a flag shows up in `ps` to every local user.
    "BUPMESH_BILI_COOKIES": "cookies",
    "BUPMESH_BILI_COOKIES_FILE": "cookies_file",
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the recording to upload")
    parser.add_argument(
        "--member-url",
        help=f"Bilibili member API base (default {DEFAULT_MEMBER_URL}; env BUPMESH_BILI_MEMBER_URL)",
    )
    creds = parser.add_mutually_exclusive_group()
    creds.add_argument(
        "--cookies",
        metavar="STRING",
        help='"SESSDATA=...; bili_jct=...; DedeUserID=..." (env BUPMESH_BILI_COOKIES is safer)',
    )
    creds.add_argument(
        "--cookies-file", metavar="F", help="biliup cookies.json (env BUPMESH_BILI_COOKIES_FILE)"
    )
    parser.add_argument("--line", help="upload line such as cs_bda2, or auto (default: auto)")
    parser.add_argument(
        "--source-ip", metavar="IP", help="bind outgoing connections to this address"
    )
    parser.add_argument("--proxy", metavar="URL", help="HTTP or SOCKS5 proxy, e.g. socks5://h:1080")
    parser.add_argument("--threads", type=int, help="at most this many concurrent chunk PUTs")
    parser.add_argument("--timeout", type=float, help="seconds per HTTP request (default 60)")
    parser.add_argument("--retries", type=int, help="network retries per request (default 3)")
    parser.add_argument(
        "--json", action="store_true", default=None, help='print {"filename", "biz_id"} as JSON'
    )
    parser.add_argument("--backend", choices=["asyncio", "trio"], help=argparse.SUPPRESS)


def settings_from_args(
    args: argparse.Namespace, env: dict[str, str] | None = None
) -> UploadDirectSettings:
    flags = {
        "file": args.file,
        "member_url": args.member_url,
        "cookies": args.cookies,
        "cookies_file": args.cookies_file,
        "line": args.line,
        "source_ip": args.source_ip,
        "proxy": args.proxy,
        "threads": args.threads,
        "timeout": args.timeout,
        "retries": args.retries,
        "json": args.json,
        "backend": args.backend,
    }
    environ = dict(os.environ if env is None else env)
    # A flag for one kind of credentials overrides the environment's other kind.
    if args.cookies or args.cookies_file:
        environ.pop("BUPMESH_BILI_COOKIES", None)
        environ.pop("BUPMESH_BILI_COOKIES_FILE", None)
    settings = load_config(UploadDirectSettings, env=environ, env_keys=ENV_KEYS, flags=flags)
    if settings.threads is not None and settings.threads < 1:
        raise ConfigError("--threads: must be at least 1")
    if settings.timeout <= 0:
        raise ConfigError("--timeout: must be positive")
    if settings.retries < 0:
        raise ConfigError("--retries: must not be negative")
    # The trio backend exists to prove the uploader backend-neutral; trio
    # comes with the test extras only.
    if settings.backend == "trio" and importlib.util.find_spec("trio") is None:
        raise ConfigError("--backend: trio is not installed (pip install trio)")
    if settings.line.strip().lower() != "auto":
        try:
            parse_line(settings.line)
        except ValueError as exc:
            raise ConfigError(f"--line: {exc}") from None
    return settings


def load_credentials(settings: UploadDirectSettings) -> Credentials:
    try:
        if settings.cookies_file:
            return Credentials.from_biliup_json(Path(settings.cookies_file))
        if settings.cookies:
            return Credentials.from_cookie_string(settings.cookies)
    except CredentialsError as exc:
        flag = "--cookies-file" if settings.cookies_file else "--cookies"
        raise ConfigError(f"{flag}: {exc}") from None
    raise ConfigError("credentials: give --cookies STRING or --cookies-file cookies.json")


class _Reporter:
    """Progress on stderr: a rich bar on a terminal, sparse plain lines otherwise."""

    def __init__(self, name: str, total: int, *, tty: bool) -> None:
        self.total = total
        self.tty = tty
        self._next_fraction = 0.1
        self._last_line = time.monotonic()
        self._bar = ProgressBar(name, enabled=tty, total=max(total, 1))

    def __enter__(self) -> _Reporter:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)

    def __call__(self, progress: Progress) -> None:
        if self._bar.enabled:
            self._bar.update(progress.uploaded if self.total else 1)
            return
        now = time.monotonic()
        if progress.fraction + 1e-9 < self._next_fraction and now - self._last_line < 10:
            return
        while self._next_fraction <= progress.fraction + 1e-9:
            self._next_fraction += 0.1
        self._last_line = now
        eta = "?" if progress.eta_seconds == float("inf") else f"{progress.eta_seconds:.0f}s"
        print(
            f"uploaded {progress.uploaded / 1e6:.1f}/{progress.total / 1e6:.1f} MB "
            f"({progress.fraction * 100:.0f}%) {progress.speed_bps / 1e6:.1f} MB/s ETA {eta}",
            file=sys.stderr,
            flush=True,
        )


async def upload_file(settings: UploadDirectSettings, credentials: Credentials) -> UploadResult:
    path = Path(settings.file)
    try:
        source = FileSource(path)
    except OSError as exc:
        raise UploadError(ErrorKind.FILE, f"cannot open {path}: {exc.strerror or exc}") from None
    with source:
        try:
            client = BiliClient(
                credentials,
                member_url=settings.member_url,
                source_ip=settings.source_ip,
                proxy=settings.proxy,
                timeout=settings.timeout,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        async with client:
            with _Reporter(path.name, source.size, tty=sys.stderr.isatty()) as reporter:
                uploader = UposUploader(
                    client,
                    line=settings.line,
                    threads=settings.threads,
                    retry=RetryPolicy(attempts=settings.retries),
                    on_progress=reporter,
                )
                return await uploader.upload(source, path.name)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    credentials = load_credentials(settings)
    try:
        result = anyio.run(upload_file, settings, credentials, backend=settings.backend)
    except UploadError as exc:
        print(str(exc), file=sys.stderr, flush=True)
        if exc.voucher:
            # Bilibili wants a captcha solved (upload once by hand on the website or app).
            print(f"captcha voucher: {exc.voucher}", file=sys.stderr, flush=True)
        if exc.retry_after:
            print(f"retry after: {exc.retry_after:g} s", file=sys.stderr, flush=True)
        return 1
    if settings.json:
        print(json.dumps({"filename": result.filename, "biz_id": result.biz_id}), flush=True)
    else:
        print(f"filename: {result.filename}\nbiz_id: {result.biz_id}", flush=True)
    return 0
