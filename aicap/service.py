"""The AiService gRPC servicer: authentication, permission, validation, per-app limits, streaming.

The daemon's composition root hands in what aicap must not import: `authenticate` (an app token →
its bundle and permissions, or None), `is_admin` (the device owner's token), a ModelStore on the
daemon's database and `run_db` to run its writes on the database writer.

A generation request is checked whole before anything is queued; then it waits for one of its app's
slots (AppLimiter), goes to the model's engine, and its tokens stream back one chunk per token and
sample, with text made UTF-8-safe and cut at stop strings (SampleText). Leaving the stream early (a
cancelled call, a passed deadline) aborts the request, which frees its KV within one engine step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from aicap.chat import ROLES, render_chat
from aicap.config import USE_AI, AiConfig, ModelSpec
from aicap.engine.async_engine import LatencyHistogram
from aicap.engine.llm_engine import EngineStats
from aicap.errors import (
    AicapError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from aicap.limits import AppLimiter, Limits
from aicap.metrics import make_registry, prometheus_text
from aicap.models import Model, ModelRegistry, RunDb
from aicap.sampling import Request, sampling
from aicap.store import ModelStore
from aicap.text import SampleText
from aicap.v1 import aicap_pb2 as pb
from aicap.v1 import aicap_pb2_grpc as pb_grpc

log = logging.getLogger("aicap.service")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AiService"].full_name
STATUS: dict[str, grpc.StatusCode] = {
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "UNAUTHENTICATED": grpc.StatusCode.UNAUTHENTICATED,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "ALREADY_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    "FAILED_PRECONDITION": grpc.StatusCode.FAILED_PRECONDITION,
    "RESOURCE_EXHAUSTED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
}
_FINISH = {"stop": pb.FINISH_REASON_STOP, "length": pb.FINISH_REASON_LENGTH}

Authenticate = Callable[[str], tuple[str, frozenset[str]] | None]
IsAdmin = Callable[[str], bool]


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, name: str) -> None:
    if isinstance(exc, AicapError):
        await context.abort(STATUS.get(exc.code, grpc.StatusCode.UNKNOWN), exc.message)
    log.error("bug in %s", name, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {name} (details in the daemon log)")


def _rpc(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Maps aicap errors to statuses (anything else is a bug: INTERNAL) for unary and streaming methods."""
    name = fn.__name__
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def stream(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                async for item in fn(self, request, context):
                    yield item
            except (grpc.aio.AbortError, GeneratorExit):
                raise
            except Exception as exc:
                await _abort(context, exc, name)

        return stream

    @functools.wraps(fn)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, name)

    return unary


def _token(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :].strip()
    return None


def _histogram(h: LatencyHistogram) -> pb.Histogram:
    return pb.Histogram(
        bounds=h.bounds,
        counts=h.cumulative(),
        count=h.count,
        sum=h.sum,
        p50=h.quantile(0.5),
        p99=h.quantile(0.99),
    )


class AiService(pb_grpc.AiServiceServicer):
    def __init__(
        self,
        config: AiConfig,
        authenticate: Authenticate,
        is_admin: IsAdmin,
        store: ModelStore,
        run_db: RunDb,
    ) -> None:
        self.config = config
        self._authenticate = authenticate
        self._is_admin = is_admin
        self.models = ModelRegistry(config, store, run_db)
        self.limiter = AppLimiter(
            Limits(config.max_concurrent_per_app, config.max_queued_per_app, config.max_waiting)
        )
        self.metrics = make_registry(self._loaded_engines, self.limiter)
        self._metrics_server: Any = None
        self._loading: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Registers the models and starts loading the default one (`ready()` says when it is loaded)."""
        await self.models.start()
        self._loading = asyncio.create_task(self.models.load_default())
        if self.config.metrics_port is not None:
            from prometheus_client import start_http_server

            self._metrics_server, _ = start_http_server(
                self.config.metrics_port, addr="127.0.0.1", registry=self.metrics
            )
            log.info("AI metrics on http://127.0.0.1:%d/metrics", self._metrics_server.server_port)

    async def ready(self) -> None:
        """Returns once the default model is loaded (requests before then wait for it)."""
        assert self._loading is not None, "start() first"
        await asyncio.shield(self._loading)

    async def close(self) -> None:
        """Ends in-flight generations with UNAVAILABLE and frees every model."""
        await self.models.close()
        if self._loading is not None:
            with contextlib.suppress(Exception):
                await self._loading  # it failed or was cut short by the close; either is logged
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()

    # ---- identity ----

    def _app(self, context: grpc.aio.ServicerContext, admin_ok: bool = False) -> str:
        """The calling app's bundle ("" for the admin when `admin_ok`); it must hold USE_AI."""
        token = _token(context)
        if not token:
            raise Unauthenticated("no token: send 'authorization: Bearer <app token>'")
        if admin_ok and self._is_admin(token):
            return ""
        found = self._authenticate(token)
        if found is None:
            raise Unauthenticated("unknown app token: ask the device owner for one (datamgr apps add BUNDLE)")
        bundle, permissions = found
        if USE_AI not in permissions:
            raise PermissionDenied(f"app {bundle} lacks the permission {USE_AI}")
        return bundle

    def _admin(self, context: grpc.aio.ServicerContext) -> None:
        token = _token(context)
        if token and self._is_admin(token):
            return
        if token and self._authenticate(token) is not None:
            raise PermissionDenied("model changes need the device owner's admin token, not an app token")
        raise Unauthenticated("model changes need the device owner's admin token")

    # ---- models ----

    def _model_message(self, m: Model) -> pb.Model:
        return pb.Model(
            name=m.name,
            path=str(m.spec.path),
            n_ctx=m.spec.n_ctx,
            chat_template=m.chat_template(),
            is_default=self.models.is_default(m),
            loaded=m.engine is not None,
        )

    @_rpc
    async def ListModels(self, request: pb.ListModelsRequest, context: Any) -> pb.ListModelsResponse:
        self._app(context, admin_ok=True)
        return pb.ListModelsResponse(models=[self._model_message(m) for m in self.models.all()])

    @_rpc
    async def AddModel(self, request: pb.AddModelRequest, context: Any) -> pb.AddModelResponse:
        self._admin(context)
        from pathlib import Path

        spec = ModelSpec(request.name, Path(request.path).expanduser(), request.n_ctx, request.chat_template)
        m = await self.models.add(spec)
        return pb.AddModelResponse(model=self._model_message(m))

    @_rpc
    async def RemoveModel(self, request: pb.RemoveModelRequest, context: Any) -> pb.RemoveModelResponse:
        self._admin(context)
        await self.models.remove(request.name)
        return pb.RemoveModelResponse()

    # ---- tokens ----

    @_rpc
    async def Tokenize(self, request: pb.TokenizeRequest, context: Any) -> pb.TokenizeResponse:
        self._app(context, admin_ok=True)
        m = self.models.get(request.model)
        self._check_text_size(request.text, m, "text")
        tok = await self.models.tokenizer(m)
        return pb.TokenizeResponse(tokens=tok.tokenize(request.text, add_special=request.add_special))

    @_rpc
    async def Detokenize(self, request: pb.DetokenizeRequest, context: Any) -> pb.DetokenizeResponse:
        self._app(context, admin_ok=True)
        m = self.models.get(request.model)
        tok = await self.models.tokenizer(m)
        for t in request.tokens:
            if not tok.valid(t):
                raise InvalidArgument(f"token {t} is not in the vocabulary of {m.name} (0-{tok.n_vocab - 1})")
        return pb.DetokenizeResponse(text=tok.detokenize(list(request.tokens)))

    def _check_text_size(self, text: str, m: Model, what: str) -> None:
        # a token holds at least one character: a longer text cannot fit the context anyway
        if len(text) > 64 * m.spec.n_ctx:
            raise InvalidArgument(
                f"the {what} ({len(text)} characters) is far longer than the context of {m.name}"
            )

    # ---- generation ----

    @_rpc
    async def Complete(self, request: pb.CompleteRequest, context: Any) -> AsyncIterator[pb.CompletionChunk]:
        app = self._app(context)
        m = self.models.get(request.model)
        if not request.prompt:
            raise InvalidArgument("the prompt is empty")
        self._check_text_size(request.prompt, m, "prompt")
        tok = await self.models.tokenizer(m)
        prompt = tok.tokenize(request.prompt, add_special=True)
        async for chunk in self._generate(app, m, prompt, self._request(request.params, len(prompt), m)):
            yield chunk

    @_rpc
    async def Chat(self, request: pb.ChatRequest, context: Any) -> AsyncIterator[pb.CompletionChunk]:
        app = self._app(context)
        m = self.models.get(request.model)
        if not request.messages:
            raise InvalidArgument("no messages")
        for i, msg in enumerate(request.messages):
            if msg.role not in ROLES:
                raise InvalidArgument(f"message {i} has role {msg.role!r}: use one of {', '.join(ROLES)}")
        self._check_text_size("".join(msg.content for msg in request.messages), m, "messages")
        tok = await self.models.tokenizer(m)
        template = m.chat_template()
        if not template:
            raise FailedPrecondition(f"model {m.name} has no chat template: add it with one (chat_template)")
        messages = [{"role": msg.role, "content": msg.content} for msg in request.messages]
        text = render_chat(template, messages, tok.token_text(tok.bos), tok.token_text(tok.eos))
        prompt = tok.tokenize(text, add_special=False, parse_special=True)
        async for chunk in self._generate(app, m, prompt, self._request(request.params, len(prompt), m)):
            yield chunk

    def _request(self, params: pb.SamplingParams, prompt_tokens: int, m: Model) -> Request:
        fields = {f.name: list(v) if f.name == "stop" else v for f, v in params.ListFields()}
        return sampling(fields, self.config, prompt_tokens, m.spec.n_ctx, m.name)

    async def _generate(
        self, app: str, m: Model, prompt: list[int], req: Request
    ) -> AsyncIterator[pb.CompletionChunk]:
        engine = await self.models.engine(m)
        tok = m.tokenizer
        assert tok is not None
        n = req.params.n
        async with self.limiter.slot(app):
            feed = m.open(engine.generate(prompt, req.params, app=app))
            try:
                texts = [SampleText(req.stops) for _ in range(n)]
                counts = [0] * n
                done: set[int] = set()
                while len(done) < n:
                    try:
                        ev = await feed.next()
                    except ValueError as exc:  # the engine refused it: cannot fit the context
                        raise InvalidArgument(str(exc)) from None
                    if ev is None:
                        break
                    i = ev.index
                    if i in done:
                        continue
                    counts[i] += 1
                    sample = texts[i]
                    chunk = pb.CompletionChunk(
                        index=i, text=sample.feed(tok.piece(ev.token)), token_ids=[ev.token]
                    )
                    if req.params.logprobs and ev.logprob is not None:
                        chunk.logprobs.append(ev.logprob)
                    if ev.finished and not sample.stopped:
                        chunk.text += sample.finish()
                    if sample.stopped or ev.finished:
                        if sample.stopped:
                            feed.stop(i)
                        reason = "stop" if sample.stopped else ev.finish_reason or "length"
                        chunk.finish_reason = _FINISH[reason]
                        chunk.usage.CopyFrom(
                            pb.Usage(
                                prompt_tokens=len(prompt),
                                completion_tokens=counts[i],
                                cached_tokens=ev.cached_tokens,
                            )
                        )
                        done.add(i)
                    yield chunk
            finally:
                await m.close_feed(feed)

    # ---- statistics ----

    def _loaded_engines(self) -> list[tuple[str, Any]]:
        return [(m.name, m.engine) for m in self.models.all() if m.engine is not None]

    @_rpc
    async def GetStats(self, request: pb.GetStatsRequest, context: Any) -> pb.GetStatsResponse:
        token = _token(context)
        if not token:
            raise Unauthenticated("no token: send 'authorization: Bearer <app token or admin token>'")
        if not self._is_admin(token) and self._authenticate(token) is None:
            raise Unauthenticated("unknown token: GetStats needs an app token or the admin token")
        models = [self.models.get(request.model)] if request.model else self.models.all()
        out = pb.GetStatsResponse(prometheus=prometheus_text(self.metrics))
        for m in models:
            s = m.engine.stats() if m.engine is not None else EngineStats()
            msg = out.engines.add(model=m.name)
            for name in EngineStats.__dataclass_fields__:
                setattr(msg, name, getattr(s, name))
            if m.engine is not None:
                msg.time_to_first_token.CopyFrom(_histogram(m.engine.ttft))
                msg.inter_token_latency.CopyFrom(_histogram(m.engine.itl))
        return out
