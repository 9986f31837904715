"""The Python SDK of aicap, the daemon's on-device LLM: `AiClient` (blocking) and `AsyncAiClient` (asyncio).

with AiClient.connect(token=...) as ai:                  # address: DATAMGR_ADDRESS or the daemon's socket
    print(ai.complete("The capital of France is", max_tokens=8, temperature=0).text)
    for chunk in ai.stream_chat([("user", "Hi!")], max_tokens=32):
        print(chunk.text, end="", flush=True)            # leaving the loop early cancels the call
    person = ai.chat([("user", "Invent a person")], response_format={"type": "json_schema",
                     "json_schema": {"name": "person", "schema": {...}}}).json()
    answer = ai.chat(messages, tools=[{"type": "function", "function": {...}}], tool_choice="auto")
    answer.tool_calls                                     # [ToolCall(id, name, arguments)] or []

Errors raise aicap's classes (`aicap.errors`: InvalidArgument, PermissionDenied, NotFound,
ResourceExhausted, DeadlineExceeded, ...), each also datamgr's class of its status (the rule every SDK
follows, in `datamgr.errors`), so `except datamgr.errors.NotFound` catches a missing model as it catches
a missing table. The connection (address, token, TLS pinned to `tls_fingerprint` for a TCP listener,
message limits) is every SDK's, `datamgr.connection`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Unpack

import grpc

from aicap._conversation import (
    AsyncSession,
    PinnedContext,
    Session,
    pinned_from_proto,
    session_fields,
)
from aicap._messages import (
    Completion,
    CompletionChunk,
    Context,
    Messages,
    Model,
    Sampling,
    Stats,
    assemble,
    chat_request,
    chunk_from_proto,
    complete_request,
    embed_request,
    model_from_proto,
    stats_from_proto,
    vectors_from_proto,
)
from aicap.errors import BY_CODE, AicapError
from aicap.v1 import aicap_pb2 as pb
from aicap.v1 import aicap_pb2_grpc as pb_grpc
from datamgr.connection import ErrorClasses, metadata, open_aio_channel, open_channel, resolve_token

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

ERRORS = ErrorClasses(AicapError, BY_CODE)  # what the SDK raises, by status (the rule in datamgr.errors)
error_from_rpc = ERRORS.from_rpc
_call = ERRORS.call
_acall = ERRORS.acall


# ---- streams ----


class CompletionStream:
    """The chunks of a streamed completion. Leaving the `for` loop early (or `close()`, or the `with`
    block) cancels the call, and the daemon frees the request's KV."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __iter__(self) -> Iterator[CompletionChunk]:
        try:
            for msg in self._call:
                yield chunk_from_proto(msg)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED or not self._call.cancelled():
                raise error_from_rpc(exc) from None
        finally:
            self._call.cancel()  # a no-op once the call finished

    def completion(self) -> Completion:
        """Reads the rest of the stream and joins it into samples."""
        return assemble(self)

    def close(self) -> None:
        self._call.cancel()

    def __enter__(self) -> CompletionStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncCompletionStream:
    """`async for` the chunks of a streamed completion; `close()` (or `async with`) cancels the call.
    Leaving the loop early without either cancels it soon after, when the event loop finalizes the loop's
    iterator; `async with` cancels it at once."""

    def __init__(self, call: Any) -> None:
        self._call = call

    async def __aiter__(self) -> AsyncIterator[CompletionChunk]:
        try:
            while True:
                msg = await self._call.read()
                if msg is grpc.aio.EOF:
                    return
                yield chunk_from_proto(msg)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED or not self._call.cancelled():
                raise error_from_rpc(exc) from None
        finally:
            self._call.cancel()

    async def completion(self) -> Completion:
        return assemble([chunk async for chunk in self])

    def close(self) -> None:
        self._call.cancel()

    async def __aenter__(self) -> AsyncCompletionStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


# ---- clients ----


class AiClient:
    """Blocking aicap client. Create with `AiClient.connect(address, token)`; AddModel and RemoveModel
    need a client made with the admin token. `timeout=` (seconds) sets a call's deadline."""

    def __init__(self, channel: grpc.Channel, token: str) -> None:
        self._channel = channel
        self._stub = pb_grpc.AiServiceStub(channel)
        self._md = metadata(token)

    @classmethod
    def connect(
        cls, address: str | None = None, token: str | None = None, tls_fingerprint: str | None = None
    ) -> AiClient:
        """`tls_fingerprint` (or DATAMGR_TLS_FINGERPRINT): the certificate a TCP listener must present."""
        token = resolve_token(token, ERRORS)
        return cls(open_channel(address, tls_fingerprint, ERRORS), token)

    def models(self, timeout: float | None = None) -> list[Model]:
        resp = _call(self._stub.ListModels, pb.ListModelsRequest(), metadata=self._md, timeout=timeout)
        return [model_from_proto(m) for m in resp.models]

    def stream_complete(
        self,
        prompt: str,
        model: str | None = None,
        *,
        timeout: float | None = None,
        placement: str | None = None,
        **sampling: Unpack[Sampling],
    ) -> CompletionStream:
        req = complete_request(prompt, model, sampling, placement)
        return CompletionStream(self._stub.Complete(req, metadata=self._md, timeout=timeout))

    def complete(
        self,
        prompt: str,
        model: str | None = None,
        *,
        timeout: float | None = None,
        placement: str | None = None,
        **sampling: Unpack[Sampling],
    ) -> Completion:
        with self.stream_complete(prompt, model, timeout=timeout, placement=placement, **sampling) as stream:
            return stream.completion()

    def stream_chat(
        self,
        messages: Messages,
        model: str | None = None,
        *,
        timeout: float | None = None,
        placement: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool = False,
        context: Sequence[Context] = (),
        session: str | Session | AsyncSession | None = None,
        pinned_context: str | None = None,
        **sampling: Unpack[Sampling],
    ) -> CompletionStream:
        req = chat_request(
            messages, model, sampling, placement, tools, tool_choice, parallel_tool_calls, context
        )
        req.MergeFrom(pb.ChatRequest(**session_fields(session, pinned_context)))
        return CompletionStream(self._stub.Chat(req, metadata=self._md, timeout=timeout))

    def chat(
        self,
        messages: Messages,
        model: str | None = None,
        *,
        timeout: float | None = None,
        placement: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool = False,
        context: Sequence[Context] = (),
        session: str | Session | AsyncSession | None = None,
        pinned_context: str | None = None,
        **sampling: Unpack[Sampling],
    ) -> Completion:
        with self.stream_chat(
            messages,
            model,
            timeout=timeout,
            placement=placement,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            context=context,
            session=session,
            pinned_context=pinned_context,
            **sampling,
        ) as stream:
            return stream.completion()

    # ---- sessions and pinned contexts (aicap._conversation) ----

    def create_session(
        self, instructions: str = "", model: str | None = None, timeout: float | None = None
    ) -> Session:
        """A conversation the daemon keeps: `instructions` are the system message of every turn."""
        req = pb.CreateSessionRequest(model=model or "", instructions=instructions)
        return Session(self, _call(self._stub.CreateSession, req, metadata=self._md, timeout=timeout))

    def session(self, session_id: str, timeout: float | None = None) -> Session:
        """A session this app created earlier, by id (NotFound once closed, expired or restarted)."""
        return Session(self, self._get_session(session_id, timeout))

    def pin_context(
        self, name: str, text: str, model: str | None = None, timeout: float | None = None
    ) -> PinnedContext:
        """Keeps `text` cached as this app's system message `name` (pinning a name again replaces it)."""
        req = pb.PinContextRequest(name=name, text=text, model=model or "")
        return pinned_from_proto(_call(self._stub.PinContext, req, metadata=self._md, timeout=timeout))

    def unpin_context(self, name: str, timeout: float | None = None) -> None:
        req = pb.UnpinContextRequest(name=name)
        _call(self._stub.UnpinContext, req, metadata=self._md, timeout=timeout)

    def _get_session(self, session_id: str, timeout: float | None = None) -> pb.Session:
        req = pb.GetSessionRequest(id=session_id)
        return _call(self._stub.GetSession, req, metadata=self._md, timeout=timeout)

    def _close_session(self, session_id: str, timeout: float | None = None) -> None:
        req = pb.CloseSessionRequest(id=session_id)
        _call(self._stub.CloseSession, req, metadata=self._md, timeout=timeout)

    def embed(
        self, texts: str | Sequence[str], model: str = "", timeout: float | None = None
    ) -> npt.NDArray[np.float32]:
        """Unit vectors (numpy float32) of `texts` from an embedding model (model "": the daemon's
        default, all-minilm-l6-v2): shape (len(texts), dim), or (dim,) for one string, as OpenHarmony's
        getEmbedding; cosine similarity is their dot product. `aicap.split_text` cuts long texts."""
        req, single = embed_request(texts, model)
        return vectors_from_proto(_call(self._stub.Embed, req, metadata=self._md, timeout=timeout), single)

    def tokenize(
        self, text: str, add_special: bool = True, model: str | None = None, timeout: float | None = None
    ) -> list[int]:
        req = pb.TokenizeRequest(model=model or "", text=text, add_special=add_special)
        return list(_call(self._stub.Tokenize, req, metadata=self._md, timeout=timeout).tokens)

    def detokenize(
        self, tokens: Sequence[int], model: str | None = None, timeout: float | None = None
    ) -> str:
        req = pb.DetokenizeRequest(model=model or "", tokens=list(tokens))
        return str(_call(self._stub.Detokenize, req, metadata=self._md, timeout=timeout).text)

    def stats(self, model: str | None = None, timeout: float | None = None) -> Stats:
        req = pb.GetStatsRequest(model=model or "")
        return stats_from_proto(_call(self._stub.GetStats, req, metadata=self._md, timeout=timeout))

    def add_model(
        self, name: str, path: str, n_ctx: int = 0, chat_template: str = "", timeout: float | None = None
    ) -> Model:
        """Registers and loads a GGUF model (admin token)."""
        req = pb.AddModelRequest(name=name, path=str(path), n_ctx=n_ctx, chat_template=chat_template)
        return model_from_proto(_call(self._stub.AddModel, req, metadata=self._md, timeout=timeout).model)

    def remove_model(self, name: str, timeout: float | None = None) -> None:
        """Unloads and unregisters a model (admin token)."""
        _call(self._stub.RemoveModel, pb.RemoveModelRequest(name=name), metadata=self._md, timeout=timeout)

    def drain(self, resume: bool = False, timeout: float | None = None) -> int:
        """Hands paired devices' generations running here back to their devices (they go on elsewhere)
        and refuses new ones; `resume` serves them again (admin token). Returns how many moved."""
        req = pb.DrainRequest(resume=resume)
        return int(_call(self._stub.Drain, req, metadata=self._md, timeout=timeout).moved)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncAiClient:
    """asyncio aicap client (grpc.aio); the methods of AiClient as coroutines. The streams are not
    coroutines: `async for chunk in ai.stream_complete(...)`."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self._channel = channel
        self._stub = pb_grpc.AiServiceStub(channel)
        self._md = metadata(token)

    @classmethod
    def connect(
        cls, address: str | None = None, token: str | None = None, tls_fingerprint: str | None = None
    ) -> AsyncAiClient:
        token = resolve_token(token, ERRORS)
        return cls(open_aio_channel(address, tls_fingerprint, ERRORS), token)

    async def models(self, timeout: float | None = None) -> list[Model]:
        req = pb.ListModelsRequest()
        resp = await _acall(self._stub.ListModels, req, metadata=self._md, timeout=timeout)
        return [model_from_proto(m) for m in resp.models]

    def stream_complete(
        self,
        prompt: str,
        model: str | None = None,
        *,
        timeout: float | None = None,
        placement: str | None = None,
        **sampling: Unpack[Sampling],
    ) -> AsyncCompletionStream:
        req = complete_request(prompt, model, sampling, placement)
        return AsyncCompletionStream(self._stub.Complete(req, metadata=self._md, timeout=timeout))

    async def complete(
        self,
        prompt: str,
        model: str | None = None,
        *,
        timeout: float | None = None,
        placement: str | None = None,
        **sampling: Unpack[Sampling],
    ) -> Completion:
        async with self.stream_complete(
            prompt, model, timeout=timeout, placement=placement, **sampling
        ) as stream:
            return await stream.completion()

    def stream_chat(
        self,
        messages: Messages,
        model: str | None = None,
        *,
        timeout: float | None = None,
        placement: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool = False,
        context: Sequence[Context] = (),
        session: str | Session | AsyncSession | None = None,
        pinned_context: str | None = None,
        **sampling: Unpack[Sampling],
    ) -> AsyncCompletionStream:
        req = chat_request(
            messages, model, sampling, placement, tools, tool_choice, parallel_tool_calls, context
        )
        req.MergeFrom(pb.ChatRequest(**session_fields(session, pinned_context)))
        return AsyncCompletionStream(self._stub.Chat(req, metadata=self._md, timeout=timeout))

    async def chat(
        self,
        messages: Messages,
        model: str | None = None,
        *,
        timeout: float | None = None,
        placement: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool = False,
        context: Sequence[Context] = (),
        session: str | Session | AsyncSession | None = None,
        pinned_context: str | None = None,
        **sampling: Unpack[Sampling],
    ) -> Completion:
        async with self.stream_chat(
            messages,
            model,
            timeout=timeout,
            placement=placement,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            context=context,
            session=session,
            pinned_context=pinned_context,
            **sampling,
        ) as stream:
            return await stream.completion()

    # ---- sessions and pinned contexts (aicap._conversation) ----

    async def create_session(
        self, instructions: str = "", model: str | None = None, timeout: float | None = None
    ) -> AsyncSession:
        req = pb.CreateSessionRequest(model=model or "", instructions=instructions)
        msg = await _acall(self._stub.CreateSession, req, metadata=self._md, timeout=timeout)
        return AsyncSession(self, msg)

    async def session(self, session_id: str, timeout: float | None = None) -> AsyncSession:
        return AsyncSession(self, await self._get_session(session_id, timeout))

    async def pin_context(
        self, name: str, text: str, model: str | None = None, timeout: float | None = None
    ) -> PinnedContext:
        req = pb.PinContextRequest(name=name, text=text, model=model or "")
        return pinned_from_proto(await _acall(self._stub.PinContext, req, metadata=self._md, timeout=timeout))

    async def unpin_context(self, name: str, timeout: float | None = None) -> None:
        req = pb.UnpinContextRequest(name=name)
        await _acall(self._stub.UnpinContext, req, metadata=self._md, timeout=timeout)

    async def _get_session(self, session_id: str, timeout: float | None = None) -> pb.Session:
        req = pb.GetSessionRequest(id=session_id)
        return await _acall(self._stub.GetSession, req, metadata=self._md, timeout=timeout)

    async def _close_session(self, session_id: str, timeout: float | None = None) -> None:
        req = pb.CloseSessionRequest(id=session_id)
        await _acall(self._stub.CloseSession, req, metadata=self._md, timeout=timeout)

    async def embed(
        self, texts: str | Sequence[str], model: str = "", timeout: float | None = None
    ) -> npt.NDArray[np.float32]:
        req, single = embed_request(texts, model)
        resp = await _acall(self._stub.Embed, req, metadata=self._md, timeout=timeout)
        return vectors_from_proto(resp, single)

    async def tokenize(
        self, text: str, add_special: bool = True, model: str | None = None, timeout: float | None = None
    ) -> list[int]:
        req = pb.TokenizeRequest(model=model or "", text=text, add_special=add_special)
        return list((await _acall(self._stub.Tokenize, req, metadata=self._md, timeout=timeout)).tokens)

    async def detokenize(
        self, tokens: Sequence[int], model: str | None = None, timeout: float | None = None
    ) -> str:
        req = pb.DetokenizeRequest(model=model or "", tokens=list(tokens))
        return str((await _acall(self._stub.Detokenize, req, metadata=self._md, timeout=timeout)).text)

    async def stats(self, model: str | None = None, timeout: float | None = None) -> Stats:
        req = pb.GetStatsRequest(model=model or "")
        return stats_from_proto(await _acall(self._stub.GetStats, req, metadata=self._md, timeout=timeout))

    async def add_model(
        self, name: str, path: str, n_ctx: int = 0, chat_template: str = "", timeout: float | None = None
    ) -> Model:
        req = pb.AddModelRequest(name=name, path=str(path), n_ctx=n_ctx, chat_template=chat_template)
        return model_from_proto(
            (await _acall(self._stub.AddModel, req, metadata=self._md, timeout=timeout)).model
        )

    async def remove_model(self, name: str, timeout: float | None = None) -> None:
        req = pb.RemoveModelRequest(name=name)
        await _acall(self._stub.RemoveModel, req, metadata=self._md, timeout=timeout)

    async def drain(self, resume: bool = False, timeout: float | None = None) -> int:
        req = pb.DrainRequest(resume=resume)
        return int((await _acall(self._stub.Drain, req, metadata=self._md, timeout=timeout)).moved)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncAiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
