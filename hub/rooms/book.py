"""The hub's rooms: ``hub.yml`` seeds them, the database keeps them, the console edits them.

Precedence, per room:

- a room defined in ``hub.yml`` and never edited through the admin API (the web
  UI) follows ``hub.yml``: it is copied into the database at every start, so an
  edit of the file takes effect at the next restart, and a room removed from the
  file goes away;
- once a room is written through the API (``PUT /api/manage/rooms/{id}``), the
  database wins: ``hub.yml``'s entry for it is ignored from then on, and each start
  logs that it is; ``DELETE`` forgets the console's version, and the room returns to
  its ``hub.yml`` settings (or, when the file has none, is gone).

Whatever the origin, a room's settings pass the same checks as ``hub.yml``'s: the
``RoomSettings`` struct (types, ranges, unknown keys) and ``hub.config.check_room``
(templates, tags, numeric ids). The live table is ``config.rooms`` itself, replaced
in place, so every reader of a room's settings (``hub.submission.settings``,
ingestion) sees an edit at once without holding a reference to this book.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import msgspec

from bupmesh.config import ConfigError
from hub.config import HubConfig, RoomSettings, check_room
from hub.core.errors import NotFound
from hub.rooms.store import CONSOLE, YAML, RoomStore

log = logging.getLogger("bupmesh.hub.rooms")


class RoomInvalid(ValueError):
    """A room's settings break a rule; the message names the key (HTTP 400)."""


def encode(room: RoomSettings) -> str:
    """The stored JSON: the keys the room sets, in its sections too (unset ones are
    inherited, so not kept)."""
    return msgspec.json.encode(_set_keys(msgspec.to_builtins(room))).decode()


def _set_keys(data: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            value = _set_keys(value) or None  # a section that sets nothing is not kept
        if value is not None:
            out[key] = value
    return out


def check(room_id: str, room: RoomSettings, config: HubConfig) -> RoomSettings:
    """``room`` if it passes ``hub.yml``'s checks beyond types; RoomInvalid names the key."""
    try:
        check_room(room_id, room, config)
    except ConfigError as exc:
        raise RoomInvalid(str(exc)) from None
    return room


def decode(room_id: str, raw: str | bytes, config: HubConfig) -> RoomSettings:
    """Stored settings, checked by today's rules (a newer hub may have tightened them)."""
    try:
        room = msgspec.json.decode(raw, type=RoomSettings)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise RoomInvalid(str(exc)) from None
    return check(room_id, room, config)


def _explain(defs: dict[str, Any], name: str, scope_of: Callable[[str], Any]) -> None:
    """Give each key of the struct ``name`` the description of the setting it overrides
    (``scope_of(key)``: the struct holding that setting, or None), nested sections too."""
    for key, prop in defs[name]["properties"].items():
        scope = scope_of(key)
        if scope is None:
            continue
        own = msgspec.json.schema(type(scope))["$defs"][type(scope).__name__]["properties"]
        if own[key].get("description"):
            prop["description"] = own[key]["description"]
        inner = getattr(scope, key)
        refs = [o["$ref"] for o in [prop, *prop.get("anyOf", ())] if "$ref" in o]
        if refs and isinstance(inner, msgspec.Struct):
            _explain(defs, refs[0].rsplit("/", 1)[-1],
                     lambda k, inner=inner: inner if k in type(inner).__struct_fields__ else None)


def _over(value: Any, default: Any) -> Any:
    value = msgspec.to_builtins(value)
    if isinstance(value, dict) and isinstance(default, dict):
        return {**default, **{k: v for k, v in value.items() if v is not None}}
    return default if value is None else value


class RoomBook:
    """Rooms in the database, mirrored into ``config.rooms`` (see the module's docstring)."""

    def __init__(self, config: HubConfig, store: RoomStore) -> None:
        self.config = config
        self.store = store
        self.yaml: dict[str, RoomSettings] = {str(k): v for k, v in config.rooms.items()}
        self._rows: dict[str, dict[str, Any]] = {}
        self._lock = anyio.Lock()

    async def open(self) -> None:
        """Bring ``hub.yml``'s rooms into the database, then load every room."""
        await self.store.open()
        async with self._lock:
            stored = {row["room_id"]: row for row in await self.store.all()}
            for room_id, row in stored.items():
                if row["origin"] == YAML and room_id not in self.yaml:
                    await self.store.delete(room_id)
                    log.info("room %s: no longer in hub.yml, removed", room_id)
            for room_id, room in self.yaml.items():
                row = stored.get(room_id)
                if row is not None and row["origin"] == CONSOLE:
                    if row["settings"] != encode(room):
                        log.warning(
                            "room %s: its hub.yml settings are ignored: the room was edited "
                            "in the console, and the database's version wins (DELETE "
                            "/api/manage/rooms/%s returns it to hub.yml)", room_id, room_id)
                    continue
                await self.store.put(room_id, encode(room), YAML)
            rows = await self.store.all()
        live: dict[str, RoomSettings] = {}
        for row in rows:
            room_id = row["room_id"]
            try:
                live[room_id] = decode(room_id, row["settings"], self.config)
            except RoomInvalid as exc:
                # Kept, not deleted: the console shows the error and the admin fixes it.
                row["error"] = str(exc)
                log.error("room %s: stored settings no longer valid (%s); the room uses "
                          "%s until they are fixed", room_id, exc,
                          "hub.yml's" if room_id in self.yaml else "the defaults")
                if room_id in self.yaml:
                    live[room_id] = self.yaml[room_id]
            self._rows[room_id] = row
        self._replace_live(live)

    def close(self) -> None:
        self.store.close()

    # -- reading --------------------------------------------------------------------------

    def list(self) -> list[dict[str, Any]]:
        return [self._view(room_id) for room_id in sorted(self._rows, key=int)]

    def get(self, room_id: str) -> dict[str, Any]:
        if room_id not in self._rows:
            raise NotFound(f"no room {room_id}")
        return self._view(room_id)

    def schema(self) -> dict[str, Any]:
        """What a room may set: JSON Schema of ``RoomSettings`` (types, ranges and each
        key's description) and the value each key inherits when the room leaves it unset.

        A key's description is the one of the setting it overrides when that has one
        (a room's ``tid`` says what ``submission.tid`` says, a room's ``retention.trigger``
        what ``retention.trigger`` says), so the form explains it."""
        schema = msgspec.json.schema(RoomSettings)
        _explain(schema["$defs"], RoomSettings.__name__, self._scope_of)
        return {"schema": schema, "defaults": msgspec.to_builtins(self.defaults())}

    def defaults(self) -> dict[str, Any]:
        """Per key, what a room inherits: ``submission.<key>``, else the top-level
        ``<key>`` (a global section such as ``retention``), else nothing."""
        out: dict[str, Any] = {}
        for name in RoomSettings.__struct_fields__:
            scope = self._scope_of(name)
            out[name] = getattr(scope, name) if scope is not None else None
        return out

    def _scope_of(self, name: str) -> Any:
        for scope in (self.config.submission, self.config):
            if name != "rooms" and name in type(scope).__struct_fields__:
                return scope
        return None

    # -- writing --------------------------------------------------------------------------

    async def put(self, room_id: str, room: RoomSettings) -> dict[str, Any]:
        """Create or replace a room as the console wrote it (RoomInvalid names the key)."""
        check(room_id, room, self.config)
        async with self._lock:
            row = await self.store.put(room_id, encode(room), CONSOLE)
            self._rows[room_id] = row
            self.config.rooms[room_id] = room
        log.info("room %s saved from the console", room_id)
        return self._view(room_id)

    async def delete(self, room_id: str) -> dict[str, Any]:
        """Forget the console's version: back to ``hub.yml``'s when it has the room."""
        async with self._lock:
            if room_id not in self._rows:
                raise NotFound(f"no room {room_id}")
            yaml_room = self.yaml.get(room_id)
            if yaml_room is None:
                await self.store.delete(room_id)
                self._rows.pop(room_id)
                self.config.rooms.pop(room_id, None)
                log.info("room %s deleted", room_id)
                return {"room_id": room_id, "deleted": True}
            self._rows[room_id] = await self.store.put(room_id, encode(yaml_room), YAML)
            self.config.rooms[room_id] = yaml_room
        log.info("room %s returned to its hub.yml settings", room_id)
        return {**self._view(room_id), "deleted": False}

    # -- internals ------------------------------------------------------------------------

    def _replace_live(self, live: dict[str, RoomSettings]) -> None:
        self.config.rooms.clear()
        self.config.rooms.update(live)

    def _view(self, room_id: str) -> dict[str, Any]:
        row = self._rows[room_id]
        room = self.config.rooms.get(room_id)
        settings = msgspec.json.decode(row["settings"])
        view: dict[str, Any] = {
            "room_id": room_id, "origin": row["origin"], "in_yaml": room_id in self.yaml,
            "settings": settings, "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "effective": self._effective(room or RoomSettings()),
        }
        if row.get("error"):
            view["error"] = row["error"]
        return view

    def _effective(self, room: RoomSettings) -> dict[str, Any]:
        """The room's values over what it inherits, key by key, in its sections too."""
        return {name: _over(getattr(room, name), default)
                for name, default in msgspec.to_builtins(self.defaults()).items()}
