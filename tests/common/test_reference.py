"""docs/reference.md's hub settings table is drawn from the settings themselves."""

from __future__ import annotations

from bupmesh.reference import REFERENCE, render


def test_the_settings_table_is_current() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    assert render(text) == text, (
        "docs/reference.md's hub settings table is stale: run `python -m bupmesh.reference`"
    )
