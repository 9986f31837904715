"""Chat prompts: the model's own Jinja chat template, rendered as Hugging Face's transformers does
(sandboxed, trim_blocks/lstrip_blocks, `raise_exception`, `tojson`, the generation prompt added)."""

from __future__ import annotations

import datetime
import functools
import json
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from aicap.errors import InvalidArgument

ROLES = ("system", "user", "assistant")


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
    template: str, messages: list[dict[str, str]], bos: str, eos: str, generation_prompt: bool = True
) -> str:
    """The prompt text for `messages`, ending with the assistant's turn opened (`generation_prompt`)."""
    try:
        return compile_template(template).render(
            messages=messages, bos_token=bos, eos_token=eos, add_generation_prompt=generation_prompt
        )
    except jinja2.TemplateError as exc:
        raise InvalidArgument(f"the chat template failed on these messages: {exc}") from None
