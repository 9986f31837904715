"""The AiService gRPC servicer: authentication, permission, validation, per-app limits, streaming.

The daemon's composition root hands in what aicap must not import (`aicap._host`): `identify` (a call
→ its caller: bundle, permissions, whether it is the device owner) and the daemon's database (models
are stored with its engine and written on its writer). Errors are aicap's own, carrying their status
code: the server's edge maps them.

A generation request is checked before anything is queued (its size in characters: nothing is
tokenized on the event loop); then it waits for one of its app's slots (AppLimiter), is rendered and
tokenized on the tokenizing pool (Prompts), goes to the model's engine, and its tokens stream back one
chunk per token and sample, with text made UTF-8-safe and cut at stop strings (SampleText). Leaving
the stream early (a cancelled call, a passed deadline) aborts the request, which frees its KV within
one engine step. Each chunk is delivered only while the app still holds USE_AI, and `revoked` ends an
app's open generations as soon as the owner revokes the permission or removes the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc

from aicap._host import Caller, Database, Identify
from aicap.chat import ROLES
from aicap.config import USE_AI, AiConfig, ModelSpec
from aicap.engine.async_engine import LatencyHistogram
from aicap.engine.generation import Generation
from aicap.engine.llm_engine import EngineStats
from aicap.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unauthenticated
from aicap.limits import AppLimiter, Limits
from aicap.metrics import make_registry, prometheus_text
from aicap.models import Model, ModelRegistry
from aicap.prompts import Prompt, Prompts
from aicap.sampling import Request, sampling
from aicap.store import ModelStore
from aicap.text import SampleText
from aicap.v1 import aicap_pb2 as pb
from aicap.v1 import aicap_pb2_grpc as pb_grpc

log = logging.getLogger("aicap.service")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AiService"].full_name
_FINISH = {"stop": pb.FINISH_REASON_STOP, "length": pb.FINISH_REASON_LENGTH}


class _Call:
    """An open generation: its call (to re-check its caller) and its queue once in the engine."""

    __slots__ = ("context", "feed")

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self.context = context
        self.feed: Generation | None = None


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
        identify: Identify,
        db: Database,
        host_busy: Callable[[], int] | None = None,
    ) -> None:
        """`host_busy`: how many of the host's threads run CPU-heavy work now (the daemon's database
        statements): the model's inference uses fewer threads meanwhile (see ModelRunner)."""
        self.config = config
        self._host_busy = host_busy
        self._identify = identify
        self.models = ModelRegistry(config, ModelStore(db.engine), db.write, self._busy)
        self.limiter = AppLimiter(
            Limits(config.max_concurrent_per_app, config.max_queued_per_app, config.max_waiting)
        )
        self.metrics = make_registry(self._loaded_engines, self.limiter)
        self.prompts = Prompts(config)
        self._calls: dict[str, set[_Call]] = {}  # bundle → its open generations
        self._metrics_server: Any = None
        self._loading: asyncio.Task[None] | None = None

    def add_to(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_AiServiceServicer_to_server(self, server)

    def _busy(self) -> int:
        """The CPU-heavy threads running beside inference now: the host's and tokenizing's."""
        return (self._host_busy() if self._host_busy is not None else 0) + self.prompts.busy()

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
        self.prompts.close()

    # ---- identity ----

    def _app(self, context: grpc.aio.ServicerContext, admin_ok: bool = False) -> str:
        """The calling app's bundle ("" for the admin when `admin_ok`); it must hold USE_AI."""
        caller = self._identify(context)
        return "" if admin_ok and caller.is_admin else self._using_ai(caller)

    def _using_ai(self, caller: Caller) -> str:
        """The caller's bundle, if it is an app that (still) holds USE_AI."""
        if caller.is_admin:
            raise Unauthenticated("unknown app token: ask the device owner for one (datamgr apps add BUNDLE)")
        if USE_AI not in caller.permissions:
            raise PermissionDenied(f"app {caller.bundle} lacks the permission {USE_AI}")
        return caller.bundle

    def _check(self, context: grpc.aio.ServicerContext) -> None:
        """The call's app still exists and holds USE_AI (its generation may go on)."""
        self._using_ai(self._identify(context))

    def revoked(self, bundle: str) -> None:
        """The owner revoked a permission of `bundle` or removed it (on the loop): its generations
        that may no longer run end now with PERMISSION_DENIED or UNAUTHENTICATED (KV freed)."""
        for call in list(self._calls.get(bundle, ())):
            try:
                self._check(call.context)
            except Exception as exc:  # aicap's PermissionDenied, or the daemon's UNAUTHENTICATED
                if call.feed is not None:
                    call.feed.kill(exc)

    def _admin(self, context: grpc.aio.ServicerContext) -> None:
        if not self._identify(context).is_admin:
            raise PermissionDenied("model changes need the device owner's admin token, not an app token")

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

    async def ListModels(self, request: pb.ListModelsRequest, context: Any) -> pb.ListModelsResponse:
        self._app(context, admin_ok=True)
        return pb.ListModelsResponse(models=[self._model_message(m) for m in self.models.all()])

    async def AddModel(self, request: pb.AddModelRequest, context: Any) -> pb.AddModelResponse:
        self._admin(context)
        from pathlib import Path

        spec = ModelSpec(request.name, Path(request.path).expanduser(), request.n_ctx, request.chat_template)
        m = await self.models.add(spec)
        return pb.AddModelResponse(model=self._model_message(m))

    async def RemoveModel(self, request: pb.RemoveModelRequest, context: Any) -> pb.RemoveModelResponse:
        self._admin(context)
        await self.models.remove(request.name)
        return pb.RemoveModelResponse()

    # ---- tokens ----

    async def Tokenize(self, request: pb.TokenizeRequest, context: Any) -> pb.TokenizeResponse:
        self._app(context, admin_ok=True)
        m = self.models.get(request.model)
        self.prompts.check_chars(len(request.text), m.spec.n_ctx, m.name, "text")
        tok = await self.models.tokenizer(m)
        tokens = await self.prompts.run(tok.tokenize, request.text, request.add_special)
        return pb.TokenizeResponse(tokens=tokens)

    async def Detokenize(self, request: pb.DetokenizeRequest, context: Any) -> pb.DetokenizeResponse:
        self._app(context, admin_ok=True)
        m = self.models.get(request.model)
        if len(request.tokens) > m.spec.n_ctx:
            raise InvalidArgument(
                f"{len(request.tokens)} tokens are more than the context of model {m.name} holds "
                f"({m.spec.n_ctx})"
            )
        tok = await self.models.tokenizer(m)
        for t in request.tokens:
            if not tok.valid(t):
                raise InvalidArgument(f"token {t} is not in the vocabulary of {m.name} (0-{tok.n_vocab - 1})")
        return pb.DetokenizeResponse(text=await self.prompts.run(tok.detokenize, list(request.tokens)))

    # ---- generation ----

    async def Complete(self, request: pb.CompleteRequest, context: Any) -> AsyncIterator[pb.CompletionChunk]:
        app = self._app(context)
        m = self.models.get(request.model)
        if not request.prompt:
            raise InvalidArgument("the prompt is empty")
        self.prompts.check_chars(len(request.prompt), m.spec.n_ctx, m.name, "prompt")
        tok = await self.models.tokenizer(m)
        prompt = functools.partial(self.prompts.completion, tok, request.prompt, app)
        async for chunk in self._generate(app, context, m, prompt, request.params):
            yield chunk

    async def Chat(self, request: pb.ChatRequest, context: Any) -> AsyncIterator[pb.CompletionChunk]:
        app = self._app(context)
        m = self.models.get(request.model)
        if not request.messages:
            raise InvalidArgument("no messages")
        if len(request.messages) > m.spec.n_ctx:  # each renders to a token or more
            raise InvalidArgument(
                f"{len(request.messages)} messages are more than the context of model {m.name} holds "
                f"({m.spec.n_ctx} tokens)"
            )
        for i, msg in enumerate(request.messages):
            if msg.role not in ROLES:
                raise InvalidArgument(f"message {i} has role {msg.role!r}: use one of {', '.join(ROLES)}")
        chars = sum(len(msg.content) for msg in request.messages)
        self.prompts.check_chars(chars, m.spec.n_ctx, m.name, "messages")
        tok = await self.models.tokenizer(m)
        template = m.chat_template()
        if not template:
            raise FailedPrecondition(f"model {m.name} has no chat template: add it with one (chat_template)")
        messages = [{"role": msg.role, "content": msg.content} for msg in request.messages]
        prompt = functools.partial(self.prompts.chat, tok, template, messages, app)
        async for chunk in self._generate(app, context, m, prompt, request.params):
            yield chunk

    def _request(self, params: pb.SamplingParams, prompt_tokens: int, m: Model) -> Request:
        fields = {f.name: list(v) if f.name == "stop" else v for f, v in params.ListFields()}
        return sampling(fields, self.config, prompt_tokens, m.spec.n_ctx, m.name)

    async def _generate(
        self,
        app: str,
        context: grpc.aio.ServicerContext,
        m: Model,
        make_prompt: Callable[[], Awaitable[Prompt]],
        params: pb.SamplingParams,
    ) -> AsyncIterator[pb.CompletionChunk]:
        engine = await self.models.engine(m)
        tok = m.tokenizer
        assert tok is not None
        with self._tracked(app, context) as call:
            async with self.limiter.slot(app):
                self._check(context)  # it may have been revoked while it waited
                prompt = await make_prompt()
                req = self._request(params, len(prompt.tokens), m)
                n = req.params.n
                feed = call.feed = m.open(engine.generate(prompt.tokens, req.params, app, prompt.shared))
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
                        self._check(context)  # no chunk once its app lost USE_AI or was removed
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
                                    prompt_tokens=len(prompt.tokens),
                                    completion_tokens=counts[i],
                                    cached_tokens=ev.cached_tokens,
                                )
                            )
                            done.add(i)
                        yield chunk
                finally:
                    await m.close_generation(feed)

    @contextlib.contextmanager
    def _tracked(self, app: str, context: grpc.aio.ServicerContext) -> Iterator[_Call]:
        """The app's generation, listed among its open ones (for `revoked`) while it runs."""
        call = _Call(context)
        calls = self._calls.setdefault(app, set())
        calls.add(call)
        try:
            yield call
        finally:
            calls.discard(call)
            if not calls:
                del self._calls[app]

    # ---- statistics ----

    def _loaded_engines(self) -> list[tuple[str, Any]]:
        return [(m.name, m.engine) for m in self.models.all() if m.engine is not None]

    async def GetStats(self, request: pb.GetStatsRequest, context: Any) -> pb.GetStatsResponse:
        self._app(context, admin_ok=True)  # an app's view of the engine is for apps that use it
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
