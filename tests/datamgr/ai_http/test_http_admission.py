"""The HTTP API's own limit on requests at once (`http.max_connections`): one beyond is 503 in OpenAI's
error object with `retry-after`, before its token or body is read; a request that ends, however it
ends, frees its place. The ASGI app is called directly, with no server and no AI service."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

from datamgr.ai_http._app import Api

APP = SimpleNamespace(is_admin=False, permissions=(), bundle="com.example.app")


async def call(api: Api, body: asyncio.Future[bytes]) -> tuple[int, dict[bytes, bytes], Any]:
    """POST /tokenize whose body arrives when `body` is done; its status, headers and JSON answer."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/tokenize",
        "raw_path": b"/tokenize",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", b"Bearer dmapp_x")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": await body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await api.app(scope, receive, send)
    start, *parts = sent
    return start["status"], dict(start["headers"]), json.loads(b"".join(p["body"] for p in parts))


def test_a_request_beyond_the_limit_is_503_with_retry_after_and_an_ended_one_frees_its_place() -> None:
    async def main() -> None:
        identified: list[Any] = []
        api = Api(None, lambda c: identified.append(c) or APP, max_body_bytes=1024, max_requests=2)
        loop = asyncio.get_running_loop()
        bodies = [loop.create_future() for _ in range(2)]
        held = [asyncio.ensure_future(call(api, b)) for b in bodies]
        while api.open_requests < 2:
            await asyncio.sleep(0)
        seen = len(identified)
        never = loop.create_future()  # admitted, it would wait for its body for ever
        status, headers, answer = await asyncio.wait_for(call(api, never), 5)
        assert (status, headers[b"retry-after"], headers[b"content-type"]) == (503, b"1", b"application/json")
        assert answer == {
            "error": {
                "message": "2 requests are open already (http.max_connections): retry in a moment",
                "type": "unavailable_error",
                "param": None,
                "code": "unavailable",
            }
        }
        assert len(identified) == seen  # refused before its token was looked at
        bodies[0].set_result(b"{not json")  # ends with an error: 400
        assert (await held[0])[0] == 400 and api.open_requests == 1
        later = loop.create_future()
        admitted = asyncio.ensure_future(call(api, later))
        while api.open_requests < 2:
            await asyncio.sleep(0)
        bodies[1].set_result(b"[]")
        later.set_result(b"[]")
        assert [(await t)[0] for t in (held[1], admitted)] == [400, 400]
        assert api.open_requests == 0

    asyncio.run(main())
