"""The AiService gRPC servicer: authentication, permission, validation, per-app limits, streaming.

The daemon's composition root hands in what aicap must not import (`aicap._host`): `identify` (a call
→ its caller: bundle, permissions, whether it is the device owner) and the daemon's database (models
are stored with its engine and written on its writer). Errors are aicap's own, carrying their status
code: the server's edge maps them.

A generation request is checked before anything is queued (its size in characters: nothing is
tokenized on the event loop); then it waits for one of its app's slots (AppLimiter), is rendered and
tokenized on the tokenizing pool (Prompts), goes to the model's engine, and its tokens stream back one
chunk per token and sample, with text made UTF-8-safe and cut at stop strings (SampleText). A response
format, grammar or tools (structured output) is bounded in size on the loop and compiled on the pool
before anything is queued; each start of the generation (here, or a replay after a lost device) gets
a matcher that has read the tokens already streamed, and paired devices get the format in the
SamplingParams they are sent (tools as the JSON schema they make). Leaving
the stream early (a cancelled call, a passed deadline) aborts the request, which frees its KV within
one engine step. Each chunk is delivered only while the app still holds USE_AI, and `revoked` ends an
app's open generations as soon as the owner revokes the permission or removes the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc

from aicap import grounding
from aicap._host import Caller, Database, Identify, Peers
from aicap.answers import RecentAnswers
from aicap.chat import ROLES
from aicap.config import USE_AI, AiConfig, ModelSpec
from aicap.conversations import Conversations
from aicap.embedding import Embeddings, TextEmbedder
from aicap.engine.async_engine import AsyncEngine, LatencyHistogram
from aicap.engine.generation import Generation
from aicap.engine.llm_engine import EngineStats, TokenEvent
from aicap.engine.sampler import SamplingParams
from aicap.engine.speed import Speed
from aicap.engine.tokenizer import Tokenizer
from aicap.errors import (
    AicapError,
    FailedPrecondition,
    HandedOver,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from aicap.kv_state import KvState
from aicap.limits import AppLimiter, Limits
from aicap.metrics import make_registry, prometheus_text
from aicap.models import Model, ModelRegistry
from aicap.placement import LOCAL, Load, choose
from aicap.prompts import Prompt, Prompts
from aicap.sampling import Request, sampling
from aicap.store import ModelStore
from aicap.structured import Format, check_size
from aicap.text import SampleText
from aicap.tools import Tool, Tools, parse_answer
from aicap.usage import TokenQuota, UsageStore
from aicap.v1 import aicap_pb2 as pb
from aicap.v1 import aicap_pb2_grpc as pb_grpc

log = logging.getLogger("aicap.service")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AiService"].full_name
_FINISH = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "tool_calls": pb.FINISH_REASON_TOOL_CALLS,
}
_CHOICES = {
    pb.TOOL_CHOICE_MODE_UNSPECIFIED: "auto",
    pb.TOOL_CHOICE_MODE_AUTO: "auto",
    pb.TOOL_CHOICE_MODE_NONE: "none",
    pb.TOOL_CHOICE_MODE_REQUIRED: "required",
    pb.TOOL_CHOICE_MODE_FUNCTION: "function",
}


class _Call:
    """An open generation: its call (to re-check its caller) and its run once started."""

    __slots__ = ("context", "run")

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self.context = context
        self.run: _Run | None = None


class _LocalSource:
    """A generation on this device's engine."""

    local = True

    def __init__(self, device: str, feed: Generation, m: Model, prefilling: dict[str, int], n: int) -> None:
        self.device, self.feed, self._m = device, feed, m
        self._handing: asyncio.Future[tuple[KvState, list[int]]] | None = None  # a drain's export
        self._prefilling, self._n = prefilling, n  # prompt tokens not yet prefilled, per model
        prefilling[m.name] = prefilling.get(m.name, 0) + n

    def _prefilled(self) -> None:
        if self._n:
            self._prefilling[self._m.name] -= self._n
            self._n = 0

    async def next(self) -> TokenEvent | None:
        try:
            ev = await self.feed.next()
        except ValueError as exc:  # the engine refused it: cannot fit the context
            raise InvalidArgument(str(exc)) from None
        self._prefilled()
        return ev

    def stop(self, index: int) -> None:
        self.feed.stop(index)

    def kill(self, error: BaseException) -> None:
        self.feed.kill(error)

    async def hand_over(self) -> bool:
        """Ends the generation here, exporting its KV state for `handed` (its reader reads the events
        already made, then the end); False if it has none to hand (not started, ended, n > 1)."""
        engine = self._m.engine
        if engine is None:
            return False
        self._handing = asyncio.ensure_future(engine.export(self.feed))
        return await self.handed() is not None

    async def handed(self) -> KvState | None:
        """The KV state a drain took, once the generation has ended here; None if none did."""
        if self._handing is None:
            return None
        try:
            state, _ = await asyncio.shield(self._handing)
        except AicapError:
            return None
        return state

    async def aclose(self) -> None:
        self._prefilled()
        await self._m.close_generation(self.feed)


class _PeerSource:
    """A generation on a paired device: its events pumped into a queue, so that `kill` can end it
    wherever its reader waits."""

    local = False

    def __init__(self, device: str, events: AsyncGenerator[TokenEvent, None]) -> None:
        self.device = device
        self._events = events
        self._queue: asyncio.Queue[TokenEvent | BaseException | None] = asyncio.Queue()
        self._pump = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            async for ev in self._events:
                self._queue.put_nowait(ev)
            self._queue.put_nowait(None)
        except Exception as exc:
            self._queue.put_nowait(exc)
        finally:
            await self._events.aclose()  # the call ends: the device frees the generation's KV

    async def next(self) -> TokenEvent | None:
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self, index: int) -> None:
        """Nothing to tell: the device stops a sample at the same stop string (serve_peer)."""

    def kill(self, error: BaseException) -> None:
        self._pump.cancel()
        self._queue.put_nowait(error)

    async def aclose(self) -> None:
        self._pump.cancel()
        await asyncio.gather(self._pump, return_exceptions=True)


_Source = _LocalSource | _PeerSource


class _Run:
    """One app generation wherever it runs now. A paired device lost mid-stream (Unavailable) hands a
    single-sample generation to another device or this one: its prompt and the tokens streamed so far
    are replayed there, and the stream goes on with no token lost or repeated (Petals' and Dynamo's
    replay), at most `max_migrations` times. A device that drains hands it back with its KV state
    (HandedOver): it goes on here from that state, with nothing recomputed (Llumnix's planned move)."""

    def __init__(
        self,
        start: Callable[[list[int], set[str], KvState | None], Awaitable[_Source]],
        n: int,
        max_migrations: int,
        auto: bool = False,
    ) -> None:
        self._start, self._n, self._max = start, n, max_migrations
        self.auto = auto  # placed by AUTO: a device that refuses it at once (full) hands it on too
        self._received = False  # the current source sent an event
        self.source: _Source | None = None
        self.emitted: list[int] = []  # tokens of sample 0 returned so far
        self.lost: set[str] = set()
        self.migrations = 0
        self._error: BaseException | None = None

    @property
    def device(self) -> str:
        return self.source.device if self.source is not None else ""

    async def begin(self) -> None:
        self.source = await self._start([], self.lost, None)

    async def next(self) -> TokenEvent | None:
        while True:
            if self._error is not None:
                raise self._error
            assert self.source is not None
            try:
                ev = await self.source.next()
            except (Unavailable, ResourceExhausted) as exc:
                busy = isinstance(exc, ResourceExhausted)  # refused at once: full for this device now
                if busy and not (self.auto and not self._received):
                    raise
                if self.source.local or self._n != 1 or self._error is not None:
                    raise
                await self._move(exc, counted=not busy)
                continue
            self._received = True
            if ev is not None and ev.index == 0:
                self.emitted.append(ev.token)
            return ev

    async def _move(self, exc: AicapError, counted: bool = True) -> None:
        """To the next device: a move of a started generation counts against max_migrations; a
        placement a full device refused at once does not."""
        assert self.source is not None
        self.migrations += counted
        if self.migrations > self._max:
            raise Unavailable(
                f"the generation was lost by {self.migrations} devices (ai.max_migrations {self._max}): {exc}"
            ) from None
        lost = self.source.device
        self.lost.add(lost)
        await self.source.aclose()
        state = exc.state if isinstance(exc, HandedOver) else None
        self.source = await self._start(list(self.emitted), self.lost, state)
        self._received = False
        log.info(
            "generation moved from device %s to %s after %d tokens%s: %s",
            lost,
            self.device,
            len(self.emitted),
            f", with the KV of {len(state.tokens)}" if state is not None else "",
            exc,
        )

    def stop(self, index: int) -> None:
        if self.source is not None:
            self.source.stop(index)

    def kill(self, error: BaseException) -> None:
        self._error = error
        if self.source is not None:
            self.source.kill(error)

    async def aclose(self) -> None:
        if self.source is not None:
            await self.source.aclose()


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
        measure_speed: bool = False,
    ) -> None:
        """`host_busy`: how many of the host's threads run CPU-heavy work now (the daemon's database
        statements): the model's inference uses fewer threads meanwhile (see ModelRunner).
        `measure_speed`: calibrate the default model at load (placement compares devices by it; a
        device that neither offloads nor serves peers has nothing to compare, and skips the work)."""
        self._measure_speed = measure_speed
        self.config = config
        self._host_busy = host_busy
        self._identify = identify
        # preempted sequences beyond the swap budget may be kept on paired devices (remote swap)
        keeper = (lambda: self.peers) if config.offload else None
        self.models = ModelRegistry(config, ModelStore(db.engine), db.write, self._busy, keeper)
        self.limiter = AppLimiter(
            Limits(config.max_concurrent_per_app, config.max_queued_per_app, config.max_waiting)
        )
        self.metrics = make_registry(self._loaded_engines, self.limiter, self._loaded_embedders)
        self.prompts = Prompts(config)
        self.answers = RecentAnswers()  # stateless chats' answers as computed, for their next turns
        self.embeddings = Embeddings(config, self.models, self.prompts, self.limiter)
        self.quota = TokenQuota(config.tokens_per_day_per_app, UsageStore(db.engine), db.write)
        self.conversations = Conversations(self)  # sessions and pinned contexts
        self._calls: dict[str, set[_Call]] = {}  # bundle → its open generations
        self.peers: Peers | None = None  # paired devices to offload to (set by the host)
        self.retriever: grounding.Retriever | None = None  # grounded chats' sources (set by the host)
        self._probes = 0  # speed probes run (see _calibrate)
        self._probing: asyncio.Task[None] | None = None
        self._prefilling: dict[str, int] = {}  # model → prompt tokens started, not yet prefilled
        self._served: set[_LocalSource] = set()  # paired devices' generations running here
        self.draining = False  # paired devices' generations are handed back, new ones refused
        self._metrics_server: Any = None
        self._loading: asyncio.Task[None] | None = None

    def add_to(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_AiServiceServicer_to_server(self, server)

    def _busy(self) -> int:
        """The CPU-heavy threads running beside inference now: the host's and tokenizing's."""
        return (self._host_busy() if self._host_busy is not None else 0) + self.prompts.busy()

    async def start(self) -> None:
        """Registers the models and starts loading the default one (`ready()` says when it is loaded)."""
        await self.quota.start()
        await self.models.start()
        self._loading = asyncio.create_task(self._load_default())
        if self.config.metrics_port is not None:
            from prometheus_client import start_http_server

            self._metrics_server, _ = start_http_server(
                self.config.metrics_port, addr="127.0.0.1", registry=self.metrics
            )
            log.info("AI metrics on http://127.0.0.1:%d/metrics", self._metrics_server.server_port)

    async def _load_default(self) -> None:
        await self.models.load_default()
        if self._measure_speed:
            m = self.models.get("")
            await self.models.digest(m)
            await self._calibrate(m)

    async def ready(self) -> None:
        """Returns once the default model is loaded (requests before then wait for it)."""
        assert self._loading is not None, "start() first"
        await asyncio.shield(self._loading)

    async def drain(self, resume: bool = False) -> int:
        """Hands paired devices' generations back and refuses new ones; `resume` serves them again.
        Each goes back with its KV state (serve_peer sends it after its last tokens), so that its
        device goes on from there; one with no state to hand (still waiting, n > 1) ends UNAVAILABLE
        and its device replays it. Returns how many were handed back."""
        self.draining = not resume
        if resume:
            return 0
        moved = list(self._served)
        handed = await asyncio.gather(*(source.hand_over() for source in moved))
        for source, ok in zip(moved, handed, strict=True):
            if not ok:
                source.kill(Unavailable("this device is draining: the generation moves to another device"))
        return len(moved)

    async def Drain(self, request: pb.DrainRequest, context: Any) -> pb.DrainResponse:
        self._admin(context)
        moved = await self.drain(request.resume)
        if moved or request.resume:
            log.info(
                "AI %s: %d paired devices' generations handed back",
                "resumed" if request.resume else "draining",
                moved,
            )
        return pb.DrainResponse(moved=moved, draining=self.draining)

    async def close(self) -> None:
        """Ends in-flight generations with UNAVAILABLE and frees every model."""
        await self.conversations.close()
        await self.quota.close()
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
                if call.run is not None:
                    call.run.kill(exc)

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
            loaded=m.loaded,
            kind=pb.MODEL_KIND_EMBED if m.kind == "embed" else pb.MODEL_KIND_GENERATE,
            embedding_dim=m.dim,
            weights_path=str(m.weights or ""),
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
        m = self.models.generator(request.model)
        if not request.prompt:
            raise InvalidArgument("the prompt is empty")
        self.prompts.check_chars(len(request.prompt), m.spec.n_ctx, m.name, "prompt")
        self._format(request.params)
        tok = await self.models.tokenizer(m)
        prompt = functools.partial(self.prompts.completion, tok, request.prompt, app)
        async for chunk in self._generate(app, context, m, prompt, request):
            yield chunk

    async def Chat(self, request: pb.ChatRequest, context: Any) -> AsyncIterator[pb.CompletionChunk]:
        app = self._app(context)
        if request.session or request.pinned_context:  # aicap.conversations
            async for chunk in self.conversations.chat(app, context, request):
                yield chunk
            return
        m = self.models.generator(request.model)
        if not request.messages:
            raise InvalidArgument("no messages")
        if len(request.messages) > m.spec.n_ctx:  # each renders to a token or more
            raise InvalidArgument(
                f"{len(request.messages)} messages are more than the context of model {m.name} holds "
                f"({m.spec.n_ctx} tokens)"
            )
        messages = _messages(request.messages)
        chars = sum(
            len(msg.content) + sum(len(c.arguments) for c in msg.tool_calls) for msg in request.messages
        )
        self.prompts.check_chars(chars, m.spec.n_ctx, m.name, "messages")
        self._format(request.params)
        tools = self._tools(request)
        tok = await self.models.tokenizer(m)
        template = m.chat_template()
        if not template:
            raise FailedPrecondition(f"model {m.name} has no chat template: add it with one (chat_template)")
        cited: list[grounding.Passage] = []
        if request.context:
            messages, cited = await self._ground(app, m, tok, messages, request)
        made: list[Prompt] = []

        async def prompt() -> Prompt:  # continuing a remembered answer's tokens (aicap.answers)
            made.append(
                await self.prompts.chat(tok, template, messages, app, tools, None, self.answers.get(tok, app))
            )
            return made[-1]

        citations = [pb.Citation(uri=p.uri, row_id=p.row_id, score=p.score, key=p.key) for p in cited]
        samples: dict[int, tuple[list[int], list[str]]] = {}  # index → its tokens and texts so far
        async for chunk in self._generate(app, context, m, prompt, request):
            out, text = samples.setdefault(chunk.index, ([], []))
            out.extend(chunk.token_ids)
            text.append(chunk.text)
            if chunk.finish_reason:
                if (
                    made
                    and made[-1].tool_format is None
                    and chunk.finish_reason != pb.FINISH_REASON_TOOL_CALLS
                ):
                    await self._remember(tok, app, made[-1], out, "".join(text))
                if citations:
                    chunk.citations.extend(citations)
            yield chunk

    async def _remember(self, tok: Tokenizer, app: str, prompt: Prompt, out: list[int], answer: str) -> None:
        """A finished chat's prompt and answer, as its next turn may resend them (aicap.answers): before
        its last chunk goes out, so a client that reads that chunk may send the next turn at once. Not
        when the answer's text is not its tokens' (cut at a stop string)."""
        spoken, written = await self.prompts.run(_texts, tok, out)
        if spoken == answer and prompt.text:
            self.answers.add(tok, app, prompt.tokens + out, prompt.text + written)

    async def _ground(
        self, app: str, m: Model, tok: Tokenizer, messages: list[dict[str, Any]], request: pb.ChatRequest
    ) -> tuple[list[dict[str, Any]], list[grounding.Passage]]:
        """The messages with the passages retrieved as `app` from the request's context sources put
        before the question, as many as fit the context beside the rest of the prompt and the answer
        (aicap.grounding), and those passages."""
        cfg = self.config
        found = grounding.sources(request.context, cfg.max_context_sources, cfg.max_context_k)
        if self.retriever is None:
            raise FailedPrecondition("grounded answers need the daemon's data services; they are not here")
        question = messages[grounding.last_user(messages)]["content"]
        passages = await grounding.retrieve(self.retriever, app, found, question)
        max_tokens = request.params.max_tokens if request.params.HasField("max_tokens") else 0
        answer = min(max_tokens or cfg.sampling.max_tokens, cfg.max_tokens_limit)
        rest = sum(len(str(msg.get("content") or "")) for msg in messages) // 2 + 8 * len(messages)
        budget = min(cfg.max_context_tokens, m.spec.n_ctx - answer - rest)

        def count(text: str) -> int:
            return len(tok.tokenize(text, False))

        chosen = await self.prompts.run(grounding.pack, passages, budget, count, cfg.max_passage_chars)
        return grounding.grounded(messages, chosen), chosen

    def _format(self, params: pb.SamplingParams) -> Format | None:
        """The request's structured output, if any; InvalidArgument for a contradiction or a size
        above ai.max_grammar_chars (by length only: it is compiled on the pool)."""
        kind, limit = params.response_format.type, self.config.max_grammar_chars
        json_kinds = (pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT, pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA)
        if params.grammar:
            if kind in json_kinds:
                raise InvalidArgument("a grammar and a JSON response_format exclude each other")
            fmt = Format("grammar", params.grammar)
        elif kind == pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
            fmt = Format("json_object")
        elif kind == pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
            if not params.response_format.json_schema.schema:
                raise InvalidArgument("response_format json_schema needs json_schema.schema (JSON text)")
            fmt = Format("json_schema", params.response_format.json_schema.schema)
        elif kind in (pb.RESPONSE_FORMAT_TYPE_UNSPECIFIED, pb.RESPONSE_FORMAT_TYPE_TEXT):
            return None
        else:
            raise InvalidArgument(f"unknown response_format type {kind}")
        check_size(len(fmt.text), limit, fmt.what)
        return fmt

    def _tools(self, request: pb.ChatRequest) -> Tools | None:
        """The chat's tools and tool_choice, checked (names, choice, size: ai.max_grammar_chars)."""
        choice = request.tool_choice
        if not request.tools and choice.mode in (pb.TOOL_CHOICE_MODE_UNSPECIFIED, pb.TOOL_CHOICE_MODE_NONE):
            return None
        if choice.mode not in _CHOICES:
            raise InvalidArgument(f"unknown tool_choice mode {choice.mode}")
        rf = request.params.response_format
        response = ""
        if rf.type == pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
            response = rf.json_schema.schema
        elif rf.type == pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
            response = '{"type": "object"}'
        tools = Tools(
            tuple(Tool(t.name, t.description, t.parameters) for t in request.tools),
            _CHOICES[choice.mode],  # type: ignore[arg-type]
            choice.function,
            request.parallel_tool_calls,
            response,
        )
        tools.check()
        check_size(tools.chars() + len(response), self.config.max_grammar_chars, "tools' text")
        if tools.active and request.params.grammar:
            raise InvalidArgument("a grammar and tools exclude each other (unless tool_choice is none)")
        return tools

    def _request(self, params: pb.SamplingParams, prompt_tokens: int, m: Model) -> Request:
        fields = {f.name: list(v) if f.name == "stop" else v for f, v in params.ListFields()}
        return sampling(fields, self.config, prompt_tokens, m.spec.n_ctx, m.name)

    async def _generate(
        self,
        app: str,
        context: grpc.aio.ServicerContext,
        m: Model,
        make_prompt: Callable[[], Awaitable[Prompt]],
        request: pb.CompleteRequest | pb.ChatRequest,
    ) -> AsyncIterator[pb.CompletionChunk]:
        self.quota.check(app)  # the daily token quota (aicap.usage)
        where = self._placement(request)
        if where is None:
            await self.models.engine(m)  # loading: requests wait for the model, not for a slot
        with self._tracked(app, context) as call:
            async with self.limiter.slot(app):
                self._check(context)  # it may have been revoked while it waited
                prompt = await make_prompt()
                self.quota.add(app, len(prompt.tokens))
                params, fmt = request.params, self._format(request.params)
                if prompt.tool_format is not None:  # the tools' JSON, sent to paired devices as a schema
                    params, fmt = _with_schema(params, prompt.tool_format.text), prompt.tool_format
                tok = await self.models.tokenizer(m)
                grammar = await self.prompts.grammar(tok, fmt) if fmt is not None else None
                req = self._request(params, len(prompt.tokens), m)
                if where is not None and req.params.seed is None:  # a move goes on with the same draws
                    req = dataclasses.replace(
                        req, params=dataclasses.replace(req.params, seed=random.getrandbits(63))
                    )

                async def start(done: list[int], lost: set[str], state: KvState | None) -> _Source:
                    return await self._start(m, app, prompt, req, params, where, done, lost, state, grammar)

                run = call.run = _Run(start, req.params.n, self.config.max_migrations, auto=where == "auto")
                try:
                    await run.begin()
                    async for chunk in self._samples(
                        run,
                        m,
                        len(prompt.tokens),
                        req,
                        lambda: self._check(context),
                        prompt.tool_format is not None,
                    ):
                        self.quota.add(app, len(chunk.token_ids))
                        yield chunk
                finally:
                    await run.aclose()

    def _placement(self, request: pb.CompleteRequest | pb.ChatRequest) -> str | None:
        """Where the request may run: None here only, "auto", or a paired device's id."""
        offload = self.peers is not None and self.config.offload
        if request.device:
            if request.placement == pb.PLACEMENT_LOCAL:
                raise InvalidArgument("a request that names a device cannot also ask for LOCAL placement")
            if self.peers is not None and request.device == self.peers.device_id:
                return None
            if not offload:
                raise FailedPrecondition(
                    "this device does not offload generations to paired devices (ai.offload is off)"
                )
            return request.device
        if request.placement == pb.PLACEMENT_LOCAL or not offload:
            return None  # AUTO or SPLIT on a device whose owner keeps prompts home run here
        return "split" if request.placement == pb.PLACEMENT_SPLIT else "auto"

    async def _start(
        self,
        m: Model,
        app: str,
        prompt: Prompt,
        req: Request,
        params: pb.SamplingParams,
        where: str | None,
        done: list[int],
        lost: set[str],
        state: KvState | None = None,
        grammar: str | None = None,
    ) -> _Source:
        """The generation started where `where` says ("auto": the earliest expected first token among
        this device and the eligible peers not `lost`); `done`, tokens already streamed, are replayed
        after the prompt, with max_tokens less as many and the sampler's draws skipped (and read by
        the matcher of `grammar`, the compiled structured output). `state`, the KV of the first of
        those tokens a draining device handed back, makes it go on here from there."""
        tokens = prompt.tokens + done
        may_leave = where is not None  # the prompt may leave: its KV too, when preempted (remote swap)
        if state is not None and not await self._importable(m, state, tokens):
            state = None
        if where == "split" and self.peers is not None and not done:
            return await self._split(m, app, prompt, req, grammar)
        if where is not None and self.peers is not None and state is None:
            digest = await self.models.digest(m)
            if where == "auto" or where in lost:
                peers = await self.peers.loads(digest, exclude=frozenset(lost))
                local = self.load(m) if not m.removed else None
                where = choose(local, peers, len(tokens), self.config.engine.max_batch_tokens).device or None
            else:
                await self.peers.loads(digest, where)  # raises why the device cannot, if it cannot
            if where is not None:
                sent = pb.SamplingParams()
                sent.CopyFrom(params)
                sent.max_tokens = req.params.max_tokens - len(done)
                if req.params.seed is not None:
                    sent.seed = req.params.seed
                events = self.peers.generate(where, app, digest, tokens, sent, len(done), len(done))
                return _PeerSource(where, events)
        engine = await self.models.engine(m)
        sp = dataclasses.replace(
            req.params, max_tokens=req.params.max_tokens - len(done), skip_draws=len(done)
        )
        matcher = None
        if grammar is not None:
            matcher = await self.prompts.matcher(await self.models.tokenizer(m), grammar, done)
        feed = m.open(
            engine.generate(
                tokens, sp, app, prompt.shared, imported=state, may_leave=may_leave, matcher=matcher
            )
        )
        computed = len(state.tokens) if state is not None else 0
        return _LocalSource(self.device_id, feed, m, self._prefilling, len(tokens) - computed)

    async def _importable(self, m: Model, state: KvState, tokens: list[int]) -> bool:
        """Whether a handed-back KV state can go on here: this device's model file and cache type,
        and its tokens a proper prefix of the generation's (else it is replayed instead)."""
        try:
            if m.removed:
                raise FailedPrecondition(f"model {m.name} was removed here")
            state.check(await self.models.digest(m), self.config.runner.cache_type)
        except FailedPrecondition as exc:
            log.info("a handed-back KV state cannot go on here (%s): replaying", exc)
            return False
        k = len(state.tokens)
        if k >= len(tokens) or tuple(tokens[:k]) != state.tokens:
            log.warning("a handed-back KV state's %d tokens do not begin the generation's: replaying", k)
            return False
        return True

    async def _split(self, m: Model, app: str, prompt: Prompt, req: Request, grammar: str | None) -> _Source:
        """Prefill on the paired device expected to prefill soonest, decode here from the KV state it
        sends back (Splitwise); all here when no device is sooner or the prefill there fails."""
        assert self.peers is not None
        digest = await self.models.digest(m)
        tokens = prompt.tokens
        engine = await self.models.engine(m)
        cache_type = self.config.runner.cache_type
        peers = [p for p in await self.peers.loads(digest) if p.cache_type == cache_type]
        state = None
        best = choose(self.load(m), peers, len(tokens), self.config.engine.max_batch_tokens)
        if best.device != LOCAL and len(tokens) > 1:
            try:
                state = await self.peers.prefill(best.device, app, digest, tokens)
                state.check(digest, cache_type)
            except AicapError as exc:
                log.info("prefill on %s failed (%s): prefilling here", best.device, exc)
                state = None
        matcher = None
        if grammar is not None:
            matcher = await self.prompts.matcher(await self.models.tokenizer(m), grammar, [])
        feed = m.open(
            engine.generate(
                tokens, req.params, app, prompt.shared, imported=state, may_leave=True, matcher=matcher
            )
        )
        return _LocalSource(
            self.device_id,
            feed,
            m,
            self._prefilling,
            len(tokens) - len(state.tokens) if state else len(tokens),
        )

    async def prefill_for_peer(self, device: str, app: str, digest: str, tokens: list[int]) -> KvState:
        """The KV state of a paired device's prompt but its last token (Splitwise's prefill)."""
        if self.draining:
            raise Unavailable("this device is draining: it runs no prefills for paired devices now")
        m = await self.models.by_digest(digest)
        await self._check_tokens(m, tokens)
        engine = await self.models.engine(m)
        self._prefilling[m.name] = self._prefilling.get(m.name, 0) + len(tokens)
        try:
            return await engine.prefill(tokens, f"{device}/{app}")
        finally:
            self._prefilling[m.name] -= len(tokens)

    async def _check_tokens(self, m: Model, tokens: list[int]) -> None:
        tok = await self.models.tokenizer(m)
        if not tokens:
            raise InvalidArgument("the prompt is empty")
        if len(tokens) >= m.spec.n_ctx:
            raise InvalidArgument(
                f"{len(tokens)} prompt tokens do not fit the context of {m.name} ({m.spec.n_ctx})"
            )
        for t in tokens:
            if not tok.valid(t):
                raise InvalidArgument(f"token {t} is not in the vocabulary of {m.name}")

    async def _samples(
        self,
        run: _Run,
        m: Model,
        prompt_tokens: int,
        req: Request,
        check: Callable[[], None],
        tool_mode: bool = False,
    ) -> AsyncIterator[pb.CompletionChunk]:
        """The run's tokens as chunks, made UTF-8-safe and cut at stop strings. In `tool_mode` (the
        model answers in the tools' JSON) the text is held back until a sample ends: its last chunk
        then has the text answer, or the tool calls (finish_reason "tool_calls"), or, if the output
        is not that JSON (cut by max_tokens or a stop string), the output as it is."""
        tok = m.tokenizer
        assert tok is not None
        n = req.params.n
        texts = [SampleText(req.stops) for _ in range(n)]
        held = [""] * n  # tool_mode: each sample's text so far
        counts = [0] * n
        done: set[int] = set()
        while len(done) < n:
            ev = await run.next()
            if ev is None:
                break
            i = ev.index
            if i in done:
                continue
            check()  # no chunk once its app lost USE_AI or was removed
            counts[i] += 1
            sample = texts[i]
            chunk = pb.CompletionChunk(index=i, text=sample.feed(tok.piece(ev.token)), token_ids=[ev.token])
            if req.params.logprobs and ev.logprob is not None:
                chunk.logprobs.append(ev.logprob)
            if ev.finished and not sample.stopped:
                chunk.text += sample.finish()
            if tool_mode:
                held[i], chunk.text = held[i] + chunk.text, ""
            if sample.stopped or ev.finished:
                if sample.stopped:
                    run.stop(i)
                reason = "stop" if sample.stopped else ev.finish_reason or "length"
                if tool_mode:
                    answer = parse_answer(held[i]) if reason == "stop" and not sample.stopped else None
                    chunk.text = held[i] if answer is None else answer[0]
                    if answer is not None and answer[1]:
                        reason = "tool_calls"
                        chunk.tool_calls.extend(
                            pb.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in answer[1]
                        )
                chunk.finish_reason = _FINISH[reason]
                chunk.usage.CopyFrom(
                    pb.Usage(
                        prompt_tokens=prompt_tokens,
                        completion_tokens=counts[i],
                        cached_tokens=ev.cached_tokens,
                        device=run.device,
                        migrations=run.migrations,
                    )
                )
                done.add(i)
            yield chunk

    # ---- for paired devices ----

    @property
    def device_id(self) -> str:
        return self.peers.device_id if self.peers is not None else ""

    def load(self, m: Model) -> Load:
        """This device's load and speed for `m` (its engine's figures; the speeds measured from its
        recent steps, probed again when stale and idle)."""
        stats = m.engine.stats() if m.engine is not None else EngineStats()
        speed = m.engine.speed() if m.engine is not None else Speed()
        if m.engine is not None:
            self._refresh_speed(m, m.engine, stats)
        return Load(
            device=LOCAL,
            name=m.name,
            waiting=stats.requests_waiting,
            running=stats.requests_running,
            max_running=self.config.engine.max_running,
            tokens_waiting=self._prefilling.get(m.name, 0),
            prefill_tokens_per_s=speed.prefill_tokens_per_s,
            decode_step_s=speed.decode_step_s,
            cache_type=self.config.runner.cache_type,
        )

    async def serve_peer(
        self,
        device: str,
        app: str,
        digest: str,
        tokens: list[int],
        params: pb.SamplingParams,
        skip_draws: int = 0,
        replayed: int = 0,
    ) -> AsyncIterator[TokenEvent]:
        """A paired device's generation (its app's permission checked there): the model with the file
        `digest`, the prompt's token ids, and each event as it comes. The caller applies per-device
        limits; stop strings end a sample here too, where the origin finds them in the same tokens.
        `replayed`: how many of the last tokens are output already streamed (read by the matcher of
        the structured output the params carry).
        A drain ends it with one more event (token -1, finish_reason "moved") whose `state` is its KV
        state, to be handed back to the device."""
        if self.draining:
            raise Unavailable("this device is draining: it runs no generations for paired devices now")
        m = await self.models.by_digest(digest)
        await self._check_tokens(m, tokens)
        tok = m.tokenizer
        assert tok is not None
        req = self._request(params, len(tokens), m)
        sp = dataclasses.replace(req.params, skip_draws=min(skip_draws, req.params.max_tokens + len(tokens)))
        matcher = None
        fmt = self._format(params)
        if fmt is not None:
            if not 0 <= replayed < len(tokens):
                raise InvalidArgument(f"{replayed} replayed tokens of {len(tokens)}: the prompt is lost")
            grammar = await self.prompts.grammar(tok, fmt)
            matcher = await self.prompts.matcher(tok, grammar, tokens[len(tokens) - replayed :])
        engine = await self.models.engine(m)
        source = _LocalSource(
            self.device_id,
            m.open(engine.generate(tokens, sp, f"{device}/{app}", matcher=matcher)),
            m,
            self._prefilling,
            len(tokens),
        )
        texts = [SampleText(req.stops) for _ in range(req.params.n)]
        ended: set[int] = set()
        self._served.add(source)
        try:
            while len(ended) < req.params.n:
                ev = await source.next()
                if ev is None:
                    state = await source.handed()
                    if state is not None:
                        yield TokenEvent(0, -1, True, finish_reason="moved", state=state)
                    return
                if ev.index in ended:
                    continue
                sample = texts[ev.index]
                sample.feed(tok.piece(ev.token))
                if sample.stopped and not ev.finished:
                    source.stop(ev.index)
                    ev = dataclasses.replace(ev, finished=True, finish_reason="stop")
                if ev.finished:
                    ended.add(ev.index)
                yield ev
        finally:
            self._served.discard(source)
            await source.aclose()

    async def _calibrate(self, m: Model) -> None:
        """Runs a short probe of `m` (a 64-token prompt, 16 tokens) like any request, so that the
        engine's speed meter (aicap/engine/speed.py) has figures: at load, and again when a paired
        device asks while the model is idle and the figures are older than `speed_max_age_s` (a device
        measured under contention, or never chosen since, would otherwise keep its old figures). One
        prompt per probe, numbered so that a cached prefix does not answer for the prefill; its
        blocks are cached like any other and evicted as the least recently used."""
        self._probes += 1
        engine = await self.models.engine(m)
        engine.restart_speed()
        tok = await self.models.tokenizer(m)
        text = f"{self._probes}. " + "The quick brown fox jumps over the lazy dog. " * 8
        tokens = (await self.prompts.run(tok.tokenize, text, True))[:64]
        gen = engine.generate(tokens, SamplingParams(max_tokens=16, ignore_eos=True), "", probe=True)
        try:
            while await gen.next() is not None:
                pass
        finally:
            await gen.aclose()
        speed = engine.speed()
        log.info(
            "model %s: prefill %.0f tokens/s, decode step %.1f ms here",
            m.name,
            speed.prefill_tokens_per_s,
            speed.decode_step_s * 1000,
        )

    def _refresh_speed(self, m: Model, engine: AsyncEngine, stats: EngineStats) -> None:
        """Probes `m` again in the background if it is idle and its speed figures are stale."""
        age = time.monotonic() - engine.speed().measured_at
        idle = not (stats.requests_running or stats.requests_waiting)
        if not self._measure_speed or not idle or age < self.config.speed_max_age_s:
            return
        if self._probing is not None and not self._probing.done():
            return
        self._probing = asyncio.create_task(self._calibrate(m))

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

    # ---- sessions and pinned contexts (aicap.conversations) ----

    async def CreateSession(self, request: pb.CreateSessionRequest, context: Any) -> pb.Session:
        return await self.conversations.create_session(self._app(context), request)

    async def GetSession(self, request: pb.GetSessionRequest, context: Any) -> pb.Session:
        return self.conversations.get_session(self._app(context), request)

    async def CloseSession(self, request: pb.CloseSessionRequest, context: Any) -> pb.CloseSessionResponse:
        self.conversations.close_session(self._app(context), request)
        return pb.CloseSessionResponse()

    async def PinContext(self, request: pb.PinContextRequest, context: Any) -> pb.PinnedContext:
        return await self.conversations.pin(self._app(context), request)

    async def UnpinContext(self, request: pb.UnpinContextRequest, context: Any) -> pb.UnpinContextResponse:
        self.conversations.unpin(self._app(context), request)
        return pb.UnpinContextResponse()

    # ---- embeddings (aicap.embedding) ----

    async def Embed(self, request: pb.EmbedRequest, context: Any) -> pb.EmbedResponse:
        app = self._app(context)
        self.quota.check(app)  # the daily token quota (aicap.usage) counts the tokens embedded too
        out = await self.embeddings.embed(app, request.model, request.texts, lambda: self._check(context))
        self.quota.add(app, out.prompt_tokens)
        resp = pb.EmbedResponse(model=out.model, prompt_tokens=out.prompt_tokens)
        for row in out.vectors.tolist():
            resp.embeddings.add().values.extend(row)
        return resp

    async def text_embedder(self, model: str = "") -> TextEmbedder:
        """The embedding model for the daemon's own use (the DataShare indexer), as background work
        that apps' Embed calls go before (aicap.embedding)."""
        return await self.embeddings.text_embedder(model)

    # ---- statistics ----

    def _loaded_engines(self) -> list[tuple[str, Any]]:
        return [(m.name, m.engine) for m in self.models.all() if m.engine is not None]

    def _loaded_embedders(self) -> list[tuple[str, Any]]:
        return [(m.name, m.embedder) for m in self.models.all() if m.embedder is not None]

    async def GetStats(self, request: pb.GetStatsRequest, context: Any) -> pb.GetStatsResponse:
        app = self._app(context, admin_ok=True)  # an app's view of the engine is for apps that use it
        models = [self.models.get(request.model)] if request.model else self.models.all()
        out = pb.GetStatsResponse(prometheus=prometheus_text(self.metrics))
        out.apps.extend(self.conversations.usage(app))  # the owner sees every app's, an app its own
        for m in models:
            s = m.engine.stats() if m.engine is not None else EngineStats()
            msg = out.engines.add(model=m.name)
            for name in EngineStats.__dataclass_fields__:
                setattr(msg, name, getattr(s, name))
            if m.engine is not None:
                msg.time_to_first_token.CopyFrom(_histogram(m.engine.ttft))
                msg.inter_token_latency.CopyFrom(_histogram(m.engine.itl))
        return out


def _messages(messages: Any) -> list[dict[str, Any]]:
    """Chat messages as the prompt renders them (aicap.tools.template_inputs); InvalidArgument for an
    unknown role or tool calls on other than an assistant message."""
    out = []
    for i, msg in enumerate(messages):
        if msg.role not in ROLES:
            raise InvalidArgument(f"message {i} has role {msg.role!r}: use one of {', '.join(ROLES)}")
        d: dict[str, Any] = {"role": msg.role, "content": msg.content}
        if msg.tool_calls:
            if msg.role != "assistant":
                raise InvalidArgument(f"message {i} has tool calls but role {msg.role!r} (not assistant)")
            d["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in msg.tool_calls]
        if msg.role == "tool":
            d["tool_call_id"], d["name"] = msg.tool_call_id, msg.name
        out.append(d)
    return out


def _texts(tok: Tokenizer, out: list[int]) -> tuple[str, str]:
    """An answer's tokens as streamed text (no end-of-generation token) and as the template renders
    them (special tokens written out)."""
    return tok.detokenize([t for t in out if not tok.is_eog(t)]), tok.detokenize(out, True)


def _with_schema(params: pb.SamplingParams, schema: str) -> pb.SamplingParams:
    """`params` whose response format is the JSON schema `schema` (tool calls' answer)."""
    out = pb.SamplingParams()
    out.CopyFrom(params)
    out.ClearField("grammar")
    out.response_format.CopyFrom(
        pb.ResponseFormat(
            type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            json_schema=pb.JsonSchema(name="tool_calls", schema=schema),
        )
    )
    return out
