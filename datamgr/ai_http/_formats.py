"""Structured output and tools in OpenAI's shapes → aicap.v1's (pure): `response_format` (text,
json_object, json_schema; llama-server's json_object with a `schema` too), `tools`, `tool_choice` and the
tool calls of assistant messages. Schemas travel as JSON text; the service compiles them (a schema the
grammar engine cannot compile is its 400, with the reason).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aicap.v1 import aicap_pb2 as pb

_CHOICE = {
    "auto": pb.TOOL_CHOICE_MODE_AUTO,
    "none": pb.TOOL_CHOICE_MODE_NONE,
    "required": pb.TOOL_CHOICE_MODE_REQUIRED,
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class _JsonSchema(_Body):
    name: str = Field("", max_length=256)
    description: str = ""
    schema_: dict[str, Any] | bool | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchema | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")  # llama-server's json_object + schema

    def message(self) -> pb.ResponseFormat:
        """As aicap.v1's; a json_schema without its schema is a bad request (ValueError)."""
        if self.type == "text":
            return pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_TEXT)
        if self.type == "json_object":
            if self.schema_ is None:
                return pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
            schema = pb.JsonSchema(schema=_json(self.schema_))
            return pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, json_schema=schema)
        js = self.json_schema
        if js is None or js.schema_ is None:
            raise ValueError("response_format json_schema needs json_schema.schema")
        schema = pb.JsonSchema(
            name=js.name, description=js.description, schema=_json(js.schema_), strict=bool(js.strict)
        )
        return pb.ResponseFormat(type=pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, json_schema=schema)


class _Function(_Body):
    name: str = Field(min_length=1, max_length=256)
    description: str = ""
    parameters: dict[str, Any] | None = None


class ToolSpec(_Body):
    """One of `tools`: {"type": "function", "function": {"name", "description", "parameters"}}."""

    type: Literal["function"] = "function"
    function: _Function

    def message(self) -> pb.Tool:
        f = self.function
        parameters = _json(f.parameters) if f.parameters is not None else ""
        return pb.Tool(name=f.name, description=f.description, parameters=parameters)


class _Named(_Body):
    name: str = Field(min_length=1, max_length=256)


class NamedChoice(_Body):
    """`tool_choice` naming one function: {"type": "function", "function": {"name"}}."""

    type: Literal["function"] = "function"
    function: _Named


def tool_choice(choice: Literal["auto", "none", "required"] | NamedChoice | None) -> pb.ToolChoice:
    if choice is None:
        return pb.ToolChoice()
    if isinstance(choice, NamedChoice):
        return pb.ToolChoice(mode=pb.TOOL_CHOICE_MODE_FUNCTION, function=choice.function.name)
    return pb.ToolChoice(mode=_CHOICE[choice])


class _CalledFunction(_Body):
    name: str = Field(min_length=1, max_length=256)
    arguments: str | dict[str, Any] = ""


class ToolCallSpec(_Body):
    """A tool call of an assistant message fed back: {"id", "type": "function", "function": {...}}."""

    id: str = Field("", max_length=256)
    type: Literal["function"] = "function"
    function: _CalledFunction

    def message(self) -> pb.ToolCall:
        args = self.function.arguments
        return pb.ToolCall(
            id=self.id, name=self.function.name, arguments=args if isinstance(args, str) else _json(args)
        )


def tool_calls_out(calls: Any) -> list[dict[str, Any]]:
    """aicap.v1 ToolCalls as OpenAI's (the answer's `tool_calls`)."""
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]
