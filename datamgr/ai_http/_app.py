"""The HTTP API's routes (Starlette): OpenAI's `/v1/models`, `/v1/completions`, `/v1/chat/completions`,
`/v1/embeddings`, llama-server's `/health`, `/metrics`, `/tokenize` and `/detokenize`.

Each request is served by AiService's own methods, called with a stand-in for a gRPC call's context
that carries the request's bearer token as the gRPC SDK sends it: the same `Identify`, the USE_AI
permission, per-app limits, placement, revocation (an open stream ends when its app loses USE_AI) and
metrics as over gRPC. The token is checked before the body is read, and the body is bounded. A
generation runs while its client is connected: a client that leaves cancels it, which frees its KV
within one engine step. Errors before the first token are an HTTP status; one after it, in a streamed
answer, is a last `data: {"error": ...}` event before `data: [DONE]` (as vLLM does). At most
`http.max_connections` requests are open at once: one beyond is 503 with `retry-after`, in OpenAI's
error object (uvicorn's own limit, a plain-text 503, stays as a backstop above it, `_server`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from aicap.config import USE_AI
from aicap.v1 import aicap_pb2 as pb
from datamgr.ai_http._answers import Answer
from datamgr.ai_http._errors import HttpError, error_object, error_response, headers_for
from datamgr.ai_http._requests import (
    BadRequest,
    ChatBody,
    CompletionBody,
    DetokenizeBody,
    EmbeddingsBody,
    TokenizeBody,
    parse,
)

NO_TOKEN = (
    "no token: send 'Authorization: Bearer <app token>' (the device owner issues app tokens: "
    "datamgr apps add BUNDLE)"
)
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class Call:
    """What AiService reads of a gRPC call: its metadata, here the request's bearer token as the gRPC
    SDK sends it (`authorization: Bearer <token>`, `datamgr.caller.token_in`)."""

    __slots__ = ("_metadata",)

    def __init__(self, token: str) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class Api:
    """The ASGI app (`app`) over an AiService `ai`, with the daemon's `identify` (a call → its caller),
    serving at most `max_requests` requests at once. `stopping()` makes every new request 503 while the
    daemon shuts down."""

    def __init__(
        self, ai: Any, identify: Callable[[Any], Any], max_body_bytes: int, max_requests: int
    ) -> None:
        self._ai, self._identify, self._max_body = ai, identify, max_body_bytes
        self._max_requests, self.open_requests = max_requests, 0
        self._stopping = False
        self._loads: dict[str, asyncio.Future[Any]] = {}  # model → its load started by a request
        self._started = int(time.time())
        routes = [
            Route("/v1/models", self._handler(self.models, "ListModels"), methods=["GET"]),
            Route("/v1/models/{model:path}", self._handler(self.model, "ListModels"), methods=["GET"]),
            Route("/v1/completions", self._handler(self.completions, "Complete"), methods=["POST"]),
            Route("/v1/chat/completions", self._handler(self.chat, "Chat"), methods=["POST"]),
            Route("/v1/embeddings", self._handler(self.embeddings, "Embed"), methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self._handler(self.metrics, "GetStats"), methods=["GET"]),
            Route("/tokenize", self._handler(self.tokenize, "Tokenize"), methods=["POST"]),
            Route("/detokenize", self._handler(self.detokenize, "Detokenize"), methods=["POST"]),
        ]
        self._routes = Starlette(routes=routes, exception_handlers={HTTPException: self._no_route})

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app: a request beyond `max_requests` open ones is 503 with `retry-after` (clients
        retry after it), before its token or body is read."""
        if scope["type"] != "http":
            await self._routes(scope, receive, send)
            return
        if self.open_requests >= self._max_requests:
            busy = HttpError(
                "UNAVAILABLE",
                f"{self._max_requests} requests are open already (http.max_connections): retry in a moment",
            )
            await error_response(busy, "admission")(scope, receive, send)
            return
        self.open_requests += 1
        try:
            await self._routes(scope, receive, send)
        finally:
            self.open_requests -= 1

    def stopping(self) -> None:
        self._stopping = True

    @staticmethod
    def _handler(fn: Callable[[Request], Awaitable[Response]], where: str) -> Callable[..., Any]:
        async def handle(request: Request) -> Response:
            try:
                return await fn(request)
            except Exception as exc:
                return error_response(exc, where)

        return handle

    async def _no_route(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            error = HttpError("INVALID_ARGUMENT", f"{request.method} is not allowed on {request.url.path}")
            return JSONResponse(error_object(error, "routing")[1], 405)
        return error_response(HttpError("NOT_FOUND", f"no route {request.url.path}"), "routing")

    # ---- the caller and the body ----

    def _call(self, request: Request, generates: bool = False) -> Call:
        """The request's caller, known (401 otherwise) and, when it `generates`, an app holding USE_AI
        (403): both before its body is read. The service checks them again, as for any call."""
        if self._stopping:
            raise HttpError("UNAVAILABLE", "the daemon is stopping")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HttpError("UNAUTHENTICATED", NO_TOKEN)
        call = Call(token.strip())
        caller = self._identify(call)
        if generates:
            if caller.is_admin:
                raise HttpError("UNAUTHENTICATED", "the admin token is no app's: use an app token")
            if USE_AI not in caller.permissions:
                raise HttpError("PERMISSION_DENIED", f"app {caller.bundle} lacks the permission {USE_AI}")
        return call

    async def _body(self, request: Request, cls: type[Any]) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self._max_body):
            raise self._too_large()
        data = bytearray()
        async for part in request.stream():
            data += part
            if len(data) > self._max_body:
                raise self._too_large()
        try:
            body = json.loads(data, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise BadRequest(f"the request body is not JSON: {exc}") from None
        return parse(cls, body)

    def _too_large(self) -> HttpError:
        return HttpError(
            "TOO_LARGE", f"the request body is larger than {self._max_body} bytes (http.max_body_bytes)"
        )

    async def _ready(self, name: str, device: str) -> Any:
        """The model, once loaded: a request for one still loading is 503 (it starts the load of one
        not loaded yet), which clients retry after `retry-after`. One that names a device may run there."""
        if self._stopping:
            raise HttpError("UNAVAILABLE", "the daemon is stopping")
        m = self._ai.models.get(name)
        if m.engine is not None or device:
            return m
        load = self._loads.get(m.name)
        if load is not None and load.done():
            del self._loads[m.name]
            failed = load.exception()
            if failed is not None:
                raise failed  # the load's own error; the next request tries again
            if m.engine is not None:
                return m
            load = None
        if load is None:
            load = self._loads[m.name] = asyncio.ensure_future(self._ai.models.engine(m))
            load.add_done_callback(lambda f: f.cancelled() or f.exception())  # read: the log has it
        raise HttpError("UNAVAILABLE", f"model {m.name} is loading: retry in a moment")

    # ---- routes ----

    async def health(self, request: Request) -> Response:
        """llama-server's: 200 {"status": "ok"} once the default model is loaded, 503 before (and while
        the daemon stops). No token needed."""
        try:
            m = self._ai.models.get("")
        except Exception as exc:
            return error_response(exc, "health")
        if self._stopping:
            return error_response(HttpError("UNAVAILABLE", "the daemon is stopping"), "health")
        if m.engine is None:
            return error_response(HttpError("UNAVAILABLE", "Loading model"), "health")
        return JSONResponse({"status": "ok"})

    async def models(self, request: Request) -> Response:
        resp = await self._ai.ListModels(pb.ListModelsRequest(), self._call(request))
        return JSONResponse({"object": "list", "data": [self._model(m) for m in resp.models]})

    async def model(self, request: Request) -> Response:
        name = request.path_params["model"]
        resp = await self._ai.ListModels(pb.ListModelsRequest(), self._call(request))
        for m in resp.models:
            if m.name == name:
                return JSONResponse(self._model(m))
        raise HttpError("NOT_FOUND", f"no model {name!r}: see /v1/models")

    def _model(self, m: pb.Model) -> dict[str, Any]:
        meta: dict[str, Any] = {"n_ctx": m.n_ctx, "loaded": m.loaded, "default": m.is_default}
        if m.kind == pb.MODEL_KIND_EMBED:
            meta |= {"kind": "embed", "embedding_dim": m.embedding_dim}
        return {
            "id": m.name,
            "object": "model",
            "created": self._started,
            "owned_by": "datamgr",
            "meta": meta,
        }

    async def completions(self, request: Request) -> Response:
        call = self._call(request, generates=True)
        body: CompletionBody = await self._body(request, CompletionBody)
        req = body.request()
        m = await self._ready(req.model, req.device)
        logprobs = body.logprobs is not None
        answer = Answer("text", m.name, body.n, _piece(m), logprobs, body.top_logprobs, body.include_usage)
        return Generation(self._ai.Complete(req, call), answer, body.stream, "Complete")

    async def chat(self, request: Request) -> Response:
        call = self._call(request, generates=True)
        body: ChatBody = await self._body(request, ChatBody)
        req = body.request()
        m = await self._ready(req.model, req.device)
        top = body.top_logprobs or 0
        answer = Answer("chat", m.name, body.n, _piece(m), body.logprobs, top, body.include_usage)
        return Generation(self._ai.Chat(req, call), answer, body.stream, "Chat")

    async def embeddings(self, request: Request) -> Response:
        """OpenAI's embeddings: vectors as float lists, or base64 of their little-endian float32 bytes
        (what the openai client asks for by default)."""
        call = self._call(request, generates=True)
        body: EmbeddingsBody = await self._body(request, EmbeddingsBody)
        resp = await self._ai.Embed(body.request(), call)
        dim = len(resp.embeddings[0].values) if resp.embeddings else 0
        if body.dimensions is not None and body.dimensions != dim:
            raise BadRequest(
                f"model {resp.model} makes {dim}-dimensional vectors, not {body.dimensions}", "dimensions"
            )
        data = []
        for i, e in enumerate(resp.embeddings):
            if body.encoding_format == "base64":
                vector: Any = base64.b64encode(np.asarray(e.values, dtype="<f4").tobytes()).decode()
            else:
                vector = list(e.values)
            data.append({"object": "embedding", "index": i, "embedding": vector})
        usage = {"prompt_tokens": resp.prompt_tokens, "total_tokens": resp.prompt_tokens}
        return JSONResponse({"object": "list", "data": data, "model": resp.model, "usage": usage})

    async def metrics(self, request: Request) -> Response:
        """The same Prometheus text as GetStats (an app holding USE_AI, or the admin token)."""
        resp = await self._ai.GetStats(pb.GetStatsRequest(), self._call(request))
        return Response(resp.prometheus, media_type="text/plain; version=0.0.4")

    async def tokenize(self, request: Request) -> Response:
        call = self._call(request)
        body: TokenizeBody = await self._body(request, TokenizeBody)
        req = pb.TokenizeRequest(model=body.model, text=body.content, add_special=body.add_special)
        tokens = list((await self._ai.Tokenize(req, call)).tokens)
        if not body.with_pieces:
            return JSONResponse({"tokens": tokens})
        piece = _piece(self._ai.models.get(body.model))
        return JSONResponse({"tokens": [{"id": t, "piece": _readable(piece(t))} for t in tokens]})

    async def detokenize(self, request: Request) -> Response:
        call = self._call(request)
        body: DetokenizeBody = await self._body(request, DetokenizeBody)
        resp = await self._ai.Detokenize(pb.DetokenizeRequest(model=body.model, tokens=body.tokens), call)
        return JSONResponse({"content": resp.text})


def _piece(m: Any) -> Callable[[int], bytes]:
    return lambda token: m.tokenizer.piece(token) if m.tokenizer is not None else b""


def _readable(raw: bytes) -> str | list[int]:
    """llama-server's piece: its text when it is whole UTF-8, else its bytes."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return list(raw)


class Generation(Response):
    """A generation's answer: streamed as server-sent events or whole, while the client is connected.
    The chunks are read only while it is; a client that disconnects cancels the read, which closes
    the service's stream and so aborts the request in the engine."""

    def __init__(
        self, chunks: AsyncIterator[pb.CompletionChunk], answer: Answer, stream: bool, where: str
    ) -> None:
        self._chunks, self._answer, self._stream, self._where = chunks, answer, stream, where
        self._ending = False  # the last message is being sent: the client's leaving is then no news

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        work = asyncio.ensure_future(self._serve(send))
        gone = asyncio.ensure_future(self._disconnected(receive))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not work.done() and not self._ending:
                work.cancel()  # the client left (or the server stops): the generation ends here
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            await self._close()

    @staticmethod
    async def _disconnected(receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async def _close(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()

    async def _serve(self, send: Send) -> None:
        try:
            first = await anext(self._chunks, None)
        except Exception as exc:  # before any token: the request's own status
            await self._close()
            status, body = error_object(exc, self._where)
            headers = [(b"content-type", b"application/json")]
            headers += [(k.encode(), v.encode()) for k, v in headers_for(status, exc).items()]
            await self._last(send, status, headers, _json_bytes(body))
            return
        if self._stream:
            await self._events(send, first)
        else:
            await self._whole(send, first)

    async def _last(self, send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self._ending = True
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _events(self, send: Send, chunk: pb.CompletionChunk | None) -> None:
        answer = self._answer
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        try:
            while chunk is not None:
                event = answer.add(chunk)
                if event is not None:
                    await send({"type": "http.response.body", "body": _sse(event), "more_body": True})
                chunk = await anext(self._chunks, None)
            if answer.include_usage:
                await send(
                    {"type": "http.response.body", "body": _sse(answer.usage_event()), "more_body": True}
                )
        except Exception as exc:  # after the headers: the error is the last event
            await self._close()
            _, body = error_object(exc, self._where)
            await send({"type": "http.response.body", "body": _sse(body), "more_body": True})
        self._ending = True
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    async def _whole(self, send: Send, chunk: pb.CompletionChunk | None) -> None:
        try:
            while chunk is not None:
                self._answer.add(chunk)
                chunk = await anext(self._chunks, None)
        except Exception as exc:
            await self._close()
            status, body = error_object(exc, self._where)
            headers = [(k.encode(), v.encode()) for k, v in headers_for(status, exc).items()]
            await self._last(
                send, status, [(b"content-type", b"application/json"), *headers], _json_bytes(body)
            )
            return
        whole = _json_bytes(self._answer.whole())
        await self._last(send, 200, [(b"content-type", b"application/json")], whole)


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + _json_bytes(event) + b"\n\n"
