"""``bupmesh upload-direct`` as a real subprocess against the simulator."""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bupmesh.config import ConfigError
from tests.conftest import SIM_COOKIES, SimServer, bupmesh_command, free_port, stop_process
from uploader.command import configure, settings_from_args

MiB = 1024 * 1024
SECRETS = ("sim-sessdata", "sim-csrf")


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    peak_rss: int  # bytes: the command's own high-water mark


# Runs the command and reports its peak RSS. Measured from a small helper
# because a child's ru_maxrss includes the memory of the process that forked
# it (vfork/fork share or copy the parent's pages until exec): measured
# straight from pytest, every child would "peak" at pytest's own size.
RSS_HELPER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
open(sys.argv[1], "w").write(str(peak * 1024))
sys.exit(code)
"""


def run_direct(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> Finished:
    """Run ``bupmesh upload-direct``; also report its peak RSS (Linux: ru_maxrss in KiB)."""
    out, err, rss = tmp_path / "stdout.txt", tmp_path / "stderr.txt", tmp_path / "rss.txt"
    rss.unlink(missing_ok=True)
    command = [sys.executable, "-c", RSS_HELPER, str(rss), *bupmesh_command("upload-direct", *args)]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            command,
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # so a timeout can stop the helper and its child
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            raise
    return Finished(
        proc.returncode,
        out.read_text(encoding="utf-8"),
        err.read_text(encoding="utf-8"),
        int(rss.read_text()) if rss.exists() else 0,
    )


def make_file(path: Path, size: int) -> str:
    digest = hashlib.md5()
    block = os.urandom(MiB)
    with path.open("wb") as f:
        written = 0
        index = 0
        while written < size:
            piece = (block[:-4] + index.to_bytes(4, "big"))[: size - written]
            f.write(piece)
            digest.update(piece)
            written += len(piece)
            index += 1
    return digest.hexdigest()


def assert_no_secrets(result: Finished) -> None:
    for secret in SECRETS:
        assert secret not in result.stdout and secret not in result.stderr


@pytest.mark.e2e
def test_json_output_names_the_ledger_entry(sim: SimServer, tmp_path: Path) -> None:
    path = tmp_path / "rec.flv"
    md5 = make_file(path, 3 * MiB + 5)
    result = run_direct(
        tmp_path, str(path), "--member-url", sim.url, "--cookies", SIM_COOKIES, "--json"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    reply = json.loads(lines[0])
    assert set(reply) == {"filename", "biz_id"}
    [entry] = sim.uploads()
    assert (entry["filename"], entry["biz_id"], entry["md5"]) == (
        reply["filename"],
        reply["biz_id"],
        md5,
    )
    assert "100%" in result.stderr  # plain progress lines on a non-terminal
    assert_no_secrets(result)


@pytest.mark.e2e
def test_cookies_file_env_line_and_source_ip(sim: SimServer, tmp_path: Path) -> None:
    cookies = {
        "cookie_info": {
            "cookies": [
                {"name": name, "value": value}
                for name, _, value in (p.strip().partition("=") for p in SIM_COOKIES.split(";"))
            ]
        },
        "token_info": {"access_token": "sim-access-key", "mid": 10001},
    }
    cookie_file = tmp_path / "cookies.json"
    cookie_file.write_text(json.dumps(cookies), encoding="utf-8")
    path = tmp_path / "rec.flv"
    md5 = make_file(path, 1000)
    result = run_direct(
        tmp_path,
        str(path),
        "--line",
        "cs_txa",
        "--source-ip",
        "127.0.0.3",
        "--backend",
        "trio",
        env={"BUPMESH_BILI_MEMBER_URL": sim.url, "BUPMESH_BILI_COOKIES_FILE": str(cookie_file)},
    )
    assert result.returncode == 0, result.stderr
    [entry] = sim.uploads()
    assert entry["md5"] == md5
    assert (entry["line"], entry["source_ip"]) == ("cs_txa", "127.0.0.3")
    assert f"filename: {entry['filename']}" in result.stdout
    assert f"biz_id: {entry['biz_id']}" in result.stdout


@pytest.mark.e2e
def test_risk_control_exits_non_zero_naming_the_kind(sim: SimServer, tmp_path: Path) -> None:
    sim.config(risk={"always_406": ["127.0.0.1"]})
    path = tmp_path / "rec.flv"
    make_file(path, 100)
    result = run_direct(
        tmp_path, str(path), "--member-url", sim.url, "--cookies", SIM_COOKIES, "--json"
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith("risk_control: HTTP 406 on preupload")
    assert len([r for r in sim.requests() if r["op"] == "preupload"]) == 1
    assert_no_secrets(result)


@pytest.mark.e2e
def test_a_captcha_voucher_is_shown(sim: SimServer, tmp_path: Path) -> None:
    sim.config(risk={"preupload_budget": 1, "reply": "601", "until_solved": True})
    path = tmp_path / "rec.flv"
    make_file(path, 100)
    args = (str(path), "--member-url", sim.url, "--cookies", SIM_COOKIES)
    assert run_direct(tmp_path, *args).returncode == 0
    result = run_direct(tmp_path, *args)
    assert result.returncode == 1
    error, voucher = result.stderr.strip().splitlines()[-2:]
    assert error.startswith("risk_control: code 601 on preupload")
    [throttled] = httpx.get(f"{sim.url}/_sim/risk").json()["throttled"]
    assert voucher == f"captcha voucher: {throttled['voucher']}"
    assert_no_secrets(result)


@pytest.mark.e2e
def test_expired_cookies_exit_with_auth(sim: SimServer, tmp_path: Path) -> None:
    path = tmp_path / "rec.flv"
    make_file(path, 100)
    result = run_direct(
        tmp_path,
        str(path),
        "--member-url",
        sim.url,
        "--cookies",
        "SESSDATA=nobody-knows; bili_jct=x",
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("auth: ")
    assert "nobody-knows" not in result.stderr


@pytest.mark.e2e
def test_unreachable_member_is_network(tmp_path: Path) -> None:
    path = tmp_path / "rec.flv"
    make_file(path, 10)
    result = run_direct(
        tmp_path,
        str(path),
        "--member-url",
        f"http://127.0.0.1:{free_port()}",
        "--cookies",
        SIM_COOKIES,
        "--retries",
        "0",
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("network: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cookies", ";;"], "--cookies: cookie string has no cookies"),
        (["--cookies", "SESSDATA=secretvalue; junk"], "--cookies: cookie string: item 2"),
        ([], "credentials: give --cookies"),
        (["--cookies-file", "/nonexistent/cookies.json"], "--cookies-file: cookies file"),
        (["--cookies", SIM_COOKIES, "--line", "no such line!"], "--line: line must look like"),
        (["--cookies", SIM_COOKIES, "--threads", "0"], "--threads: must be at least 1"),
        (["--cookies", SIM_COOKIES, "--member-url", "ftp://x"], "member URL must be http(s)"),
        (
            ["--cookies", SIM_COOKIES, "--source-ip", "127.0.0.2", "--proxy", "socks5://h:1"],
            "source_ip and proxy cannot be combined",
        ),
    ],
)
def test_bad_settings_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    path = tmp_path / "rec.flv"
    make_file(path, 10)
    result = run_direct(tmp_path, str(path), *args, env={"BUPMESH_BILI_COOKIES": ""})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert "secretvalue" not in result.stderr


def test_trio_backend_without_trio_is_a_setting_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """trio comes with the test extras only: without it the hidden flag names itself."""
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(["rec.flv", "--cookies", SIM_COOKIES, "--backend", "trio"])
    assert settings_from_args(args, env={}).backend == "trio"  # installed here
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "trio" else find_spec(name, *a)
    )
    with pytest.raises(ConfigError, match="^--backend: trio is not installed"):
        settings_from_args(args, env={})


def test_missing_file_is_a_file_error(tmp_path: Path) -> None:
    result = run_direct(tmp_path, str(tmp_path / "nope.flv"), "--cookies", SIM_COOKIES)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("file: cannot open")


@pytest.mark.e2e
@pytest.mark.slow
def test_peak_memory_of_a_200mb_upload(sim: SimServer, tmp_path: Path) -> None:
    """Peak RSS of a 200 MB upload stays within the uploader's buffer bound.

    Definition: peak RSS (``ru_maxrss`` of the exited process, see RSS_HELPER) of ``bupmesh
    upload-direct`` uploading a 200 MB file, minus the peak RSS of the same
    command uploading a 0-byte file (the interpreter, imports and sockets),
    must stay under ``(threads + 2) * chunk_size + 30 MB`` with the
    simulator's ``threads`` and ``chunk_size`` (3 and 10 MiB: 80 MiB).
    """
    config = sim.config()
    threads, chunk = config["threads"], config["chunk_size"]
    empty = tmp_path / "empty.flv"
    empty.write_bytes(b"")
    big = tmp_path / "big.flv"
    md5 = make_file(big, 200 * MiB)
    common = ["--member-url", sim.url, "--cookies", SIM_COOKIES, "--json"]

    baseline = run_direct(tmp_path, str(empty), *common)
    assert baseline.returncode == 0, baseline.stderr
    loaded = run_direct(tmp_path, str(big), *common)
    assert loaded.returncode == 0, loaded.stderr

    entry = next(u for u in sim.uploads() if u["filename"] == json.loads(loaded.stdout)["filename"])
    assert entry["md5"] == md5
    bound = (threads + 2) * chunk + 30 * MiB
    growth = loaded.peak_rss - baseline.peak_rss
    print(
        f"peak RSS: 0 B upload {baseline.peak_rss / MiB:.1f} MiB, 200 MB upload "
        f"{loaded.peak_rss / MiB:.1f} MiB, growth {growth / MiB:.1f} MiB, bound {bound / MiB:.0f} MiB"
    )
    assert growth < bound


@pytest.mark.e2e
def test_progress_bar_on_a_terminal(sim: SimServer, tmp_path: Path) -> None:
    """With stderr on a pseudo-terminal the rich bar is drawn; stdout stays plain."""
    import pty
    import select

    path = tmp_path / "rec.flv"
    make_file(path, 2 * MiB)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        bupmesh_command("upload-direct", str(path), "--member-url", sim.url, "--json"),
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "BUPMESH_BILI_COOKIES": SIM_COOKIES, "TERM": "xterm", "COLUMNS": "100"},
    )
    os.close(slave)
    screen = b""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                screen += data
            elif proc.poll() is not None:
                break
        stdout, _ = proc.communicate(timeout=30)
    finally:
        os.close(master)
        stop_process(proc)
    assert proc.returncode == 0
    assert json.loads(stdout)["filename"] == sim.uploads()[0]["filename"]
    text = screen.decode(errors="replace")
    assert "rec.flv" in text and "━" in text  # rich's bar, not the plain lines
    assert "uploaded " not in text
