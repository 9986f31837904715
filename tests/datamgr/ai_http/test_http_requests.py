"""OpenAI's request bodies as AiService requests: fields mapped, unset ones left to the daemon's
defaults, OpenAI's ranges and unsupported fields refused with the field named."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aicap.v1 import aicap_pb2 as pb
from datamgr.ai_http._requests import BadRequest, ChatBody, CompletionBody, DetokenizeBody, parse

USER = [{"role": "user", "content": "Hi"}]


def chat(**fields: Any) -> pb.ChatRequest:
    body: ChatBody = parse(ChatBody, {"messages": USER, **fields})
    return body.request()


def refused(cls: type[Any], body: Any) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        parsed = parse(cls, body)
        parsed.request()
    return info.value


def test_unset_fields_stay_unset_for_the_daemons_defaults() -> None:
    req = chat()
    assert [f.name for f, _ in req.params.ListFields()] == ["n"]
    assert req.params.n == 1 and req.model == "" and req.placement == pb.PLACEMENT_UNSPECIFIED


def test_sampling_fields_are_mapped() -> None:
    req = chat(
        model="m",
        n=2,
        stop="END",
        seed=-1,
        max_tokens=5,
        temperature=0.5,
        top_p=0.9,
        logprobs=True,
        top_k=10,
        min_p=0.1,
        repeat_penalty=1.1,
        repeat_last_n=32,
        ignore_eos=True,
        user="someone",
        placement="local",
    )
    p = req.params
    assert (req.model, p.n, list(p.stop), p.seed, p.max_tokens) == ("m", 2, ["END"], (1 << 64) - 1, 5)
    assert (p.temperature, round(p.top_p, 6), p.top_k, round(p.min_p, 6)) == (0.5, 0.9, 10, 0.1)
    assert (round(p.repeat_penalty, 6), p.repeat_last_n, p.logprobs, p.ignore_eos) == (1.1, 32, True, True)
    assert req.placement == pb.PLACEMENT_LOCAL


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert chat(max_tokens=5, max_completion_tokens=7).params.max_tokens == 7


def test_messages_roles_and_text_parts() -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": None},
    ]
    req = chat(messages=messages)
    assert [(m.role, m.content) for m in req.messages] == [
        ("system", "Be brief."),
        ("user", "Hello there"),
        ("assistant", ""),
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"messages": USER, "temperature": -1}, "temperature"),
        ({"messages": USER, "top_p": 1.5}, "top_p"),
        ({"messages": USER, "n": 0}, "n"),
        ({"messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"messages": USER, "max_tokens": 1 << 40}, "max_tokens"),
        ({"messages": USER, "top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({"messages": USER, "top_logprobs": 2}, "top_logprobs"),
        ({"messages": USER, "logit_bias": {"5": 1.0}}, "logit_bias"),
        ({"messages": USER, "presence_penalty": 3}, "presence_penalty"),
        ({"messages": USER, "placement": "moon"}, "placement"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages"),
    ],
)
def test_bad_chat_bodies_name_the_field(body: dict[str, Any], param: str) -> None:
    assert refused(ChatBody, body).param == param


def test_a_body_that_is_no_object() -> None:
    assert "JSON object" in refused(ChatBody, [1, 2]).message


def test_completions_take_one_prompt_and_refuse_what_they_cannot_do() -> None:
    body: CompletionBody = parse(CompletionBody, {"prompt": ["Hello"], "logprobs": 0})
    req = body.request()
    assert (req.prompt, req.params.logprobs, body.top_logprobs) == ("Hello", True, 0)
    assert refused(CompletionBody, {"prompt": ["a", "b"]}).param == "prompt"
    assert refused(CompletionBody, {"prompt": "a", "echo": True}).param == "echo"
    assert refused(CompletionBody, {"prompt": "a", "suffix": "z"}).param == "suffix"
    assert refused(CompletionBody, {"prompt": "a", "best_of": 3}).param == "best_of"
    assert refused(CompletionBody, {"prompt": "a", "logprobs": 6}).param == "logprobs"
    assert refused(CompletionBody, {}).param == "prompt"


def test_stream_options_count_only_when_streaming() -> None:
    options = {"stream_options": {"include_usage": True}}
    assert parse(ChatBody, {"messages": USER, "stream": True, **options}).include_usage
    assert not parse(ChatBody, {"messages": USER, **options}).include_usage


def test_detokenize_bounds_its_tokens() -> None:
    assert parse(DetokenizeBody, {"tokens": [1, 2]}).tokens == [1, 2]
    assert refused(DetokenizeBody, {"tokens": [1 << 40]}).param == "tokens.0"


def test_response_formats_and_grammar() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    js = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema, "strict": True}}
    rf = chat(response_format=js).params.response_format
    assert (rf.type, rf.json_schema.name, rf.json_schema.strict) == (
        pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
        "n",
        True,
    )
    assert json.loads(rf.json_schema.schema) == schema
    assert chat(response_format={"type": "json_object"}).params.response_format.type == (
        pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT
    )
    with_schema = chat(response_format={"type": "json_object", "schema": schema}).params.response_format
    assert with_schema.type == pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA  # llama-server's form
    assert chat(response_format={"type": "text"}).params.response_format.type == pb.RESPONSE_FORMAT_TYPE_TEXT
    assert chat(grammar='root ::= "yes"').params.grammar == 'root ::= "yes"'
    assert refused(ChatBody, {"messages": USER, "response_format": {"type": "json_schema"}}).param == (
        "response_format"
    )
    assert (
        refused(ChatBody, {"messages": USER, "response_format": {"type": "xml"}}).param
        == "response_format.type"
    )


def test_tools_choices_and_calls_fed_back() -> None:
    weather = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    tools = [
        {"type": "function", "function": {"name": "weather", "description": "Now.", "parameters": weather}}
    ]
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "name": "weather", "content": "18 C"},
    ]
    req = chat(messages=messages, tools=tools, tool_choice="required", parallel_tool_calls=True)
    (tool,) = req.tools
    assert (tool.name, tool.description, json.loads(tool.parameters)) == ("weather", "Now.", weather)
    assert (req.tool_choice.mode, req.parallel_tool_calls) == (pb.TOOL_CHOICE_MODE_REQUIRED, True)
    call = req.messages[1].tool_calls[0]
    assert (call.id, call.name, json.loads(call.arguments)) == ("call_1", "weather", {"city": "Paris"})
    answer = req.messages[2]
    assert (answer.role, answer.tool_call_id, answer.name, answer.content) == (
        "tool",
        "call_1",
        "weather",
        "18 C",
    )
    named = chat(tools=tools, tool_choice={"type": "function", "function": {"name": "weather"}}).tool_choice
    assert (named.mode, named.function) == (pb.TOOL_CHOICE_MODE_FUNCTION, "weather")
    assert chat().tool_choice.mode == pb.TOOL_CHOICE_MODE_UNSPECIFIED and not chat().parallel_tool_calls
    assert refused(ChatBody, {"messages": USER, "tool_choice": "sometimes"}).param is not None


def test_penalties_are_mapped() -> None:
    p = chat(presence_penalty=0.5, frequency_penalty=-1.0).params
    assert (p.presence_penalty, p.frequency_penalty) == (0.5, -1.0)
    assert not chat().params.HasField("presence_penalty")
