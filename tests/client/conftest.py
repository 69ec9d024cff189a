"""Fixtures shared by the admin CLI's tests."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest


@pytest.fixture
def ctrl_c() -> Iterator[None]:
    """Ctrl-C as at a terminal, whatever started the test run.

    A run started in the background by a non-interactive shell (``make test &``)
    ignores SIGINT, so Python installs no KeyboardInterrupt handler, and every
    command the test starts inherits the ignored signal. With Python's handler in
    place here, this process raises KeyboardInterrupt on SIGINT and a command
    started meanwhile gets the default disposition back when it executes.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
