"""An in-process fake of Bilibili member + upos for fast uploader unit tests.

It runs behind ``httpx.MockTransport`` (no sockets), checks what the real
service checks (auth header, part ranges, all parts on completion) and lets a
test script failures per operation. The real simulator (``bupmesh
sim-bili``) is exercised by the integration tests; this fake exists so the
uploader's own logic is tested fast and deterministically.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import anyio
import httpx

MEMBER = "https://member.example.test"
UPOS_HOST = "upos.example.test"
COOKIES = "SESSDATA=s3cr3t-sess; bili_jct=csrf-token; DedeUserID=42"


@dataclass
class Upload:
    size: int
    auth: str
    chunk_size: int
    upos_uri: str
    biz_id: int
    parts: dict[int, bytes] = field(default_factory=dict)
    completed: bool = False
    md5: str = ""


# A planned failure: an int status (with optional JSON), or an exception class.
Fault = int | tuple[int, dict] | type[Exception]


class FakeBili:
    def __init__(self, *, chunk_size: int = 64 * 1024, threads: int = 3) -> None:
        self.chunk_size = chunk_size
        self.threads = threads
        self.uploads: dict[str, Upload] = {}
        self.log: list[dict[str, Any]] = []
        self.faults: dict[str, list[Fault]] = {}
        self.put_delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.probe_delays: dict[str, float] = {"bda2": 0.25, "tx": 0.0, "alia": 0.3}
        self.submissions: list[dict[str, Any]] = []
        self.expired_upload_ids: set[str] = set()
        self.on_put: Callable[[int], None] | None = None
        self._next = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def fail(self, op: str, *faults: Fault) -> None:
        self.faults.setdefault(op, []).extend(faults)

    def ops(self, op: str) -> list[dict[str, Any]]:
        return [entry for entry in self.log if entry["op"] == op]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        params = dict(parse_qsl(request.url.query.decode(), keep_blank_values=True))
        op = self._op(request, params)
        body = await request.aread()
        self.log.append(
            {
                "op": op,
                "method": request.method,
                "host": request.url.host,
                "path": request.url.path,
                "params": params,
                "query": request.url.query.decode(),
                "headers": dict(request.headers),
                "size": len(body),
            }
        )
        planned = self.faults.get(op)
        if planned:
            fault = planned.pop(0)
            if isinstance(fault, type):
                raise fault("injected", request=request)
            if isinstance(fault, tuple):
                return httpx.Response(fault[0], json=fault[1])
            return httpx.Response(fault, json={"OK": 0, "message": "injected"})
        return await getattr(self, f"_{op}")(request, params, body)

    def _op(self, request: httpx.Request, params: dict[str, str]) -> str:
        path = request.url.path
        if path == "/preupload":
            return "probe" if params.get("r") == "probe" else "preupload"
        if path.startswith("/probe/"):
            return "ping"
        if path == "/x/vu/web/add/v3":
            return "submit_web"
        if path == "/x/vu/app/add":
            return "submit_app"
        if request.method == "PUT":
            return "put"
        if "uploads" in params:
            return "init"
        return "complete"

    async def _probe(self, request: httpx.Request, params: dict, body: bytes) -> httpx.Response:
        lines = [
            {
                "os": "upos",
                "probe_url": f"//{UPOS_HOST}/probe/{name}",
                "query": f"upcdn={name}&probe_version=20221109&zone=cs",
            }
            for name in self.probe_delays
        ]
        return httpx.Response(200, json={"OK": 1, "lines": lines, "probe": {"get": None}})

    async def _ping(self, request: httpx.Request, params: dict, body: bytes) -> httpx.Response:
        await anyio.sleep(self.probe_delays[request.url.path.rsplit("/", 1)[-1]])
        return httpx.Response(200, text="OK")

    async def _preupload(self, request: httpx.Request, params: dict, body: bytes) -> httpx.Response:
        if "SESSDATA=" not in request.headers.get("cookie", ""):
            return httpx.Response(200, json={"OK": 0, "code": -101, "message": "账号未登录"})
        self._next += 1
        key = f"n{self._next:06d}abc"
        upos_uri = f"upos://ugcfx2lf/{key}.mp4"
        auth = f"auth-{self._next}"
        self.pending = Upload(
            size=int(params["size"]),
            auth=auth,
            chunk_size=self.chunk_size,
            upos_uri=upos_uri,
            biz_id=1000 + self._next,
        )
        self._by_key = getattr(self, "_by_key", {})
        self._by_key[f"/ugcfx2lf/{key}.mp4"] = self.pending
        return httpx.Response(
            200,
            json={
                "OK": 1,
                "auth": auth,
                "biz_id": 1000 + self._next,
                "chunk_size": self.chunk_size,
                "endpoint": f"//{UPOS_HOST}",
                "endpoints": [f"//{UPOS_HOST}"],
                "upos_uri": upos_uri,
                "threads": self.threads,
                "timeout": 600,
            },
        )

    def _object(self, request: httpx.Request) -> Upload | None:
        upload = getattr(self, "_by_key", {}).get(request.url.path)
        if upload is None or request.headers.get("x-upos-auth") != upload.auth:
            return None
        return upload

    async def _init(self, request: httpx.Request, params: dict, body: bytes) -> httpx.Response:
        upload = self._object(request)
        if upload is None:
            return httpx.Response(403, json={"OK": 0, "message": "bad auth"})
        upload_id = f"uid{self._next}"
        self.uploads[upload_id] = upload
        return httpx.Response(
            200, json={"OK": 1, "upload_id": upload_id, "key": "k", "bucket": "b"}
        )

    async def _put(self, request: httpx.Request, params: dict, body: bytes) -> httpx.Response:
        upload = self._object(request)
        upload_id = params.get("uploadId", "")
        if upload is None or self.uploads.get(upload_id) is not upload:
            return httpx.Response(403, json={"OK": 0, "message": "bad auth"})
        if upload_id in self.expired_upload_ids:
            return httpx.Response(404, json={"OK": 0, "message": "no such upload"})
        part = int(params["partNumber"])
        chunks = max(1, -(-upload.size // upload.chunk_size))
        start = (part - 1) * upload.chunk_size
        end = min(upload.size, start + upload.chunk_size)
        expected = {
            "chunk": str(part - 1),
            "chunks": str(chunks),
            "start": str(start),
            "end": str(end),
            "size": str(end - start),
            "total": str(upload.size),
        }
        if any(params.get(k) != v for k, v in expected.items()) or len(body) != end - start:
            return httpx.Response(400, json={"OK": 0, "message": f"bad range {params}"})
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.on_put is not None:
                self.on_put(part)
            await anyio.sleep(self.put_delay)
        finally:
            self.in_flight -= 1
        upload.parts[part] = body
        return httpx.Response(200, text="MULTIPART_PUT_SUCCESS")

    async def _complete(self, request: httpx.Request, params: dict, body: bytes) -> httpx.Response:
        upload = self._object(request)
        upload_id = params.get("uploadId", "")
        if upload is None or self.uploads.get(upload_id) is not upload:
            return httpx.Response(403, json={"OK": 0, "message": "bad auth"})
        if upload_id in self.expired_upload_ids:
            return httpx.Response(404, json={"OK": 0, "message": "no such upload"})
        numbers = [p["partNumber"] for p in json.loads(body)["parts"]]
        chunks = max(1, -(-upload.size // upload.chunk_size))
        if numbers != list(range(1, chunks + 1)) or set(upload.parts) != set(numbers):
            return httpx.Response(200, json={"OK": 0, "message": "parts missing"})
        if upload.completed:
            return httpx.Response(200, json={"OK": 0, "message": "already completed"})
        upload.completed = True
        upload.md5 = hashlib.md5(b"".join(upload.parts[n] for n in numbers)).hexdigest()
        return httpx.Response(200, json={"OK": 1, "key": upload.upos_uri, "location": "x"})

    async def _submit_web(
        self, request: httpx.Request, params: dict, body: bytes
    ) -> httpx.Response:
        self.submissions.append({"flavour": "web", "params": params, "body": json.loads(body)})
        return httpx.Response(200, json={"code": 0, "data": {"aid": 7, "bvid": "BV1web"}})

    async def _submit_app(
        self, request: httpx.Request, params: dict, body: bytes
    ) -> httpx.Response:
        self.submissions.append({"flavour": "app", "params": params, "body": json.loads(body)})
        return httpx.Response(200, json={"code": 0, "data": {"aid": 8, "bvid": "BV1app"}})

    def completed(self) -> list[Upload]:
        return [u for u in self.uploads.values() if u.completed]
