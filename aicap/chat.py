"""Chat prompts: the model's own Jinja chat template, rendered as Hugging Face's transformers does
(sandboxed, trim_blocks/lstrip_blocks, `raise_exception`, `tojson`, the generation prompt added), and
what a template does with tools, found by rendering probes as minja (llama.cpp's) does."""

from __future__ import annotations

import datetime
import functools
import json
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from aicap.errors import InvalidArgument

ROLES = ("system", "user", "assistant", "tool")


def _raise(message: str) -> None:
    raise InvalidArgument(f"the chat template refused the messages: {message}")


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, **kw: Any) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, sort_keys=kw.get("sort_keys", False))


@functools.lru_cache(maxsize=32)
def compile_template(source: str) -> jinja2.Template:
    """The compiled template (InvalidArgument if it does not parse)."""
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda f: datetime.datetime.now().strftime(f)
    try:
        return env.from_string(source)
    except jinja2.TemplateError as exc:
        raise InvalidArgument(f"invalid chat template: {exc}") from None


def render_chat(
    template: str,
    messages: list[dict[str, Any]],
    bos: str,
    eos: str,
    generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """The prompt text for `messages`, ending with the assistant's turn opened (`generation_prompt`);
    `tools` (OpenAI's function definitions) as the template's `tools` variable."""
    extra = {"tools": tools} if tools is not None else {}
    try:
        return compile_template(template).render(
            messages=messages, bos_token=bos, eos_token=eos, add_generation_prompt=generation_prompt, **extra
        )
    except jinja2.TemplateError as exc:
        raise InvalidArgument(f"the chat template failed on these messages: {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # a template's own error on our data
        raise InvalidArgument(f"the chat template failed on these messages: {exc}") from None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a chat template renders of tool use (else aicap.tools writes it into the messages)."""

    tools: bool  # the `tools` variable (function definitions)
    tool_calls: bool  # an assistant message's `tool_calls`
    tool_results: bool  # a message of role "tool"


_PROBE_TOOL = "aicap_probe_tool_fn"
_PROBE_RESULT = "aicap_probe_result_text"


@functools.lru_cache(maxsize=32)
def capabilities(template: str) -> Capabilities:
    """Renders probes through the template: does each piece of tool use show up in its output?"""
    user = {"role": "user", "content": "Hi"}
    call = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": _PROBE_TOOL, "arguments": {"a": 1}}}
        ],
    }
    result = {"role": "tool", "content": _PROBE_RESULT, "tool_call_id": "call_1", "name": _PROBE_TOOL}
    tool = {"type": "function", "function": {"name": _PROBE_TOOL, "parameters": {"type": "object"}}}

    def shows(messages: list[dict[str, Any]], marker: str, tools: list[dict[str, Any]] | None = None) -> bool:
        try:
            return marker in render_chat(template, messages, "", "", True, tools)
        except InvalidArgument:
            return False

    return Capabilities(
        tools=shows([user], _PROBE_TOOL, [tool]),
        tool_calls=shows([user, call], _PROBE_TOOL),
        tool_results=shows([user, call, result], _PROBE_RESULT),
    )
