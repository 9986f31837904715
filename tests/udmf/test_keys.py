"""UDMF keys: made fresh per write, parsed strictly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udmf.errors import InvalidArgument
from udmf.keys import GROUP_ID_ALPHABET, GROUP_ID_LENGTH, Intention, Key, new_key, parse_key

GROUP = "a" * 31 + "Z"


def test_internal_intention_names() -> None:
    assert [i.value for i in Intention] == ["DataHub", "drag", "SystemShare", "Picker", "Menu"]


@pytest.mark.parametrize("intention", list(Intention))
def test_new_key_round_trips(intention: Intention) -> None:
    key = new_key(intention, "com.example.notes")
    text = str(key)
    assert text.startswith(f"udmf://{intention.value}/com.example.notes/")
    assert len(key.group_id) == GROUP_ID_LENGTH
    assert set(key.group_id) <= set(GROUP_ID_ALPHABET)
    assert parse_key(text) == key


def test_group_ids_are_shell_safe_and_fresh() -> None:
    ids = {new_key(Intention.DATA_HUB, "com.a").group_id for _ in range(200)}
    assert len(ids) == 200
    assert GROUP_ID_ALPHABET.isalnum()


def test_parse_example() -> None:
    assert parse_key(f"udmf://DataHub/com.ohos.test/{GROUP}") == Key(
        Intention.DATA_HUB, "com.ohos.test", GROUP
    )
    assert parse_key(f"udmf://drag/a_b+c-d.e/{GROUP}").bundle == "a_b+c-d.e"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "malformed key"),
        ("DataHub/com.a/" + GROUP, "malformed key"),
        ("udmf:/DataHub/com.a/" + GROUP, "malformed key"),
        ("udmf://DataHub/com.a", "malformed key"),
        ("udmf://DataHub//" + GROUP, "malformed key"),
        ("udmf://DataHub/com.a/" + GROUP + "/x", "malformed key"),
        ("udmf://Data-Hub/com.a/" + GROUP, "intention may hold only"),
        ("udmf://Data1/com.a/" + GROUP, "intention may hold only"),
        ("udmf://Drag/com.a/" + GROUP, "unknown intention 'Drag'"),
        ("udmf://datahub/com.a/" + GROUP, "unknown intention 'datahub'"),
        ("udmf://Clipboard/com.a/" + GROUP, "unknown intention"),
        ("udmf://DataHub/com a/" + GROUP, "the bundle may hold only"),
        ("udmf://DataHub/com/a/" + GROUP, "malformed key"),
        ("udmf://DataHub/com.a/" + GROUP[:-1], "group id must be 32"),
        ("udmf://DataHub/com.a/" + GROUP + "b", "group id must be 32"),
        ("udmf://DataHub/com.a/" + GROUP[:-1] + "^", "group id must be 32"),
        ("udmf://DataHub/" + "a" * 300 + "/" + GROUP, "malformed key"),
    ],
)
def test_malformed_keys(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_key(text)


def test_bad_bundle_for_a_new_key() -> None:
    with pytest.raises(InvalidArgument, match="bundle"):
        new_key(Intention.DATA_HUB, "com example")
    with pytest.raises(InvalidArgument, match="bundle"):
        new_key(Intention.DATA_HUB, "")


@given(st.text(max_size=80))
def test_parse_never_fails_otherwise(text: str) -> None:
    try:
        key = parse_key(text)
    except InvalidArgument:
        return
    assert str(key) == text
