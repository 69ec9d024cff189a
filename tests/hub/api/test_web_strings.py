"""The console's dictionaries: English and Chinese have the same keys, and every key the
page's code and HTML use exists (a missing one would show its key instead of text)."""

from __future__ import annotations

import re
from importlib import resources

WEB = resources.files("hub.api.web")
KEY = re.compile(r'^\s*"([^"]+)":', re.M)


def keys(name: str) -> set[str]:
    return set(KEY.findall(WEB.joinpath(name).read_text()))


def test_both_languages_have_the_same_keys() -> None:
    """Except a room key's help: in English it is the hub's own description of the key."""
    en, zh = keys("strings-en.js"), keys("strings-zh-CN.js")
    assert len(en) > 100
    assert not {k for k in en if k.startswith("room.help.")}
    assert en - zh == set() and {k for k in zh - en if not k.startswith("room.help.")} == set()


def test_every_key_used_is_defined() -> None:
    defined = keys("strings-en.js")
    used: set[str] = set()
    for entry in WEB.iterdir():
        text = entry.read_text() if entry.name.endswith((".js", ".html")) else ""
        used |= set(re.findall(r'\bt\("([\w.-]+)"', text))
        used |= set(re.findall(r'data-i18n(?:-placeholder|-title)?="([\w.-]+)"', text))
    assert len(used) > 100
    assert used - defined == set()
