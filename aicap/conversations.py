"""The AiService's sessions and pinned contexts: their RPCs and their Chat turns (state in
aicap.sessions, the KV holds in the engine's block manager).

A session's turn renders instructions + transcript + the new messages with the model's chat template;
its tokens begin with the last turn's prompt and answer tokens exactly as the model computed them
when the template renders that answer back as the model wrote it (ChatML templates such as the
built-in model's do; a template that rewrites an assistant turn, e.g. trims it or drops its reasoning,
is tokenized afresh and hits the cache only as far as the tokens agree). When the turn ends, the
session's hold moves to the new prompt and answer, so its KV stays cached however much other traffic
runs until memory is short: then the oldest holds go first and their sessions are recomputed from the
transcript at their next turn. A transcript that no longer fits the context is FAILED_PRECONDITION
naming the context (Apple's exceededContextWindowSize): nothing is dropped silently. A turn runs on
this device (its KV is held here), with one sample, no tools and no context sources.

A pinned context is prefilled when pinned (one token generated and dropped), then held the same way;
a Chat naming it has it as its system message, its prompt beginning with the pinned tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from aicap.chat import render_chat
from aicap.engine.sampler import SamplingParams
from aicap.engine.tokenizer import Tokenizer
from aicap.errors import FailedPrecondition, InvalidArgument
from aicap.models import Model
from aicap.prompts import Prompt
from aicap.sessions import Pinned, PinnedContexts, Session, Sessions
from aicap.usage import iso
from aicap.v1 import aicap_pb2 as pb

if TYPE_CHECKING:
    from aicap.service import AiService

TURN_ROLES = ("user", "assistant")


def _turn(messages: Any) -> list[dict[str, Any]]:
    """A session turn's or a pinned chat's messages: user and assistant text only (the system message
    is the instructions or the pinned context)."""
    out = []
    for i, msg in enumerate(messages):
        if msg.role not in TURN_ROLES:
            raise InvalidArgument(
                f"message {i} has role {msg.role!r}: a session turn or a chat with a pinned context sends "
                "user and assistant messages only (the instructions or pinned context are its system message)"
            )
        if msg.tool_calls:
            raise InvalidArgument(f"message {i} has tool calls: not with a session or a pinned context")
        out.append({"role": msg.role, "content": msg.content})
    return out


def _session_message(s: Session) -> pb.Session:
    return pb.Session(
        id=s.id,
        model=s.model,
        instructions=s.instructions,
        transcript=[pb.ChatMessage(role=m["role"], content=m["content"]) for m in s.transcript],
        responding=s.responding,
    )


class Conversations:
    def __init__(self, service: AiService) -> None:
        cfg = service.config
        self._svc = service
        self.sessions = Sessions(cfg.max_sessions_per_app, cfg.session_idle_s)
        self.pinned = PinnedContexts(cfg.max_pinned_per_app, cfg.max_pinned_chars)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def close(self) -> None:
        for t in [self._sweeper, *self._tasks]:
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    # ---- sessions ----

    async def create_session(self, app: str, request: pb.CreateSessionRequest) -> pb.Session:
        m = self._svc.models.get(request.model)
        self._svc.prompts.check_chars(len(request.instructions), m.spec.n_ctx, m.name, "instructions")
        await self._template(m)
        self._sweep()
        s = self.sessions.create(app, m.name, request.instructions)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.ensure_future(self._sweep_every())
        return _session_message(s)

    def get_session(self, app: str, request: pb.GetSessionRequest) -> pb.Session:
        self._sweep()
        return _session_message(self.sessions.get(app, request.id))

    def close_session(self, app: str, request: pb.CloseSessionRequest) -> None:
        """Closes it now: a turn still running streams to its end, and is not kept."""
        self._release(self.sessions.close(app, request.id))

    # ---- pinned contexts ----

    async def pin(self, app: str, request: pb.PinContextRequest) -> pb.PinnedContext:
        svc = self._svc
        self.pinned.check(app, request.name, request.text)
        m = svc.models.get(request.model)
        tok, template = await self._template(m)
        rendered, tokens = await svc.prompts.run(_render_system, tok, template, request.text)
        capacity = m.spec.n_ctx // svc.config.engine.block_size * svc.config.engine.block_size
        if len(tokens) + 1 >= capacity:
            raise InvalidArgument(
                f"the pinned context takes {len(tokens)} tokens: it leaves no room in the context of model "
                f"{m.name} ({capacity} tokens)"
            )
        svc.quota.check(app)
        engine = await svc.models.engine(m)
        async with svc.limiter.slot(app):  # its prefill is the app's work like any request's
            gen = m.open(engine.generate(tokens, SamplingParams(max_tokens=1, temperature=0.0), app))
            try:
                while await gen.next() is not None:
                    pass
            except ValueError as exc:  # the engine refused it (cannot fit)
                raise InvalidArgument(str(exc)) from None
            finally:
                await m.close_generation(gen)
        svc.quota.add(app, len(tokens) + 1)
        p = Pinned(app, request.name, m.name, request.text, tokens, rendered)
        self.pinned.check(app, request.name, request.text)  # another pin may have taken the room meanwhile
        old = self.pinned.put(p)
        if old is not None and old.model != p.model:
            self._release(old)
        await engine.hold(p.key, tokens, app)
        return pb.PinnedContext(name=p.name, model=p.model, tokens=len(tokens))

    def unpin(self, app: str, request: pb.UnpinContextRequest) -> None:
        self._release(self.pinned.remove(app, request.name))

    # ---- chat turns ----

    async def chat(
        self, app: str, context: grpc.aio.ServicerContext, request: pb.ChatRequest
    ) -> AsyncIterator[pb.CompletionChunk]:
        """A Chat naming a session or a pinned context."""
        svc = self._svc
        if request.session and request.pinned_context:
            raise InvalidArgument("a chat names a session or a pinned context, not both")
        if request.tools or request.tool_choice.mode not in (
            pb.TOOL_CHOICE_MODE_UNSPECIFIED,
            pb.TOOL_CHOICE_MODE_NONE,
        ):
            raise InvalidArgument("tools are not supported with a session or a pinned context")
        if request.context:
            raise InvalidArgument("context sources are not supported with a session or a pinned context")
        if request.params.n > 1:
            raise InvalidArgument("a session or pinned-context chat has one sample (n 1)")
        if request.device:
            raise InvalidArgument(
                "a session or pinned-context chat runs on this device, whose KV cache it uses"
            )
        if not request.messages:
            raise InvalidArgument("no messages")
        turn = _turn(request.messages)
        if request.session:
            self._sweep()
            s = self.sessions.begin(app, request.session)
            mine = s.turn
            try:
                async for chunk in self._session_turn(app, context, request, s, turn):
                    yield chunk
            finally:
                self.sessions.end(s, mine)
            return
        p = self.pinned.get(app, request.pinned_context)
        m = svc.models.get(request.model or p.model)
        if m.name != p.model:
            raise InvalidArgument(f"pinned context {p.name} is of model {p.model}, not {m.name}")
        messages = [{"role": "system", "content": p.text}, *turn]
        async for chunk in self._turn(app, context, request, m, messages, (p.tokens, p.rendered), None):
            yield chunk
        self._spawn(self._rehold(m, p))

    async def _session_turn(
        self,
        app: str,
        context: grpc.aio.ServicerContext,
        request: pb.ChatRequest,
        s: Session,
        turn: list[dict[str, Any]],
    ) -> AsyncIterator[pb.CompletionChunk]:
        m = self._svc.models.get(s.model)
        if request.model and request.model != s.model:
            raise InvalidArgument(f"session {s.id} is of model {s.model}, not {request.model}")
        prefix = (s.kv_tokens, s.kv_text)
        async for chunk in self._turn(app, context, request, m, s.messages(turn), prefix, (s, turn)):
            yield chunk

    async def _turn(
        self,
        app: str,
        context: grpc.aio.ServicerContext,
        request: pb.ChatRequest,
        m: Model,
        messages: list[dict[str, Any]],
        prefix: tuple[list[int], str],
        session: tuple[Session, list[dict[str, Any]]] | None,
    ) -> AsyncIterator[pb.CompletionChunk]:
        """The turn's chunks. A session's turn joins its transcript just before its last chunk goes
        out (so a client that reads that chunk may send the next turn at once)."""
        svc = self._svc
        chars = sum(len(msg["content"]) for msg in messages)
        svc.prompts.check_chars(chars, m.spec.n_ctx, m.name, "messages (with the session's transcript)")
        tok, template = await self._template(m)
        made: list[Prompt] = []
        wanted = request.params.max_tokens if request.params.HasField("max_tokens") else 1
        bs = svc.config.engine.block_size
        capacity = m.spec.n_ctx // bs * bs

        async def make_prompt() -> Prompt:
            prompt = await svc.prompts.chat(tok, template, messages, app, None, prefix)
            if session is not None and len(prompt.tokens) + wanted > capacity:
                raise FailedPrecondition(
                    f"session {session[0].id} has exceeded the context window: its instructions, transcript "
                    f"and this turn take {len(prompt.tokens)} tokens (+ {wanted} to answer), more than the "
                    f"context of model {m.name} holds ({capacity} tokens); start a new session"
                )
            made.append(prompt)
            return prompt

        local = pb.ChatRequest()
        local.CopyFrom(request)
        local.placement = pb.PLACEMENT_LOCAL  # its KV is held here
        out: list[int] = []
        text: list[str] = []
        async for chunk in svc._generate(app, context, m, make_prompt, local):
            out.extend(chunk.token_ids)
            text.append(chunk.text)
            if chunk.finish_reason and session is not None and not session[0].closed:
                s, turn = session
                await self._commit(m, tok, s, turn, made[-1], out, "".join(text))
                self.sessions.end(s, s.turn)  # the next turn may begin once this chunk is out
            yield chunk

    async def _commit(
        self,
        m: Model,
        tok: Tokenizer,
        s: Session,
        turn: list[dict[str, Any]],
        prompt: Prompt,
        out: list[int],
        answer: str,
    ) -> None:
        """The turn and its answer join the transcript; the session's hold moves to the prompt and
        answer tokens (as the next prompt will begin with them when the template renders the answer
        as the model wrote it; else with the prompt's)."""
        spoken = await self._svc.prompts.run(tok.detokenize, [t for t in out if not tok.is_eog(t)])
        if spoken == answer:
            tokens = prompt.tokens + out
            text = prompt.text + await self._svc.prompts.run(tok.detokenize, out, True)
        else:  # cut at a stop string: the transcript has less than the tokens say
            tokens, text = prompt.tokens, prompt.text
        s.commit(turn, answer, tokens, text)
        self._spawn(self._hold(m, s.key, tokens, s.app))

    # ---- holds ----

    async def _hold(self, m: Model, key: object, tokens: list[int], app: str) -> None:
        if m.engine is not None:
            await m.engine.hold(key, tokens, app)

    async def _rehold(self, m: Model, p: Pinned) -> None:
        """A chat used the pinned context: held again (newest; if pressure had dropped it, its blocks
        were computed again by this chat)."""
        if self.pinned.get_or_none(p.app, p.name) is p:
            await self._hold(m, p.key, p.tokens, p.app)

    def _release(self, item: Session | Pinned) -> None:
        with contextlib.suppress(Exception):  # its model is gone: so are its holds
            m = self._svc.models.get(item.model)
            if m.engine is not None:
                m.engine.release(item.key)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- upkeep ----

    def _sweep(self) -> None:
        for s in self.sessions.expired():
            self._release(s)

    async def _sweep_every(self) -> None:
        while self.sessions.apps():
            await asyncio.sleep(min(60.0, max(0.5, self.sessions.idle_s / 4)))
            self._sweep()

    async def _template(self, m: Model) -> tuple[Tokenizer, str]:
        tok = await self._svc.models.tokenizer(m)
        template = m.chat_template()
        if not template:
            raise FailedPrecondition(f"model {m.name} has no chat template: add it with one (chat_template)")
        return tok, template

    # ---- statistics ----

    def usage(self, app: str) -> list[pb.AppUsage]:
        """Each app's use today (`app` "": every app's, for the device owner; else that app's only)."""
        quota = self._svc.quota
        apps = [app] if app else sorted({*quota.apps(), *self.sessions.apps(), *self.pinned.apps()})
        resets = iso(quota.resets_at)
        return [
            pb.AppUsage(
                app=a,
                tokens_today=quota.used(a),
                tokens_per_day=quota.limit,
                resets_at=resets,
                sessions=self.sessions.count(a),
                pinned_contexts=self.pinned.count(a),
            )
            for a in apps
        ]


def _render_system(tok: Tokenizer, template: str, text: str) -> tuple[str, list[int]]:
    """A system message alone as the template renders it, and its tokens (on the tokenizing pool)."""
    with tok.using():
        try:
            rendered = render_chat(
                template,
                [{"role": "system", "content": text}],
                tok.token_text(tok.bos),
                tok.token_text(tok.eos),
                False,
            )
        except InvalidArgument as exc:
            raise FailedPrecondition(
                f"the model's chat template cannot render a system message alone: {exc}"
            ) from None
        return rendered, tok.tokenize(rendered, add_special=False, parse_special=True)
