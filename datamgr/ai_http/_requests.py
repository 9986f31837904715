"""OpenAI request bodies → AiService requests (pure: no I/O).

The fields OpenAI's API defines are checked here (types, OpenAI's ranges) and mapped onto
aicap.v1's messages; the service then checks them as it checks any app's (max_tokens against its
limit, the prompt against the context, ...). An unset field takes the daemon's default (`[ai.sampling]`,
llama.cpp server's), as llama-server does. Besides OpenAI's fields the bodies take llama.cpp's and
vLLM's usual extensions (top_k, min_p, repeat_penalty, repeat_last_n, ignore_eos) and the daemon's
placement (placement, device); fields nobody here knows are ignored, as llama-server and vLLM do.
Structured output (`response_format`, llama-server's `grammar`) and tools are `_formats`'.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from aicap.v1 import aicap_pb2 as pb
from datamgr.ai_http._formats import NamedChoice, ResponseFormat, ToolCallSpec, ToolSpec, tool_choice

U32 = (1 << 32) - 1
_PLACEMENT = {
    "auto": pb.PLACEMENT_AUTO,
    "local": pb.PLACEMENT_LOCAL,
    "split": pb.PLACEMENT_SPLIT,
}
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


class BadRequest(Exception):
    """A body that is not a request of its endpoint: 400 with the field it names (`param`)."""

    code = "INVALID_ARGUMENT"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class StreamOptions(_Body):
    include_usage: bool = False


class _Generation(_Body):
    """The fields completions and chat completions share."""

    model: str = Field("", max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(1 << 63), le=(1 << 64) - 1)
    max_tokens: int | None = Field(None, ge=1, le=U32)
    temperature: float | None = Field(None, ge=0, le=1e6)
    top_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = Field(None, max_length=256)  # accepted (OpenAI's abuse tracking); not used
    response_format: ResponseFormat | None = None
    grammar: str | None = None  # llama-server's: GBNF the output must match
    # llama.cpp's and vLLM's extensions
    top_k: int | None = Field(None, ge=0, le=U32)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, gt=0, le=1e6)
    repeat_last_n: int | None = Field(None, ge=0, le=U32)
    ignore_eos: bool = False
    # the daemon's: where the generation runs (gRPC's placement and device)
    placement: Literal["auto", "local", "split"] | None = None
    device: str = Field("", max_length=128)

    @property
    def include_usage(self) -> bool:
        return self.stream and self.stream_options is not None and self.stream_options.include_usage

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or ())

    def _params(self, max_tokens: int | None, logprobs: bool) -> pb.SamplingParams:
        if self.logit_bias:
            raise BadRequest("logit_bias is not supported", "logit_bias")
        fields: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repeat_penalty": self.repeat_penalty,
            "repeat_last_n": self.repeat_last_n,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "seed": None if self.seed is None else self.seed & ((1 << 64) - 1),
        }
        params = pb.SamplingParams(**{k: v for k, v in fields.items() if v is not None})
        params.n = self.n
        params.stop.extend(self.stops())
        params.logprobs = logprobs
        params.ignore_eos = self.ignore_eos
        if self.response_format is not None:
            try:
                params.response_format.CopyFrom(self.response_format.message())
            except ValueError as exc:
                raise BadRequest(str(exc), "response_format") from None
        if self.grammar:
            params.grammar = self.grammar
        return params

    def _where(self) -> dict[str, Any]:
        placement = _PLACEMENT[self.placement] if self.placement else pb.PLACEMENT_UNSPECIFIED
        return {"placement": placement, "device": self.device}


class CompletionBody(_Generation):
    """POST /v1/completions."""

    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=5)  # top alternatives wanted (OpenAI: at most 5)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)

    def request(self) -> pb.CompleteRequest:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise BadRequest("one prompt per request: send a string (or a list of one)", "prompt")
            prompt = self.prompt[0]
        else:
            prompt = self.prompt
        if self.echo:
            raise BadRequest("echo is not supported", "echo")
        if self.suffix:
            raise BadRequest("suffix (insertion) is not supported", "suffix")
        if self.best_of is not None and self.best_of != self.n:
            raise BadRequest("best_of is not supported (it must equal n)", "best_of")
        params = self._params(self.max_tokens, self.logprobs is not None)
        return pb.CompleteRequest(model=self.model, prompt=prompt, params=params, **self._where())

    @property
    def top_logprobs(self) -> int:
        return self.logprobs or 0


class _Part(_Body):
    type: str
    text: str = ""


class Message(_Body):
    role: str
    content: str | list[_Part] | None = None
    name: str | None = Field(None, max_length=256)
    tool_calls: list[ToolCallSpec] | None = None  # an assistant's calls, fed back
    tool_call_id: str | None = Field(None, max_length=256)  # a tool's result: the call it answers

    @field_validator("role")
    @classmethod
    def _known_role(cls, role: str) -> str:
        if role not in _ROLES:
            raise ValueError(f"role {role!r}: use one of {', '.join(_ROLES)}")
        return role

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        for part in self.content:
            if part.type != "text":
                raise BadRequest(
                    f"content parts of type {part.type!r} are not supported: text only", "messages"
                )
        return "".join(part.text for part in self.content)

    def message(self) -> pb.ChatMessage:
        msg = pb.ChatMessage(
            role=_ROLES[self.role], content=self.text(), tool_call_id=self.tool_call_id or ""
        )
        if self.role == "tool" and self.name:
            msg.name = self.name
        msg.tool_calls.extend(call.message() for call in self.tool_calls or ())
        return msg


class ChatBody(_Generation):
    """POST /v1/chat/completions."""

    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: int | None = Field(None, ge=1, le=U32)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[ToolSpec] | None = Field(None, max_length=128)
    tool_choice: Literal["auto", "none", "required"] | NamedChoice | None = None
    parallel_tool_calls: bool = False  # llama-server's default (OpenAI's is true)

    def request(self) -> pb.ChatRequest:
        if self.top_logprobs and not self.logprobs:
            raise BadRequest("top_logprobs needs logprobs: true", "top_logprobs")
        max_tokens = self.max_completion_tokens or self.max_tokens
        return pb.ChatRequest(
            model=self.model,
            messages=[m.message() for m in self.messages],
            params=self._params(max_tokens, self.logprobs),
            tools=[t.message() for t in self.tools or ()],
            tool_choice=tool_choice(self.tool_choice),
            parallel_tool_calls=self.parallel_tool_calls,
            **self._where(),
        )


class EmbeddingsBody(_Body):
    """POST /v1/embeddings: `input` a string or a list of strings (OpenAI's token arrays are refused:
    their ids would be another model's)."""

    input: str | list[str] | list[int] | list[list[int]]
    model: str = Field("", max_length=256)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = Field(None, max_length=256)  # accepted (OpenAI's abuse tracking); not used

    def request(self) -> pb.EmbedRequest:
        texts = [self.input] if isinstance(self.input, str) else self.input
        if not texts:
            raise BadRequest("input is empty: send a string or a list of strings", "input")
        if not all(isinstance(t, str) for t in texts):
            raise BadRequest(
                "input: token arrays are not accepted (they would be another model's token ids): send the "
                "texts (LangChain's OpenAIEmbeddings: check_embedding_ctx_length=False)",
                "input",
            )
        return pb.EmbedRequest(model=self.model, texts=texts)  # type: ignore[arg-type]


class TokenizeBody(_Body):
    """POST /tokenize (llama-server's)."""

    content: str
    add_special: bool = False
    with_pieces: bool = False
    model: str = Field("", max_length=256)


class DetokenizeBody(_Body):
    """POST /detokenize (llama-server's)."""

    tokens: list[Annotated[int, Field(ge=-(1 << 31), le=(1 << 31) - 1)]]
    model: str = Field("", max_length=256)


def parse(cls: type[_Body], body: Any) -> Any:
    """`body` (decoded JSON) as a `cls`, or BadRequest naming the first field that is wrong."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = [str(x) for x in err["loc"] if not str(x).startswith(("str", "list", "function"))]
        param = ".".join(loc) or None
        raise BadRequest(f"{param or 'body'}: {err['msg']}", param) from None
