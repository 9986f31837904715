"""`datamgr ai complete/chat` send every option given, 0 included (`--temperature 0` is greedy), and
leave the ones not given to the daemon: checked on the request the CLI builds, without a daemon."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from aicap._messages import chat_request, complete_request
from datamgr.cli import ai as cli_ai
from datamgr.cli import main

ZEROS = {
    "temperature": "0",
    "seed": "0",
    "top-k": "0",
    "top-p": "0",
    "min-p": "0",
    "repeat-penalty": "0",
    "repeat-last-n": "0",
    "max-tokens": "0",
}


class _Sent(Exception):
    """Stops the command once it has handed its request to the client."""


class _Client:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []
        self.placements: list[str | None] = []

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def stream_complete(
        self, prompt: str, model: Any, timeout: Any = None, placement: str | None = None, **sampling: Any
    ) -> Any:
        self.calls.append(("complete", prompt, sampling))
        self.placements.append(placement)
        raise _Sent

    def stream_chat(
        self,
        messages: Any,
        model: Any,
        timeout: Any = None,
        placement: str | None = None,
        context: Any = (),
        pinned_context: str | None = None,
        **sampling: Any,
    ) -> Any:
        self.calls.append(("chat", messages, sampling))
        self.placements.append(placement)
        raise _Sent


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> _Client:
    fake = _Client()
    monkeypatch.setattr(cli_ai, "_client", lambda *args, **kwargs: fake)
    return fake


def sent(client: _Client, *args: str) -> Any:
    result = CliRunner().invoke(main, ["ai", *args])
    assert isinstance(result.exception, _Sent), result.output
    kind, what, sampling = client.calls.pop()
    if kind == "complete":
        return complete_request(what, None, sampling).params
    return chat_request(what, None, sampling).params


@pytest.mark.parametrize("command", ["complete", "chat"])
def test_a_zero_given_is_sent(client: _Client, command: str) -> None:
    options = [part for name, value in ZEROS.items() for part in (f"--{name}", value)]
    params = sent(client, command, "Hello", *options)
    for name in ZEROS:
        field = name.replace("-", "_")
        assert params.HasField(field), field
        assert getattr(params, field) == 0, field


def test_options_not_given_are_left_to_the_daemon(client: _Client) -> None:
    params = sent(client, "complete", "Hello")
    assert not any(params.HasField(name.replace("-", "_")) for name in ZEROS)
    assert (list(params.stop), params.n, params.logprobs, params.ignore_eos) == ([], 0, False, False)


def test_other_values_and_flags_are_sent(client: _Client) -> None:
    params = sent(
        client, "complete", "Hi", "--temperature", "0.5", "--seed", "7", "--stop", "a", "--stop", "b"
    )
    assert (params.temperature, params.seed, list(params.stop)) == (0.5, 7, ["a", "b"])
    params = sent(client, "complete", "Hi", "--n", "2", "--logprobs", "--ignore-eos")
    assert (params.n, params.logprobs, params.ignore_eos) == (2, True, True)


@pytest.mark.parametrize(
    ("options", "placement"),
    [
        ([], None),
        (["--placement", "auto"], "auto"),
        (["--placement", "split"], "split"),
        (["--device", "d1"], "d1"),
    ],
)
def test_placement_and_device_reach_the_client(
    client: _Client, options: list[str], placement: str | None
) -> None:
    sent(client, "complete", "Hello", *options)
    assert client.placements.pop() == placement


def test_device_and_placement_together_are_a_usage_error(client: _Client) -> None:
    result = CliRunner().invoke(main, ["ai", "complete", "Hello", "--device", "d1", "--placement", "auto"])
    assert result.exit_code == 2 and "one or the other" in result.output


@pytest.mark.parametrize("command", ["complete", "chat"])
def test_json_schema_and_grammar_files_become_the_response_format_and_grammar(
    client: _Client, command: str, tmp_path: Any
) -> None:
    schema = tmp_path / "person.json"
    schema.write_text('{"type": "object", "properties": {"name": {"type": "string"}}}')
    params = sent(client, command, "Hello", "--json-schema", str(schema))
    assert params.response_format.type == 3  # RESPONSE_FORMAT_TYPE_JSON_SCHEMA
    assert params.response_format.json_schema.name == "person"
    assert params.response_format.json_schema.strict
    assert json.loads(params.response_format.json_schema.schema)["properties"]["name"] == {"type": "string"}
    assert sent(client, command, "Hello", "--json-object").response_format.type == 2
    grammar = tmp_path / "yn.gbnf"
    grammar.write_text('root ::= "yes" | "no"')
    params = sent(client, command, "Hello", "--grammar", str(grammar))
    assert params.grammar == 'root ::= "yes" | "no"' and not params.HasField("response_format")


def test_only_one_structured_output_option(client: _Client, tmp_path: Any) -> None:
    grammar = tmp_path / "g.gbnf"
    grammar.write_text('root ::= "a"')
    result = CliRunner().invoke(main, ["ai", "complete", "Hi", "--json-object", "--grammar", str(grammar)])
    assert result.exit_code == 2 and "one at most" in result.output
