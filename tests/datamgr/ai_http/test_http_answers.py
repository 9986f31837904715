"""AiService's chunks as OpenAI's answers: streamed events and whole answers, n samples, usage summed
over them, held-back text skipped, log-probabilities in both of OpenAI's shapes."""

from __future__ import annotations

from aicap.v1 import aicap_pb2 as pb
from datamgr.ai_http._answers import Answer

PIECES = {1: b"He", 2: b"llo", 3: b"!"}


def chunk(
    index: int, text: str, token: int, finish: int = 0, completion: int = 0, lp: float = -0.5
) -> pb.CompletionChunk:
    c = pb.CompletionChunk(index=index, text=text, token_ids=[token], logprobs=[lp], finish_reason=finish)
    if finish:
        c.usage.CopyFrom(pb.Usage(prompt_tokens=7, completion_tokens=completion, cached_tokens=4))
    return c


def test_a_streamed_chat_sends_the_role_first_skips_held_back_text_and_ends_with_usage() -> None:
    a = Answer("chat", "m", 1, PIECES.__getitem__, include_usage=True)
    first = a.add(chunk(0, "He", 1))
    assert first is not None and first["choices"][0]["delta"] == {"role": "assistant", "content": "He"}
    assert first["usage"] is None and first["object"] == "chat.completion.chunk"
    assert a.add(chunk(0, "", 2)) is None  # a character not whole yet
    last = a.add(chunk(0, "llo!", 3, pb.FINISH_REASON_LENGTH, 3))
    assert last is not None and last["choices"][0] == {
        "index": 0,
        "delta": {"content": "llo!"},
        "logprobs": None,
        "finish_reason": "length",
    }
    usage = a.usage_event()
    assert usage["choices"] == [] and usage["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 4},
    }


def test_n_samples_are_whole_choices_and_their_tokens_are_summed() -> None:
    a = Answer("chat", "m", 2, PIECES.__getitem__)
    a.add(chunk(1, "!", 3))
    a.add(chunk(0, "He", 1, pb.FINISH_REASON_STOP, 1))
    a.add(chunk(1, "He", 1, pb.FINISH_REASON_LENGTH, 2))
    whole = a.whole()
    assert [c["message"]["content"] for c in whole["choices"]] == ["He", "!He"]
    assert [c["finish_reason"] for c in whole["choices"]] == ["stop", "length"]
    assert whole["usage"]["completion_tokens"] == 3 and whole["object"] == "chat.completion"


def test_chat_logprobs_hold_the_chosen_token_alone_among_the_alternatives() -> None:
    a = Answer("chat", "m", 1, PIECES.__getitem__, logprobs=True, top=3)
    event = a.add(chunk(0, "", 2, lp=-1.0))  # no text yet, but a log-probability to tell
    assert event is not None
    (entry,) = event["choices"][0]["logprobs"]["content"]
    alone = {"token": "llo", "logprob": -1.0, "bytes": list(b"llo")}
    assert entry == {**alone, "top_logprobs": [alone]}
    assert a.whole()["choices"][0]["logprobs"]["content"] == [entry]


def test_completion_logprobs_in_the_legacy_shape() -> None:
    a = Answer("text", "m", 1, PIECES.__getitem__, logprobs=True, top=0)
    a.add(chunk(0, "He", 1, lp=-0.25))
    a.add(chunk(0, "llo", 2, pb.FINISH_REASON_STOP, 2, lp=-0.5))
    whole = a.whole()
    (choice,) = whole["choices"]
    assert whole["object"] == "text_completion" and choice["text"] == "Hello"
    assert choice["logprobs"] == {
        "tokens": ["He", "llo"],
        "token_logprobs": [-0.25, -0.5],
        "top_logprobs": None,
        "text_offset": [0, 2],
    }


def test_tool_calls_end_a_sample_in_both_shapes() -> None:
    calls = [pb.ToolCall(id="call_1", name="weather", arguments='{"city":"Paris"}')]
    last = chunk(0, "", 3, pb.FINISH_REASON_TOOL_CALLS, 9)
    last.tool_calls.extend(calls)
    streamed = Answer("chat", "m", 1, PIECES.__getitem__)
    assert streamed.add(chunk(0, "", 1)) is None  # a constrained answer's text is held to its end
    event = streamed.add(last)
    assert event is not None
    (choice,) = event["choices"]
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
    }
    assert choice["delta"] == {"role": "assistant", "content": None, "tool_calls": [{"index": 0, **call}]}
    assert choice["finish_reason"] == "tool_calls"
    (whole,) = streamed.whole()["choices"]
    assert whole["message"] == {"role": "assistant", "content": None, "tool_calls": [call]}
