"""A Ctrl-C during an HTTP call to the hub is raised once the call returns."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from client.http import request
from client.interrupt import held_during_call


def _client(ctrl_cs: int, finished: list[str]) -> httpx.Client:
    """A client whose one call receives ``ctrl_cs`` SIGINTs, then works on a while."""

    def handler(req: httpx.Request) -> httpx.Response:
        for _ in range(ctrl_cs):
            os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:  # Python code, where a KeyboardInterrupt lands
            pass
        finished.append(req.url.path)
        return httpx.Response(200, json={"code": 0, "message": "success", "data": {"ok": 1}})

    return httpx.Client(base_url="http://hub.test", transport=httpx.MockTransport(handler))


def test_a_ctrl_c_inside_the_call_is_raised_as_it_returns(ctrl_c: None) -> None:
    finished: list[str] = []
    with _client(1, finished) as client, pytest.raises(KeyboardInterrupt):
        request(client, "GET", "/api/manage/tasks/t")
    assert finished == ["/api/manage/tasks/t"]  # the call was not cut short
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with _client(0, finished) as client:  # and the pool is usable
        assert request(client, "GET", "/again") == {"ok": 1}


def test_a_second_ctrl_c_is_raised_at_once(ctrl_c: None) -> None:
    finished: list[str] = []
    with _client(2, finished) as client, pytest.raises(KeyboardInterrupt):
        request(client, "GET", "/api/manage/tasks/t")
    assert finished == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_the_main_thread_and_with_sigint_ignored_nothing_changes(ctrl_c: None) -> None:
    seen: list[object] = []

    def in_thread() -> None:
        with held_during_call():
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert seen == [signal.default_int_handler]
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with held_during_call():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
