"""The Python SDK of aicap, the daemon's on-device LLM: `AiClient` (blocking) and `AsyncAiClient` (asyncio).

with AiClient.connect(token=...) as ai:                  # address: DATAMGR_ADDRESS or the daemon's socket
    print(ai.complete("The capital of France is", max_tokens=8, temperature=0).text)
    for chunk in ai.stream_chat([("user", "Hi!")], max_tokens=32):
        print(chunk.text, end="", flush=True)            # leaving the loop early cancels the call

Errors raise the daemon's error classes (`datamgr.errors`: InvalidArgument, PermissionDenied, NotFound,
ResourceExhausted, DeadlineExceeded, ...), as DataShare's SDK does: one tree for everything the daemon
answers. Besides those classes the SDK needs of datamgr its client's channel plumbing (TLS pinned to
`tls_fingerprint` for a TCP listener, as every datamgr SDK) and, when DATAMGR_ADDRESS is unset, its
settings, to find the socket exactly where the daemon puts it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Unpack

import grpc

from aicap._messages import (
    Completion,
    CompletionChunk,
    Messages,
    Model,
    Sampling,
    Stats,
    assemble,
    chat_request,
    chunk_from_proto,
    complete_request,
    model_from_proto,
    stats_from_proto,
)
from aicap.v1 import aicap_pb2 as pb
from aicap.v1 import aicap_pb2_grpc as pb_grpc
from datamgr.client._conn import open_aio_channel, open_channel  # the channel plumbing, as udmf's
from datamgr.errors import BY_CODE, DatamgrError, Unauthenticated

_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]


# ---- connection: address, token, errors ----


def default_address() -> str:
    """`DATAMGR_ADDRESS`, else the daemon's Unix socket as its settings place it (DATAMGR_DATA_DIR, ...)."""
    address = os.environ.get("DATAMGR_ADDRESS")
    if address:
        return address
    from datamgr.config import load_settings  # where the daemon puts its socket is the daemon's setting

    return f"unix:{load_settings().socket_path}"


def resolve_token(token: str | None) -> str:
    """`token`, else `DATAMGR_TOKEN`."""
    token = token or os.environ.get("DATAMGR_TOKEN")
    if not token:
        raise Unauthenticated("no app token: pass token=... or set DATAMGR_TOKEN")
    return token


def _metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def error_from_rpc(exc: grpc.RpcError) -> DatamgrError:
    """The datamgr error class for a failed call's status: InvalidArgument for INVALID_ARGUMENT, ..."""
    code = exc.code() if hasattr(exc, "code") else None
    name = code.name if code is not None else "UNKNOWN"
    details = exc.details() if hasattr(exc, "details") else None
    # DaemonLocked, datamgr's FAILED_PRECONDITION class, is a local start-up error: aicap's failed
    # preconditions (removing the default model, ...) are plain DatamgrErrors with that code
    cls = DatamgrError if name == "FAILED_PRECONDITION" else BY_CODE.get(name, DatamgrError)
    err = cls(details or name)
    err.code = name
    return err


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


def _call(fn: Any, request: Any, **kwargs: Any) -> Any:
    try:
        return fn(request, **kwargs)
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from None


async def _acall(fn: Any, request: Any, **kwargs: Any) -> Any:
    try:
        return await fn(request, **kwargs)
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from None


class AiClient:
    """Blocking aicap client. Create with `AiClient.connect(address, token)`; AddModel and RemoveModel
    need a client made with the admin token. `timeout=` (seconds) sets a call's deadline."""

    def __init__(self, channel: grpc.Channel, token: str) -> None:
        self._channel = channel
        self._stub = pb_grpc.AiServiceStub(channel)
        self._md = _metadata(token)

    @classmethod
    def connect(
        cls, address: str | None = None, token: str | None = None, tls_fingerprint: str | None = None
    ) -> AiClient:
        """`tls_fingerprint` (or DATAMGR_TLS_FINGERPRINT): the certificate a TCP listener must present."""
        token = resolve_token(token)
        return cls(open_channel(address or default_address(), tls_fingerprint, _CHANNEL_OPTIONS), token)

    def models(self, timeout: float | None = None) -> list[Model]:
        resp = _call(self._stub.ListModels, pb.ListModelsRequest(), metadata=self._md, timeout=timeout)
        return [model_from_proto(m) for m in resp.models]

    def stream_complete(
        self,
        prompt: str,
        model: str | None = None,
        *,
        timeout: float | None = None,
        **sampling: Unpack[Sampling],
    ) -> CompletionStream:
        req = complete_request(prompt, model, sampling)
        return CompletionStream(self._stub.Complete(req, metadata=self._md, timeout=timeout))

    def complete(
        self,
        prompt: str,
        model: str | None = None,
        *,
        timeout: float | None = None,
        **sampling: Unpack[Sampling],
    ) -> Completion:
        with self.stream_complete(prompt, model, timeout=timeout, **sampling) as stream:
            return stream.completion()

    def stream_chat(
        self,
        messages: Messages,
        model: str | None = None,
        *,
        timeout: float | None = None,
        **sampling: Unpack[Sampling],
    ) -> CompletionStream:
        req = chat_request(messages, model, sampling)
        return CompletionStream(self._stub.Chat(req, metadata=self._md, timeout=timeout))

    def chat(
        self,
        messages: Messages,
        model: str | None = None,
        *,
        timeout: float | None = None,
        **sampling: Unpack[Sampling],
    ) -> Completion:
        with self.stream_chat(messages, model, timeout=timeout, **sampling) as stream:
            return stream.completion()

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
        self._md = _metadata(token)

    @classmethod
    def connect(
        cls, address: str | None = None, token: str | None = None, tls_fingerprint: str | None = None
    ) -> AsyncAiClient:
        token = resolve_token(token)
        return cls(open_aio_channel(address or default_address(), tls_fingerprint, _CHANNEL_OPTIONS), token)

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
        **sampling: Unpack[Sampling],
    ) -> AsyncCompletionStream:
        req = complete_request(prompt, model, sampling)
        return AsyncCompletionStream(self._stub.Complete(req, metadata=self._md, timeout=timeout))

    async def complete(
        self,
        prompt: str,
        model: str | None = None,
        *,
        timeout: float | None = None,
        **sampling: Unpack[Sampling],
    ) -> Completion:
        async with self.stream_complete(prompt, model, timeout=timeout, **sampling) as stream:
            return await stream.completion()

    def stream_chat(
        self,
        messages: Messages,
        model: str | None = None,
        *,
        timeout: float | None = None,
        **sampling: Unpack[Sampling],
    ) -> AsyncCompletionStream:
        req = chat_request(messages, model, sampling)
        return AsyncCompletionStream(self._stub.Chat(req, metadata=self._md, timeout=timeout))

    async def chat(
        self,
        messages: Messages,
        model: str | None = None,
        *,
        timeout: float | None = None,
        **sampling: Unpack[Sampling],
    ) -> Completion:
        async with self.stream_chat(messages, model, timeout=timeout, **sampling) as stream:
            return await stream.completion()

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

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncAiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
