"""Structured output's compile step (aicap/structured.py) against a small llguidance vocabulary: what
compiles, and the reason given for what does not (the app's INVALID_ARGUMENT)."""

from __future__ import annotations

import json

import pytest

from aicap.errors import InvalidArgument
from aicap.structured import Format, check_size, compile_format, matcher
from tests.aicap.fake_vocab import encode, grammar_tokenizer


def compile_(kind: str, text: str = "") -> str:
    return compile_format(grammar_tokenizer(), Format(kind, text))  # type: ignore[arg-type]


def accepts(grammar: str, text: str) -> bool:
    m = matcher(grammar_tokenizer(), grammar)
    return m.consume_tokens(encode(text)) and m.is_accepting()


def test_a_json_schema_compiles_to_a_grammar_of_compact_json() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    g = compile_("json_schema", json.dumps(schema))
    assert accepts(g, '{"a": 12}')
    assert not accepts(g, '{"a":12}')  # one space after ":" and ",", no free whitespace
    assert not accepts(g, '{"a": "x"}')


def test_json_object_is_any_object() -> None:
    g = compile_("json_object")
    assert accepts(g, '{"x": [1, 2], "y": {"a": "b"}}')
    assert not accepts(g, "[1]")


def test_gbnf_and_lark_grammars_compile() -> None:
    assert accepts(compile_("grammar", 'root ::= "yes" | "no"'), "no")
    assert accepts(compile_("grammar", 'root ::= item ("," item)*\nitem ::= [0-9]+'), "1,23,4")
    assert accepts(compile_("grammar", 'start: "a" "b"'), "ab")  # Lark, as llguidance reads it


@pytest.mark.parametrize(
    ("kind", "text", "reason"),
    [
        ("json_schema", '{"type": "strin"}', "Invalid type: strin"),
        ("json_schema", "{not json", "not valid JSON"),
        ("json_schema", "[1, 2]", "must be a JSON object"),
        ("json_schema", '{"type": "string", "format": "no-such-format"}', "Unknown format"),
        ("grammar", "root ::= item\nitem ::= missing", "missing"),
        ("grammar", "root ::= (", "grammar"),
    ],
)
def test_what_does_not_compile_is_invalid_argument_with_the_reason(kind: str, text: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=r"does not|not valid|must be") as info:
        compile_(kind, text)
    assert reason in str(info.value)


def test_the_size_bound_names_its_setting() -> None:
    check_size(100, 100, "JSON schema")
    with pytest.raises(InvalidArgument, match=r"101 characters, more than the 100 .*ai\.max_grammar_chars"):
        check_size(101, 100, "JSON schema")


def test_a_matcher_reads_replayed_tokens_and_refuses_ones_the_grammar_forbids() -> None:
    g = compile_("grammar", 'root ::= "ab" "c"+')
    m = matcher(grammar_tokenizer(), g, encode("abc"))
    assert m.is_accepting()
    with pytest.raises(InvalidArgument, match="2 replayed tokens do not follow"):
        matcher(grammar_tokenizer(), g, encode("ax"))
