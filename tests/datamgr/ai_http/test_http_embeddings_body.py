"""POST /v1/embeddings bodies as EmbedRequests: a string or a list of strings; token arrays, an empty
input and unknown encodings refused with the field named."""

from __future__ import annotations

from typing import Any

import pytest

from aicap.v1 import aicap_pb2 as pb
from datamgr.ai_http._requests import BadRequest, EmbeddingsBody, parse


def request(body: dict[str, Any]) -> pb.EmbedRequest:
    parsed: EmbeddingsBody = parse(EmbeddingsBody, body)
    return parsed.request()


def refused(body: dict[str, Any]) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        request(body)
    return info.value


def test_a_string_or_a_list_of_strings() -> None:
    assert list(request({"input": "hello"}).texts) == ["hello"]
    req = request(
        {"input": ["a", "b"], "model": "all-minilm-l6-v2", "encoding_format": "base64", "user": "u"}
    )
    assert (list(req.texts), req.model) == (["a", "b"], "all-minilm-l6-v2")
    assert request({"input": [""]}).texts == [""]  # the service decides about empty texts


def test_what_is_refused() -> None:
    assert "token arrays" in refused({"input": [101, 2023, 102]}).message
    assert "token arrays" in refused({"input": [[101, 2023, 102]]}).message
    assert refused({"input": []}).param == "input"
    assert refused({"input": ["a", 1]}).param == "input"
    assert refused({"input": "a", "encoding_format": "int8"}).param == "encoding_format"
    assert refused({"input": "a", "dimensions": 0}).param == "dimensions"
    assert refused({"model": "x"}).param == "input"
