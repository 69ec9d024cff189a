"""The admin API over rooms (``hub.rooms.book``): list, read, write, forget, and their schema.

- ``GET /api/manage/rooms`` -> ``{rooms: [...]}``: each room's ``settings`` (the keys it
  sets), ``effective`` (with what it inherits filled in), ``origin`` (``yaml`` or
  ``console``) and ``in_yaml``;
- ``GET /api/manage/rooms/schema`` -> ``{schema, defaults}``: JSON Schema of a room's
  settings and what each key inherits; the web UI draws its room form from it, so a
  key added to ``RoomSettings`` appears in the form without touching the page;
- ``GET /api/manage/rooms/{id}``, ``PUT /api/manage/rooms/{id}`` (body: the room's
  settings, every key optional, unknown keys refused) -> the room;
- ``DELETE /api/manage/rooms/{id}``: the console's version is forgotten; a room that
  ``hub.yml`` defines returns to it (``deleted: false``), any other is gone.

A refused body is a 400 naming the key (``tid: Expected `int` >= 1``).
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hub.api.auth import Auth
from hub.api.bodies import decode_body, read_limited
from hub.api.envelope import ApiError, ok
from hub.api.errors import guard
from hub.api.redact import redact
from hub.config import RoomSettings
from hub.rooms.book import RoomBook
from hub.service import HubService

log = logging.getLogger("bupmesh.hub.http")


def room_routes(service: HubService, auth: Auth) -> list[BaseRoute]:
    def book() -> RoomBook:
        rooms = getattr(service, "rooms", None)  # a test's fake service may have none
        if rooms is None:
            raise ApiError(404, "this hub keeps rooms in hub.yml only")
        return rooms

    def room_id(request: Request) -> str:
        value = request.path_params["room_id"]
        if not value.isdigit() or len(value) > 20:
            raise ApiError(400, "room id: expected a number")
        return str(int(value))  # "007" and "7" are one room

    async def list_rooms(request: Request) -> Response:
        auth.require_admin(request)
        return ok({"rooms": redact(book().list())})

    async def schema(request: Request) -> Response:
        auth.require_admin(request)
        return ok(book().schema())

    async def get_room(request: Request) -> Response:
        auth.require_admin(request)
        return ok(redact(book().get(room_id(request))))

    async def put_room(request: Request) -> Response:
        auth.require_admin(request)
        rid = room_id(request)
        room = decode_body(await read_limited(request), RoomSettings)
        return ok(redact(await book().put(rid, room)), message="Room saved")

    async def delete_room(request: Request) -> Response:
        auth.require_admin(request)
        result = await book().delete(room_id(request))
        message = "Room deleted" if result["deleted"] else "Room returned to hub.yml"
        return ok(redact(result), message=message)

    return [
        Route("/api/manage/rooms", guard(list_rooms), methods=["GET"]),
        Route("/api/manage/rooms/schema", guard(schema), methods=["GET"]),
        Route("/api/manage/rooms/{room_id}", guard(get_room), methods=["GET"]),
        Route("/api/manage/rooms/{room_id}", guard(put_room), methods=["PUT"]),
        Route("/api/manage/rooms/{room_id}", guard(delete_room), methods=["DELETE"]),
    ]
