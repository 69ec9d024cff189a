"""Title, description, tags, part titles and source from templates (pure).

Placeholders are ``${name}``; a literal ``$`` is ``$$``. Names:

- ``${uname}`` streamer, ``${title}`` live title, ``${roomId}`` room id,
  ``${areaName}`` area (child, else parent), ``${areaParent}`` parent area,
  ``${index}`` part number (1-based; in part titles; 1 elsewhere),
  ``${fileName}`` the part's file name without extension (part titles).
- Dates of the recording's start (part titles: of the part's start), in the
  hub's local time zone: ``${yyyy}`` ``${yy}`` ``${MM}`` ``${dd}`` ``${HH}``
  ``${mm}`` ``${ss}`` (zero-padded), and ``${date}`` = ``yyyy-MM-dd``,
  ``${time}`` = ``HH:mm``.

An unknown placeholder is a configuration error found when the hub starts
(:func:`check`), never a surprise at submission time.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

PLACEHOLDER = re.compile(r"\$(?:\$|\{([A-Za-z]+)\})")
DATE_NAMES = ("yyyy", "yy", "MM", "dd", "HH", "mm", "ss", "date", "time")
NAMES = frozenset({"uname", "title", "roomId", "areaName", "areaParent", "index", "fileName",
                   *DATE_NAMES})


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class Context:
    uname: str = ""
    title: str = ""
    room_id: str = ""
    area_parent: str = ""
    area_child: str = ""
    started_at: float = 0.0
    index: int = 1
    file_name: str = ""


TEMPLATE_KEYS = ("title_template", "part_title_template", "desc_template", "source_template",
                 "dynamic_template")


def split_tags(tags: str | list[str]) -> list[str]:
    """``"a, b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (blank ones dropped)."""
    items = tags.split(",") if isinstance(tags, str) else list(tags)
    return [t.strip() for t in items if t and t.strip()]


def check(template: str, setting: str) -> None:
    """Raise TemplateError naming ``setting`` if ``template`` uses an unknown name or a
    ``$`` that is not ``${name}`` / ``$$``."""
    stripped = PLACEHOLDER.sub("", template)
    if "$" in stripped:
        raise TemplateError(f"{setting}: a lone '$' (write ${{name}}, or $$ for a dollar)")
    for match in PLACEHOLDER.finditer(template):
        name = match.group(1)
        if name is not None and name not in NAMES:
            raise TemplateError(f"{setting}: unknown placeholder ${{{name}}} "
                                f"(known: {', '.join(sorted(NAMES))})")


def _dates(moment: float) -> dict[str, str]:
    t = time.localtime(moment)
    return {
        "yyyy": f"{t.tm_year:04d}", "yy": f"{t.tm_year % 100:02d}", "MM": f"{t.tm_mon:02d}",
        "dd": f"{t.tm_mday:02d}", "HH": f"{t.tm_hour:02d}", "mm": f"{t.tm_min:02d}",
        "ss": f"{t.tm_sec:02d}", "date": f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}",
        "time": f"{t.tm_hour:02d}:{t.tm_min:02d}",
    }


def render(template: str, ctx: Context) -> str:
    values = {
        "uname": ctx.uname, "title": ctx.title, "roomId": ctx.room_id,
        "areaName": ctx.area_child or ctx.area_parent, "areaParent": ctx.area_parent,
        "index": str(ctx.index), "fileName": ctx.file_name, **_dates(ctx.started_at),
    }

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        if name not in values:
            raise TemplateError(f"unknown placeholder ${{{name}}}")
        return values[name]

    return PLACEHOLDER.sub(one, template)
