"""Direct-upload benchmark: ``bupmesh upload-direct`` vs bilibili-api-python's ``VideoUploader``.

One run starts one ``bupmesh sim-bili`` on loopback, generates a file (1 GiB
by default) in a temporary directory, then uploads it several times with each
client, alternating, each as its own subprocess. For every upload it records
the wall time (process start to exit, so interpreter start-up and the line
choice are included for both) and the peak RSS of the uploading process, and
checks the simulator's ledger MD5. It prints medians and the ratios
bupmesh / bilibili-api. The file is deleted at the end.

bilibili-api-python is pointed at the simulator the way
``tests/uploader/sim/test_third_party_client.py`` does it (an httpx transport, installed
with the library's own ``set_session`` hook, that sends Bilibili hosts to the
simulator); the library code itself runs unchanged. Both clients use the
same line (``cs_bda2`` / ``Lines.BDA2``) and the simulator's chunk size and
thread count (10 MiB, 3).

Usage: .venv/bin/python bench/uploader.py [--size-mib 1024] [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
SIM_COOKIES = "SESSDATA=sim-sessdata; bili_jct=sim-csrf; DedeUserID=10001"

# Runs a command and writes its peak RSS (bytes). A helper is needed because a
# child's ru_maxrss counts the pages of the process that forked it until exec.
RSS_HELPER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))
sys.exit(code)
"""

BILIBILI_API_SCRIPT = """
import asyncio, json, sys, warnings
sys.path.insert(0, sys.argv[1])
warnings.simplefilter("ignore")
import httpx
from bilibili_api import Credential, get_client, select_client, set_session, video_uploader
from tests.uploader.sim.test_third_party_client import RedirectToSimulator

async def main(sim_url, video, cover):
    select_client("httpx")
    session = httpx.AsyncClient(
        transport=RedirectToSimulator(sim_url), trust_env=False, timeout=120
    )
    await get_client().get_wrapped_session().aclose()
    set_session(session)
    credential = Credential(
        sessdata="sim-sessdata", bili_jct="sim-csrf", dedeuserid="10001",
        buvid3="sim-buvid3", buvid4="sim-buvid4",
    )
    meta = video_uploader.VideoMeta(
        tid=171, title="bench", desc="bench", cover=cover, tags=["bench"]
    )
    page = video_uploader.VideoUploaderPage(path=video, title="P1", description="")
    uploader = video_uploader.VideoUploader(
        pages=[page], meta=meta, credential=credential, line=video_uploader.Lines.BDA2
    )
    result = await uploader.start()
    await session.aclose()
    print(json.dumps(result))

asyncio.run(main(*sys.argv[2:5]))
"""


@dataclass
class Sample:
    client: str
    seconds: float
    peak_rss: int
    md5_ok: bool


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_file(path: Path, size: int) -> str:
    """Write ``size`` bytes in 1 MiB writes (each MiB distinct); return the MD5."""
    digest = hashlib.md5()
    block = os.urandom(MiB)
    with path.open("wb") as f:
        for index in range(-(-size // MiB)):
            piece = (block[:-8] + index.to_bytes(8, "big"))[: size - index * MiB]
            f.write(piece)
            digest.update(piece)
    return digest.hexdigest()


def make_cover(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (160, 100), (251, 114, 153)).save(path, format="PNG")


def start_sim(workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = (workdir / "sim.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bupmesh", "sim-bili", "--listen", f"127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"simulator exited with {proc.returncode}; see {workdir}/sim.log")
        try:
            httpx.get(f"{url}/_sim/config", timeout=1).raise_for_status()
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.terminate()
    raise TimeoutError("simulator did not answer within 30 s")


def measured(command: list[str], workdir: Path, timeout: float) -> tuple[int, float, int, str]:
    """(exit code, wall seconds, peak RSS bytes, stdout) of ``command``."""
    rss = workdir / "rss.txt"
    rss.unlink(missing_ok=True)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", RSS_HELPER, str(rss), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        raise
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(err.decode(errors="replace")[-2000:])
    return proc.returncode, seconds, int(rss.read_text()) if rss.exists() else 0, out.decode()


def run_bupmesh(sim_url: str, video: Path, workdir: Path, timeout: float) -> tuple[int, float, int]:
    command = [
        sys.executable, "-m", "bupmesh", "upload-direct", str(video),
        "--member-url", sim_url, "--cookies", SIM_COOKIES, "--line", "cs_bda2", "--json",
    ]  # fmt: skip
    code, seconds, peak, _ = measured(command, workdir, timeout)
    return code, seconds, peak


def run_bilibili_api(
    sim_url: str, video: Path, cover: Path, workdir: Path, timeout: float
) -> tuple[int, float, int]:
    script = workdir / "bilibili_api_upload.py"
    script.write_text(BILIBILI_API_SCRIPT, encoding="utf-8")
    command = [sys.executable, str(script), str(REPO), sim_url, str(video), str(cover)]
    code, seconds, peak, _ = measured(command, workdir, timeout)
    return code, seconds, peak


def ledger_md5(sim_url: str) -> str | None:
    uploads = httpx.get(f"{sim_url}/_sim/uploads", timeout=10).json()["uploads"]
    return uploads[-1]["md5"] if uploads else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size in MiB (1024)")
    parser.add_argument("--runs", type=int, default=3, help="uploads per client (3)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per upload (900)")
    args = parser.parse_args(argv)
    size = args.size_mib * MiB

    with tempfile.TemporaryDirectory(prefix="bupmesh-bench-") as tmp:
        workdir = Path(tmp)
        video = workdir / "recording.flv"
        cover = workdir / "cover.png"
        print(f"generating {args.size_mib} MiB in {workdir} ...", flush=True)
        md5 = make_file(video, size)
        make_cover(cover)
        sim, sim_url = start_sim(workdir)
        samples: list[Sample] = []
        try:
            for run in range(1, args.runs + 1):
                for name in ("bupmesh", "bilibili-api"):
                    httpx.post(f"{sim_url}/_sim/reset", timeout=10).raise_for_status()
                    if name == "bupmesh":
                        code, seconds, peak = run_bupmesh(sim_url, video, workdir, args.timeout)
                    else:
                        code, seconds, peak = run_bilibili_api(
                            sim_url, video, cover, workdir, args.timeout
                        )
                    ok = code == 0 and ledger_md5(sim_url) == md5
                    samples.append(Sample(name, seconds, peak, ok))
                    print(
                        f"run {run} {name:13s} {'ok ' if ok else 'FAILED'} "
                        f"{size / MiB / seconds:7.1f} MiB/s  peak RSS {peak / MiB:6.1f} MiB",
                        flush=True,
                    )
        finally:
            sim.terminate()
            try:
                sim.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sim.kill()
                sim.wait(timeout=10)

    summary: dict[str, dict[str, float]] = {}
    for name in ("bupmesh", "bilibili-api"):
        mine = [s for s in samples if s.client == name and s.md5_ok]
        if not mine:
            print(f"{name}: no successful upload")
            continue
        summary[name] = {
            "mib_per_s": statistics.median(size / MiB / s.seconds for s in mine),
            "peak_rss_mib": statistics.median(s.peak_rss / MiB for s in mine),
            "runs_ok": len(mine),
        }
    print()
    print(f"file {args.size_mib} MiB, simulator chunk 10 MiB x 3 threads, medians of {args.runs}:")
    for name, figures in summary.items():
        print(
            f"  {name:13s} {figures['mib_per_s']:7.1f} MiB/s   peak RSS {figures['peak_rss_mib']:6.1f} MiB"
            f"   ({figures['runs_ok']:.0f} ok)"
        )
    if len(summary) == 2:
        speed = summary["bupmesh"]["mib_per_s"] / summary["bilibili-api"]["mib_per_s"]
        memory = summary["bupmesh"]["peak_rss_mib"] / summary["bilibili-api"]["peak_rss_mib"]
        print(f"  bupmesh / bilibili-api: speed x{speed:.2f}, peak memory x{memory:.2f}")
        print(
            f"  target (speed >= 1, memory <= 0.5): "
            f"{'met' if speed >= 1 and memory <= 0.5 else 'NOT met'}"
        )
        print(json.dumps({"summary": summary, "speed_ratio": speed, "memory_ratio": memory}))
    return 0 if all(s.md5_ok for s in samples) else 1


if __name__ == "__main__":
    raise SystemExit(main())
