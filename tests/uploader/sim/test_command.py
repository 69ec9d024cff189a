"""``bupmesh sim-bili``: its config file, flags and one-line setting errors, as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import bupmesh_command, start_sim, stop_process


def test_cli_config_file_and_flags(tmp_path: Path) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text("chunk_size: 4096\nthreads: 5\nrisk:\n  preupload_budget: 1\n")
    server = start_sim(tmp_path, "--config", str(config), "--threads", "7")
    try:
        current = server.config()
        assert current["chunk_size"] == 4096 and current["threads"] == 7
        assert current["risk"]["preupload_budget"] == 1
        server.config(chunk_size=1)
        server.reset()
        assert server.config()["chunk_size"] == 4096  # reset returns to the startup config
    finally:
        stop_process(server.proc)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--listen", "nowhere"], "listen"),
        (["--chunk-size", "0"], "chunk_size"),
    ],
)
def test_cli_bad_settings_exit_2_with_one_line(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    result = subprocess.run(
        bupmesh_command("sim-bili", *args), capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_cli_bad_config_file(tmp_path: Path) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text("faults:\n  drop_put_rate: lots\n")
    result = subprocess.run(
        [sys.executable, "-m", "bupmesh", "sim-bili", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "faults.drop_put_rate" in result.stderr
