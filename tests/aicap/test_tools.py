"""Tool calls in llama.cpp's generic format (aicap/tools.py) and what chat templates render of tool
use (aicap/chat.py): the answer schema per tool_choice, parsing answers, the messages and tool list a
template gets, and the capability probes."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from aicap.chat import Capabilities, capabilities, render_chat
from aicap.errors import InvalidArgument
from aicap.tools import RESPOND_IN_JSON, TOOLS_INTRO, Tool, Tools, calls_json, parse_answer, template_inputs

CHATML = (  # SmolLM2-135M-Instruct's own template (from its GGUF)
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)
HERMES = (  # a template that takes tools (in the style of Qwen2.5 / Hermes)
    "{% if tools %}<|im_start|>system\n<tools>{% for t in tools %}{{ t.function | tojson }}{% endfor %}"
    "</tools><|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}</tool_call>"
    "{% endfor %}{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
STRICT_ROLES = (
    "{% for m in messages %}{% if m.role not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('bad role') }}{% endif %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
)
WEATHER = Tool(
    "get_weather",
    "The weather in a city",
    json.dumps(
        {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
        }
    ),
)
TIME = Tool("get_time", "", json.dumps({"type": "object", "properties": {"tz": {"type": "string"}}}))


def schema(tools: Tools) -> dict[str, Any]:
    return tools.schema(tools.definitions())


def valid(instance: Any, s: dict[str, Any]) -> bool:
    return jsonschema.Draft202012Validator(s).is_valid(instance)


def test_required_is_a_call_of_some_tool_with_valid_arguments() -> None:
    s = schema(Tools((WEATHER, TIME), "required"))
    assert valid({"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}, s)
    assert valid({"tool_call": {"name": "get_time", "arguments": {}}}, s)
    assert not valid({"tool_call": {"name": "get_weather", "arguments": {"unit": "c"}}}, s)  # no city
    assert not valid({"tool_call": {"name": "other", "arguments": {}}}, s)
    assert not valid({"response": "hello"}, s)


def test_a_named_function_is_a_call_of_that_tool_only() -> None:
    s = schema(Tools((WEATHER, TIME), "function", "get_time"))
    assert valid({"tool_call": {"name": "get_time", "arguments": {"tz": "UTC"}}}, s)
    assert not valid({"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}, s)


def test_auto_is_a_call_or_a_response_that_may_follow_a_schema() -> None:
    s = schema(Tools((WEATHER,), "auto"))
    assert valid({"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}, s)
    assert valid({"response": "It is sunny."}, s)
    typed = schema(Tools((WEATHER,), "auto", response='{"type": "object", "required": ["n"]}'))
    assert valid({"response": {"n": 1}}, typed)
    assert not valid({"response": "text"}, typed)


def test_parallel_calls_are_a_list() -> None:
    s = schema(Tools((WEATHER, TIME), "required", parallel=True))
    calls = [{"name": "get_time", "arguments": {}}, {"name": "get_weather", "arguments": {"city": "Rome"}}]
    assert valid({"tool_calls": calls}, s)
    assert not valid({"tool_calls": []}, s)
    assert not valid({"tool_call": calls[0]}, s)


def test_none_and_no_tools_ask_for_no_calls() -> None:
    assert not Tools((WEATHER,), "none").active
    assert not Tools((), "auto").active


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        (Tools((Tool("bad name"),)), "tool name"),
        (Tools((TIME, TIME)), "two tools are named get_time"),
        (Tools((TIME,), "function", "get_weather"), "not among the tools"),
        (Tools((), "required"), "needs tools"),
    ],
)
def test_bad_tools_are_invalid_arguments(tools: Tools, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        tools.check()


def test_parameters_that_are_not_a_json_object_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="parameters schema of tool f is not valid JSON"):
        Tools((Tool("f", "", "{oops"),)).definitions()
    with pytest.raises(InvalidArgument, match=r"parameters schema of tool g does not compile: .*type"):
        Tools((TIME, Tool("g", "", '{"type": 7}'))).definitions()


def test_answers_parse_into_text_or_calls() -> None:
    text, calls = parse_answer('{"response": "Hi there"}')  # type: ignore[misc]
    assert (text, calls) == ("Hi there", [])
    text, calls = parse_answer('{"response": {"n": 1}}')  # type: ignore[misc]
    assert json.loads(text) == {"n": 1}
    text, calls = parse_answer('{"tool_call": {"name": "get_time", "arguments": {"tz": "UTC"}}}')  # type: ignore[misc]
    assert text == "" and [(c.name, json.loads(c.arguments)) for c in calls] == [("get_time", {"tz": "UTC"})]
    assert calls[0].id.startswith("call_") and len(calls[0].id) == 29
    _, calls = parse_answer(
        '{"tool_calls": [{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}]}'
    )  # type: ignore[misc]
    assert [c.name for c in calls] == ["a", "b"] and calls[0].id != calls[1].id
    assert parse_answer('{"tool_call": {"name": "a", "argu') is None  # cut by max_tokens
    assert parse_answer('{"other": 1}') is None


def test_capabilities_are_probed_by_rendering() -> None:
    assert capabilities(CHATML) == Capabilities(tools=False, tool_calls=False, tool_results=True)
    assert capabilities(HERMES) == Capabilities(tools=True, tool_calls=True, tool_results=True)
    assert capabilities(STRICT_ROLES).tool_results is False


HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Oslo?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'}],
    },
    {"role": "tool", "content": "12 C, rain", "tool_call_id": "call_1", "name": "get_weather"},
]


def test_without_native_support_tools_go_into_the_system_message_and_calls_into_content() -> None:
    tools = Tools((WEATHER,), "auto")
    messages, defs = template_inputs(HISTORY, tools.definitions(), capabilities(CHATML))
    assert defs is None  # the template would ignore them
    system = messages[0]
    assert system["role"] == "system" and system["content"].startswith(RESPOND_IN_JSON)
    assert TOOLS_INTRO in system["content"] and '"name": "get_weather"' in system["content"]
    assert messages[2] == {
        "role": "assistant",
        "content": '{"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}}',
    }
    assert messages[3]["role"] == "tool" and messages[3]["content"] == "12 C, rain"
    text = render_chat(CHATML, messages, "", "")
    assert "<|im_start|>tool\n12 C, rain<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_a_template_without_a_tool_role_gets_results_as_user_messages() -> None:
    messages, _ = template_inputs(HISTORY, None, capabilities(STRICT_ROLES))
    result = json.loads(messages[2]["content"])
    assert messages[2]["role"] == "user"
    assert result == {
        "tool_response": {"tool": "get_weather", "content": "12 C, rain", "tool_call_id": "call_1"}
    }
    render_chat(STRICT_ROLES, messages, "", "")  # renders: no role it refuses


def test_a_template_that_takes_tools_renders_them_itself() -> None:
    tools = Tools((WEATHER,), "required")
    messages, defs = template_inputs(HISTORY, tools.definitions(), capabilities(HERMES))
    assert defs is not None and defs[0]["function"]["name"] == "get_weather"
    assert messages[0] == {"role": "system", "content": RESPOND_IN_JSON}
    call = messages[2]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": {"city": "Oslo"}}
    text = render_chat(HERMES, messages, "", "", tools=defs)
    assert "<tools>" in text and '<tool_call>{"name": "get_weather"' in text


def test_calls_in_history_are_written_as_the_model_writes_them() -> None:
    one = calls_json([{"name": "f", "arguments": {"x": 1}}])
    assert json.loads(one) == {"tool_call": {"name": "f", "arguments": {"x": 1}}}
    two = calls_json([{"name": "f", "arguments": {}}, {"name": "g", "arguments": {}}])
    assert [c["name"] for c in json.loads(two)["tool_calls"]] == ["f", "g"]


def test_arguments_in_history_that_are_not_json_are_refused() -> None:
    bad = [{"role": "assistant", "content": "", "tool_calls": [{"id": "1", "name": "f", "arguments": "{x"}]}]
    with pytest.raises(InvalidArgument, match="arguments of a call of f"):
        template_inputs(bad, None, capabilities(CHATML))
