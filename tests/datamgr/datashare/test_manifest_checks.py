"""Manifest defaults and URIs: what a database cannot store as given, or urlsplit would quietly change,
is refused; the boundary values that can be stored are accepted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from datamgr.bundles import check_bundle
from datamgr.datashare.manifest import parse_manifest
from datamgr.datashare.uri import check_name, parse_proxy_uri, parse_uri
from datamgr.errors import InvalidArgument


def manifest(*columns: dict[str, Any], **top: Any) -> dict[str, Any]:
    table = {"name": "t", "primary_key": "id", "columns": [{"name": "id", "type": "integer"}, *columns]}
    return {"bundle": "com.example.a", "stores": [{"name": "main", "tables": [table]}], **top}


def default(column_type: str, value: Any) -> str:
    return json.dumps(manifest({"name": "c", "type": column_type, "default": value}))


@pytest.mark.parametrize(
    ("column_type", "value"),
    [
        ("integer", (1 << 63) - 1),
        ("integer", -(1 << 63)),
        ("real", 1.7976931348623157e308),
        ("real", -5),
        ("real", 10**300),
        ("text", "line one\nline two\ttabbed"),
        ("text", "名前 🙂"),
        ("boolean", False),
    ],
)
def test_defaults_a_database_stores_are_accepted(column_type: str, value: Any) -> None:
    parsed = parse_manifest(default(column_type, value))
    assert parsed.stores[0].tables[0].column("c").default == value


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (default("integer", 1 << 63), "64-bit"),
        (default("integer", -(1 << 63) - 1), "64-bit"),
        (default("real", 10**400), "finite"),
        (default("real", 1.0).replace("1.0", "1e999"), "finite"),
        (default("real", 1.0).replace("1.0", "-1e999"), "finite"),
        (default("real", 1.0).replace("1.0", "NaN"), "NaN is not a JSON number"),
        (default("real", 1.0).replace("1.0", "Infinity"), "Infinity is not a JSON number"),
        (default("real", 1.0).replace("1.0", "-Infinity"), "-Infinity is not a JSON number"),
        (default("integer", 1.0).replace("1.0", "1e30"), "is not a integer"),
        (default("text", "a\x00b"), "NUL"),
        (default("text", "\ud800"), "lone surrogate"),
        (json.dumps(manifest(read_permission="p\x00")), "NUL"),
        (json.dumps({"bundle": "com.example.a", "stores": [], "\x00": 1}), "NUL"),
        ("[" * 5000 + "]" * 5000, "nests too deeply"),
        (json.dumps(manifest(bundle="com.example.a\n")), "invalid bundle name"),
        (json.dumps(manifest({"name": "c\n", "type": "text"})), "invalid column name"),
    ],
)
def test_what_cannot_be_stored_as_given_is_refused(text: str, says: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_manifest(text)
    assert says in info.value.message
    assert "manifest" in info.value.message


@pytest.mark.parametrize(
    "uri",
    [
        "datashare:///com.example.a/main/t\t",
        "datashare:///com.example.a/main/t\n",
        "datashare:///com.exa\nmple.a/main/t",
        "datashare:///com.example.a/ma\tin/t",
        "\ndatashare:///com.example.a/main/t",
        "datashare:///com.example.a/main/t\x00",
        "datashare:///com.example.a/main/t\x7f",
    ],
)
def test_control_characters_anywhere_in_a_uri_are_refused(uri: str) -> None:
    with pytest.raises(InvalidArgument, match="control character"):
        parse_uri(uri)
    proxy = uri.replace("datashare:///", "datashareproxy://")
    with pytest.raises(InvalidArgument):
        parse_proxy_uri(proxy)


def test_a_trailing_newline_does_not_pass_the_name_patterns() -> None:
    with pytest.raises(InvalidArgument):
        check_bundle("com.example.a\n")
    with pytest.raises(InvalidArgument):
        check_name("people\n")
    with pytest.raises(InvalidArgument):
        parse_proxy_uri("datashareproxy://com.example.a/weather\n")
    assert parse_proxy_uri("datashareproxy://com.example.a/weather").path == "weather"
    assert parse_uri("datashare:///com.example.a/main/t").table == "t"
