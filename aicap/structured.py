"""Structured output: a request's response format (JSON object, JSON schema) or GBNF grammar, compiled
by llguidance into the grammar its samples are constrained by (aicap.engine.grammar applies it).

What an app sends is bounded in characters (`ai.max_grammar_chars`) before anything else; compiling is
CPU work bounded by llguidance's parser limits and runs on the tokenizing pool, never on the event loop
or the inference thread. A schema or grammar that does not compile is InvalidArgument with llguidance's
reason. JSON is generated compact with one space after `,` and `:` (no free whitespace: a small model
given free whitespace may spend its tokens on newlines), unless the schema's own `x-guidance` says else.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from aicap.errors import InvalidArgument

if TYPE_CHECKING:
    from llguidance import LLMatcher, LLTokenizer
    from llguidance._lib import JsonCompileOptions

Kind = Literal["json_object", "json_schema", "grammar"]
JSON_OPTIONS: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
ANY_OBJECT = {"type": "object"}  # json_object: any JSON object, as llama-server's


@dataclass(frozen=True, slots=True)
class Format:
    """What a request's output must be: `text` is the JSON schema (JSON text) or the grammar (GBNF, or
    Lark as llguidance reads it); empty for json_object."""

    kind: Kind
    text: str = ""
    label: str = ""  # what errors call it ("": by its kind)

    @property
    def what(self) -> str:
        default = {"json_object": "JSON object format", "json_schema": "JSON schema", "grammar": "grammar"}
        return self.label or default[self.kind]


def check_size(chars: int, limit: int, what: str) -> None:
    """InvalidArgument naming ai.max_grammar_chars when a schema, grammar or tool list is too long to
    compile (checked on the event loop, by length only)."""
    if chars > limit:
        raise InvalidArgument(
            f"the {what} has {chars} characters, more than the {limit} a request may send "
            "(ai.max_grammar_chars)"
        )


def schema_object(text: str, what: str = "JSON schema") -> dict[str, Any]:
    """A JSON schema's text as the object it must be."""
    try:
        schema = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidArgument(f"the {what} is not valid JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise InvalidArgument(f"the {what} must be a JSON object, not {type(schema).__name__}")
    return schema


def grammar_of(fmt: Format) -> str:
    """llguidance's grammar for the format (not yet checked against a vocabulary: see `compile`)."""
    import llguidance

    if fmt.kind == "grammar":
        from llguidance.gbnf_to_lark import any_to_lark

        try:
            lark = any_to_lark(fmt.text)
        except Exception as exc:  # the converter's own errors, and any it did not foresee
            raise InvalidArgument(f"the grammar does not parse as GBNF: {exc}") from None
        return llguidance.LLMatcher.grammar_from_lark(lark)
    schema = ANY_OBJECT if fmt.kind == "json_object" else schema_object(fmt.text)
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"the {fmt.what} is not usable: {exc}") from None


def compile_format(tok: LLTokenizer, fmt: Format) -> str:
    """The format's grammar, validated against the model's vocabulary; InvalidArgument with
    llguidance's reason if it does not compile."""
    import llguidance

    grammar = grammar_of(fmt)
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, tok)
    if is_error:
        raise InvalidArgument(f"the {fmt.what} does not compile: {_reason(messages)}")
    return grammar


def check_schema(schema: dict[str, Any], what: str) -> None:
    """InvalidArgument naming `what` unless the JSON schema compiles (for any vocabulary)."""
    import llguidance

    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
        llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
    )
    if is_error:
        raise InvalidArgument(f"the {what} does not compile: {_reason(messages)}")


def matcher(tok: LLTokenizer, grammar: str, replayed: Sequence[int] = ()) -> LLMatcher:
    """A matcher of a compiled grammar that has read `replayed`, output tokens generated under it
    already (a generation replayed on another device or engine); InvalidArgument if they do not
    follow it (they were not generated under this grammar)."""
    import llguidance

    m = llguidance.LLMatcher(tok, grammar, log_level=0)
    if m.is_error():
        raise InvalidArgument(f"the grammar does not compile: {m.get_error()}")
    if replayed and not m.consume_tokens(list(replayed)):
        raise InvalidArgument(f"the {len(replayed)} replayed tokens do not follow the response format")
    return m


def _reason(messages: list[str]) -> str:
    text = "; ".join(m.strip() for m in messages) or "no reason given"
    return text if len(text) <= 2000 else text[:2000] + "..."
