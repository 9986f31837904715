"""Tool calls in llama.cpp's generic format (its server's fallback for any chat template): pure logic.

The model is told to answer JSON, either `{"tool_call": {"name": ..., "arguments": {...}}}` (with
parallel calls `{"tool_calls": [...]}`) or `{"response": "..."}`, and its output is constrained to
exactly that by a JSON schema built from the tools' own parameter schemas (structured.py), so every
call names a tool and its arguments validate. tool_choice picks the schema: "required" a call of any
tool, "function" a call of one, "auto" a call or a text response, "none" no tools at all (plain text).

The tools reach the model through its chat template when the template takes `tools` (probed, as
minja does: chat.capabilities); otherwise they are described in the system message, as minja's
polyfill does. Assistant messages that called tools and role "tool" results are rendered the
template's way when it has one, else as the same JSON (a result as a user message).
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aicap.chat import Capabilities
from aicap.errors import InvalidArgument
from aicap.structured import check_schema, schema_object

Choice = Literal["auto", "none", "required", "function"]
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_PARALLEL_CALLS = 8  # calls one answer may make (parallel_tool_calls)
RESPOND_IN_JSON = (
    "Respond in JSON format, either with `tool_call` (a request to call tools) or with `response` reply "
    "to the user's request"
)
TOOLS_INTRO = "You can call any of the following tools to satisfy the user's requests: "
_ID_CHARS = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str = ""
    parameters: str = ""  # JSON Schema text of the arguments object ("": any object)


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # the arguments object as JSON text


@dataclass(frozen=True, slots=True)
class Tools:
    """A chat's tools and how they may be used (`function`: the tool tool_choice "function" names;
    `response`: a JSON schema text a text answer must follow, from the request's response_format)."""

    tools: tuple[Tool, ...]
    choice: Choice = "auto"
    function: str = ""
    parallel: bool = False
    response: str = ""

    @property
    def active(self) -> bool:
        """The model is asked for tool calls (and its answer is the generic format's JSON)."""
        return bool(self.tools) and self.choice != "none"

    def chars(self) -> int:
        return sum(len(t.name) + len(t.description) + len(t.parameters) for t in self.tools)

    def check(self) -> None:
        """InvalidArgument for names, duplicates or a choice the tools cannot satisfy (cheap: on the loop)."""
        seen: set[str] = set()
        for t in self.tools:
            if not NAME.fullmatch(t.name):
                raise InvalidArgument(f"tool name {t.name[:80]!r}: 1-64 letters, digits, '_', '.' or '-'")
            if t.name in seen:
                raise InvalidArgument(f"two tools are named {t.name}")
            seen.add(t.name)
        if self.choice in ("required", "function") and not self.tools:
            raise InvalidArgument(f"tool_choice {self.choice} needs tools")
        if self.choice == "function" and self.function not in seen:
            raise InvalidArgument(f"tool_choice names {self.function!r}, which is not among the tools")

    def definitions(self) -> list[dict[str, Any]]:
        """The tools as OpenAI (and chat templates) write them; parameters parsed and checked to
        compile (InvalidArgument naming the tool)."""
        out = []
        for t in self.tools:
            fn: dict[str, Any] = {"name": t.name}
            if t.description:
                fn["description"] = t.description
            what = f"parameters schema of tool {t.name}"
            fn["parameters"] = schema_object(t.parameters, what) if t.parameters else {"type": "object"}
            if t.parameters:
                check_schema(fn["parameters"], what)
            out.append({"type": "function", "function": fn})
        return out

    def schema(self, definitions: list[dict[str, Any]]) -> dict[str, Any]:
        """The JSON schema the answer is constrained to (`definitions` from `definitions()`)."""
        calls = [_call_schema(d["function"]) for d in definitions]
        if self.choice == "function":
            calls = [
                c for c, d in zip(calls, definitions, strict=True) if d["function"]["name"] == self.function
            ]
        one = calls[0] if len(calls) == 1 else {"anyOf": calls}
        if self.parallel:
            call = _object(
                "tool_calls", {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_PARALLEL_CALLS}
            )
        else:
            call = _object("tool_call", one)
        if self.choice != "auto":
            return call
        response = schema_object(self.response, "response format's JSON schema") if self.response else None
        return {"anyOf": [call, _object("response", response or {"type": "string"})]}


def _object(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {key: value}, "required": [key], "additionalProperties": False}


def _call_schema(fn: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"type": "string", "const": fn["name"]}, "arguments": fn["parameters"]},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def new_call_id() -> str:
    """An id for a call, as OpenAI's look ("call_" and 24 letters and digits)."""
    return "call_" + "".join(secrets.choice(_ID_CHARS) for _ in range(24))


def calls_json(calls: Sequence[dict[str, Any]]) -> str:
    """An assistant turn's calls ({"name", "arguments"} with arguments parsed) as the model writes them."""
    body = [{"name": c["name"], "arguments": c["arguments"]} for c in calls]
    obj = {"tool_call": body[0]} if len(body) == 1 else {"tool_calls": body}
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))


def parse_answer(text: str) -> tuple[str, list[ToolCall]] | None:
    """The text answer or the calls in the model's output (the generic format's JSON); None if it is
    not that (cut by max_tokens, say)."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    if "response" in obj:
        r = obj["response"]
        return (r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)), []
    raw = [obj["tool_call"]] if "tool_call" in obj else obj.get("tool_calls")
    if not isinstance(raw, list) or not raw:
        return None
    calls = []
    for c in raw:
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            return None
        args = json.dumps(c.get("arguments", {}), ensure_ascii=False)
        calls.append(ToolCall(new_call_id(), c["name"], args))
    return "", calls


def _arguments(text: str, name: str) -> Any:
    if not text:
        return {}
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise InvalidArgument(f"the arguments of a call of {name} in the messages are not JSON") from None


def add_system(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """`text` appended to the system message, or a system message of it first."""
    if messages and messages[0]["role"] == "system":
        first = dict(messages[0], content=f"{messages[0]['content']}\n\n{text}")
        return [first, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def template_inputs(
    messages: list[dict[str, Any]], definitions: list[dict[str, Any]] | None, caps: Capabilities
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages (and `tools` variable) to render: `messages` as the service takes them ({"role",
    "content"}, an assistant's "tool_calls" [{"id", "name", "arguments"}], a tool result's
    "tool_call_id" and "name"), `definitions` the tools offered (None: the model is not asked for
    calls); the template's native support for each part (`caps`) says how it is written."""
    native_calls, native_results = caps.tool_calls, caps.tool_results
    out = []
    for msg in messages:
        role, content = msg["role"], msg.get("content", "")
        calls = msg.get("tool_calls") or []
        if role == "assistant" and calls:
            parsed = [
                {"id": c["id"], "name": c["name"], "arguments": _arguments(c["arguments"], c["name"])}
                for c in calls
            ]
            if native_calls:
                hf = [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": c["arguments"]},
                    }
                    for c in parsed
                ]
                out.append({"role": role, "content": content, "tool_calls": hf})
            else:
                out.append({"role": role, "content": calls_json(parsed)})
        elif role == "tool" and not native_results:
            result: dict[str, Any] = {}
            if msg.get("name"):
                result["tool"] = msg["name"]
            result["content"] = content
            if msg.get("tool_call_id"):
                result["tool_call_id"] = msg["tool_call_id"]
            out.append(
                {
                    "role": "user",
                    "content": json.dumps({"tool_response": result}, indent=2, ensure_ascii=False),
                }
            )
        elif role == "tool":
            out.append(
                {k: v for k, v in msg.items() if k in ("role", "content", "tool_call_id", "name") and v}
            )
            out[-1].setdefault("content", "")
        else:
            out.append({"role": role, "content": content})
    if definitions is None:
        return out, None
    if caps.tools:
        return add_system(out, RESPOND_IN_JSON), definitions
    listing = json.dumps(definitions, indent=2, ensure_ascii=False)
    return add_system(out, f"{RESPOND_IN_JSON}\n\n{TOOLS_INTRO}{listing}"), None
