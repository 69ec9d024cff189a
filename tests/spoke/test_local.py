"""Completion and local reads on the agent, without a hub: the uploader's before_complete hook (against the
simulator, both backends), local-read checks (spoke/local.py) and the local_roots setting."""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest

import spoke.local as local
from bupmesh.config import ConfigError
from protocol.integrity import new_part_digest
from spoke.command import configure, settings_from_args
from spoke.config import load_agents
from spoke.local import DigestCache, LocalSource, check_local, normalise_roots, under_roots
from tests.conftest import SIM_ACCESS_KEY, SIM_COOKIES, SimServer
from uploader.client import BiliClient
from uploader.credentials import Credentials
from uploader.errors import ErrorKind, UploadError
from uploader.retry import RetryPolicy
from uploader.session import UposSession
from uploader.source import BytesSource
from uploader.upos import UposUploader

MiB = 1 << 20


def _completes(sim: SimServer) -> list[dict]:
    reply = httpx.get(f"{sim.url}/_sim/requests", params={"op": "complete"}, timeout=10)
    return reply.json()["requests"]


class Abandon(Exception):
    pass


async def _upload(sim: SimServer, data: bytes, hook: Any) -> Any:
    creds = Credentials.from_cookie_string(SIM_COOKIES, access_key=SIM_ACCESS_KEY)
    async with BiliClient(creds, member_url=sim.url) as client:
        uploader = UposUploader(client, line="cs_bda2", before_complete=hook,
                                retry=RetryPolicy(attempts=1, initial=0.01, maximum=0.01))
        return await uploader.upload(BytesSource(data), "hook.flv")


@pytest.mark.anyio
async def test_before_complete_runs_once_after_every_part_and_before_completion(
    sim: SimServer,
) -> None:
    sim.config(chunk_size=1 * MiB)
    data = random.Random(1).randbytes(2 * MiB + 3)
    seen: list[tuple[UposSession, int]] = []

    async def hook(session: UposSession) -> None:
        seen.append((session, len(await anyio.to_thread.run_sync(_completes, sim))))

    result = await _upload(sim, data, hook)
    ((session, completes_then),) = seen
    assert session.committed_offset() == len(data) and completes_then == 0
    assert result.session.upload_id == session.upload_id
    assert len(_completes(sim)) == 1


@pytest.mark.anyio
async def test_before_complete_raising_abandons_the_upload_uncompleted(sim: SimServer) -> None:
    sim.config(chunk_size=1 * MiB)

    async def hook(session: UposSession) -> None:
        raise Abandon()

    with pytest.raises(Abandon):
        await _upload(sim, random.Random(2).randbytes(MiB + 1), hook)
    assert not _completes(sim) and not sim.uploads()


# -- local reads ----------------------------------------------------------------------------------


def test_roots_and_paths() -> None:
    assert normalise_roots(["/srv/rec/", "/srv/rec", "/a/../b"]) == ("/srv/rec", "/b")
    roots = ("/srv/rec",)
    assert under_roots("/srv/rec/x/y.flv", roots)
    assert under_roots("/srv/rec", roots)
    assert not under_roots("/srv/recordings/y.flv", roots)  # a prefix, not a directory
    assert not under_roots("/srv/rec/../etc/passwd", roots)
    assert not under_roots("rec/y.flv", roots) and not under_roots("", roots)


def _file(tmp_path: Path, data: bytes, name: str = "part.flv") -> tuple[Path, str]:
    root = tmp_path / "rec"
    root.mkdir(exist_ok=True)
    path = root / name
    path.write_bytes(data)
    digest = new_part_digest()
    digest.update(data)
    return path, digest.hexdigest()


@pytest.mark.anyio
async def test_check_local_accepts_the_part_and_caches_its_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random.Random(3).randbytes(100_000)
    path, digest = _file(tmp_path, data)
    roots = (str(tmp_path / "rec"),)
    cache = DigestCache()
    hashed: list[str] = []
    real_hash = local._hash_file
    monkeypatch.setattr(local, "_hash_file", lambda *a: hashed.append(a[0]) or real_hash(*a))
    for _ in range(2):
        source = await check_local(str(path), size=len(data), digest=digest.upper(),
                                   roots=roots, cache=cache)
        assert isinstance(source, LocalSource), source
        assert source.digest == digest and source.md5() == "" and source.size == len(data)
        assert bytes(await source.read(10, 20)) == data[10:30]
        source.verify()
        source.close()
    assert len(hashed) == 1  # the second offer used the cache
    assert "digest differs" in str(await check_local(str(path), size=len(data),
                                                     digest="0" * 32, roots=roots, cache=cache))
    assert "bytes" in str(await check_local(str(path), size=len(data) + 1, digest=digest,
                                            roots=roots, cache=cache))
    assert "no digest" in str(await check_local(str(path), size=len(data), digest="",
                                                roots=roots, cache=cache))


@pytest.mark.anyio
async def test_an_older_hubs_md5_still_checks_a_local_copy(tmp_path: Path) -> None:
    """A part hashed by an older hub comes with its MD5 and no digest."""
    data = random.Random(5).randbytes(70_000)
    path, _ = _file(tmp_path, data)
    md5 = hashlib.md5(data).hexdigest()
    roots = (str(tmp_path / "rec"),)
    source = await check_local(str(path), size=len(data), md5=md5, roots=roots,
                               cache=DigestCache())
    assert isinstance(source, LocalSource), source
    assert source.md5() == md5 and source.digest == ""
    source.close()
    assert "md5 differs" in str(await check_local(str(path), size=len(data), md5="1" * 32,
                                                  roots=roots, cache=DigestCache()))


@pytest.mark.anyio
async def test_check_local_refuses_a_symlink_out_of_its_roots(tmp_path: Path) -> None:
    data = b"x" * 1000
    outside = tmp_path / "outside.flv"
    outside.write_bytes(data)
    (tmp_path / "rec").mkdir()
    link = tmp_path / "rec" / "link.flv"
    os.symlink(outside, link)
    reason = await check_local(str(link), size=len(data), md5=hashlib.md5(data).hexdigest(),
                               roots=(str(tmp_path / "rec"),), cache=DigestCache())
    assert reason == "path resolves outside the local roots"


@pytest.mark.anyio
async def test_a_slow_hash_streams_this_time_and_is_cached_for_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random.Random(4).randbytes(50_000)
    path, digest = _file(tmp_path, data)
    roots = (str(tmp_path / "rec"),)
    cache = DigestCache()
    release = threading.Event()
    real_hash = local._hash_file

    def slow_hash(*args: Any) -> str:
        release.wait(10)
        return real_hash(*args)

    monkeypatch.setattr(local, "_hash_file", slow_hash)
    reason = await check_local(str(path), size=len(data), digest=digest, roots=roots,
                               cache=cache, limit=0.2)
    assert isinstance(reason, str) and "longer than" in reason
    release.set()
    with anyio.fail_after(10):
        while cache.get(local.Fingerprint.of(str(path), os.stat(path))) is None:  # noqa: ASYNC110
            await anyio.sleep(0.01)
    source = await check_local(str(path), size=len(data), digest=digest, roots=roots,
                               cache=cache, limit=0.2)
    assert isinstance(source, LocalSource)
    source.close()


@pytest.mark.anyio
async def test_a_local_copy_changed_during_the_upload_is_not_completed(tmp_path: Path) -> None:
    data = b"y" * 4096
    path, digest = _file(tmp_path, data)
    source = await check_local(str(path), size=len(data), digest=digest,
                               roots=(str(tmp_path / "rec"),), cache=DigestCache())
    assert isinstance(source, LocalSource)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(UploadError) as err:
        source.verify()
    assert err.value.kind is ErrorKind.FILE
    source.close()


# -- settings ----------------------------------------------------------------------------------------


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    base = ["--server-url", "hub:1", "--agent-id", "a", "--token", "psk", "--insecure"]
    return parser.parse_args([*base, *argv])


def test_local_root_flags_and_file(tmp_path: Path) -> None:
    (one,) = settings_from_args(_args("--storage-type", "local", "--local-root", "/srv/rec/",
                                      "--local-root", "/mnt/share"))
    assert one.storage_type == "local" and one.local_roots == ("/srv/rec", "/mnt/share")
    config = tmp_path / "agent.yml"
    config.write_text("server: {url: 'hub:1', insecure: true}\n"
                      "agent: {id: a, token: p, storage_type: hybrid, local_roots: [/data]}\n")
    (two,) = load_agents(file=config, env={})
    assert two.local_roots == ("/data",)
    (net,) = settings_from_args(_args())
    assert net.storage_type == "network" and net.local_roots == ()
    with pytest.raises(ConfigError, match="local_roots: needs storage_type local or hybrid"):
        settings_from_args(_args("--local-root", "/srv/rec"))
