"""Debian's headless Chromium driven by Playwright, for the web console's browser tests.

The browser is never downloaded: ``make test`` installs Debian's ``chromium`` and its
CJK fonts (see the Makefile) and Playwright launches that binary with a fresh profile.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@contextmanager
def open_page(profile: Path, locale: str = "en-US") -> Iterator[object]:
    """One page of a fresh profile whose browser says it speaks ``locale``."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` (part of `make test`) installs it")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            timeout=60_000, locale=locale,
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            context.close()
