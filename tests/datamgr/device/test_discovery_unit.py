"""Discovery's pure parts: TXT encoding and validation of what the network sends, and the peer table's
events driven by a fake clock."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datamgr.device.advert import (
    MAX_CAPABILITIES,
    Advert,
    BadAdvert,
    decode_txt,
    encode_txt,
    instance_name,
)
from datamgr.device.peer_table import DeviceEvents, EventKind, PeerTable
from datamgr.errors import ResourceExhausted

LOCAL = Advert("dev-local", "laptop", 3, "AB:CD:EF", ("datashare", "udmf", "ai=smollm2-135m"))


def wire(txt: dict[str, str]) -> dict[bytes, bytes | None]:
    return {k.encode(): v.encode() for k, v in txt.items()}


# TXT


def test_txt_round_trip() -> None:
    txt, left_out = encode_txt(LOCAL)
    assert left_out == []
    assert txt == {
        "txtvers": "1",
        "id": "dev-local",
        "name": "laptop",
        "pv": "1",
        "sl": "3",
        "fp": "AB:CD:EF",
        "caps": "datashare,udmf,ai=smollm2-135m",
    }
    assert decode_txt(wire(txt)) == (LOCAL, [])


def test_txt_leaves_out_empty_fingerprint_and_no_capabilities() -> None:
    txt, _ = encode_txt(Advert("d1", "n", 1))
    assert "fp" not in txt and "caps" not in txt
    assert decode_txt(wire(txt))[0] == Advert("d1", "n", 1)


def test_capabilities_that_do_not_fit_are_left_out() -> None:
    many = tuple(f"ai=model-{i:03d}-" + "x" * 40 for i in range(10))
    txt, left_out = encode_txt(Advert("d1", "n", 1, capabilities=("datashare", *many, "Bad Cap")))
    assert len(f"caps={txt['caps']}".encode()) <= 255  # one TXT item
    assert txt["caps"].startswith("datashare,ai=model-000-")
    assert "Bad Cap" in left_out and many[-1] in left_out
    assert set(txt["caps"].split(",")) | set(left_out) == {"datashare", *many, "Bad Cap"}


@pytest.mark.parametrize(
    "advert",
    [
        Advert("", "n", 3),
        Advert("has space", "n", 3),
        Advert("x" * 65, "n", 3),
        Advert("d", "", 3),
        Advert("d", "x" * 64, 3),
        Advert("d", "tab\there", 3),
        Advert("d", "n", 0),
        Advert("d", "n", 6),
        Advert("d", "n", 3, fingerprint="has space"),
    ],
)
def test_encoding_refuses_what_peers_would_reject(advert: Advert) -> None:
    with pytest.raises(ValueError):
        encode_txt(advert)


def test_unicode_name_within_63_bytes() -> None:
    name = "Küche-" + "ä" * 28  # 6 + 56 = 62 bytes
    txt, _ = encode_txt(Advert("d", name, 2))
    assert decode_txt(wire(txt))[0].name == name
    with pytest.raises(ValueError):
        encode_txt(Advert("d", name + "ä", 2))  # 64 bytes


GOOD = {"txtvers": "1", "id": "peer-1", "name": "phone", "pv": "1", "sl": "4"}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": None}, "id"),
        ({"id": ""}, "id"),
        ({"id": "a/b"}, "id"),
        ({"id": "x" * 65}, "id"),
        ({"pv": None}, "pv"),
        ({"pv": "one"}, "pv"),
        ({"pv": "0"}, "pv"),
        ({"pv": "99999999"}, "pv"),
        ({"sl": None}, "sl"),
        ({"sl": "6"}, "sl"),
        ({"sl": "SL3"}, "sl"),
        ({"sl": "-1"}, "sl"),
        ({"txtvers": "2"}, "txtvers"),
    ],
)
def test_bad_required_values_invalidate_the_advert(change: dict[str, str | None], reason: str) -> None:
    props = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(BadAdvert, match=reason):
        decode_txt(wire(props))


def test_bad_optional_values_are_dropped_with_a_note() -> None:
    props = wire({**GOOD, "fp": "no spaces allowed", "caps": "kv,,BAD,ai=ok-model,kv,x=" + "y" * 70})
    props[b"name"] = b"\xff\xfe"  # not UTF-8
    advert, notes = decode_txt(props)
    assert advert == Advert("peer-1", "", 4, "", ("kv", "ai=ok-model"))
    assert len(notes) == 4
    assert any("name" in n for n in notes) and any("fingerprint" in n for n in notes)
    assert sum("capability" in n for n in notes) == 2


def test_keys_are_case_insensitive_and_unknown_keys_ignored() -> None:
    props = {b"ID": b"peer-1", b"Name": b"phone", b"PV": b"7", b"sl": b"2", b"future": b"x", b"\xff": b"y"}
    advert, notes = decode_txt(props)
    assert (advert.device_id, advert.name, advert.protocol_version, advert.security_level) == (
        "peer-1",
        "phone",
        7,
        2,
    )
    assert notes == []


def test_a_key_without_value_counts_as_missing() -> None:
    with pytest.raises(BadAdvert, match="sl"):
        decode_txt({**wire(GOOD), b"sl": None})


def test_capability_count_is_capped() -> None:
    caps = ",".join(f"c{i}" for i in range(MAX_CAPABILITIES + 5))
    advert, notes = decode_txt(wire({**GOOD, "caps": caps}))
    assert len(advert.capabilities) == MAX_CAPABILITIES
    assert len(notes) == 5


def test_instance_name_is_one_dns_label() -> None:
    assert instance_name("abc") == "abc._datamgr._tcp.local."
    assert instance_name("x" * 64) == "x" * 63 + "._datamgr._tcp.local."


@given(st.dictionaries(st.binary(max_size=12), st.one_of(st.none(), st.binary(max_size=300)), max_size=12))
def test_decoding_never_fails_other_than_bad_advert(props: dict[bytes, bytes | None]) -> None:
    try:
        advert, _ = decode_txt(props)
    except BadAdvert:
        return
    encode_txt(advert)  # whatever is accepted is valid to advertise again


# the peer table


def table(ttl: float = 10.0, max_peers: int = 8) -> PeerTable:
    return PeerTable("dev-local", ttl, max_peers, jitter=lambda: 0.0)


def peer_advert(n: int, **kw: object) -> Advert:
    return Advert(f"peer-{n}", f"device {n}", 3, **kw)  # type: ignore[arg-type]


def name(n: int) -> str:
    return instance_name(f"peer-{n}")


def kinds(events: list) -> list[tuple[EventKind, str]]:
    return [(e.kind, e.peer.device_id) for e in events]


def test_new_peer_is_online_once() -> None:
    t = table()
    events = t.seen(name(1), peer_advert(1), ("10.0.0.1",), 5000, now=0.0)
    assert kinds(events) == [(EventKind.ONLINE, "peer-1")]
    assert t.seen(name(1), peer_advert(1), ("10.0.0.1",), 5000, now=1.0) == []
    peer = t.get("peer-1")
    assert peer is not None and peer.online and peer.last_seen == 1.0 and peer.port == 5000


def test_own_advert_is_ignored() -> None:
    t = table()
    assert t.seen(instance_name("dev-local"), LOCAL, ("127.0.0.1",), 0, now=0.0) == []
    assert t.peers() == []


@pytest.mark.parametrize(
    "change",
    [
        {"addresses": ("10.0.0.2",)},
        {"port": 6000},
        {"advert": peer_advert(1, capabilities=("ai=smollm2-135m",))},
        {"advert": peer_advert(1, fingerprint="FF")},
    ],
)
def test_changed_address_port_or_advert_is_updated(change: dict) -> None:
    t = table()
    t.seen(name(1), peer_advert(1), ("10.0.0.1",), 5000, now=0.0)
    args = {"advert": peer_advert(1), "addresses": ("10.0.0.1",), "port": 5000, **change}
    events = t.seen(name(1), args["advert"], args["addresses"], args["port"], now=1.0)
    assert kinds(events) == [(EventKind.UPDATED, "peer-1")]
    peer = t.get("peer-1")
    assert peer is not None
    assert (peer.advert, peer.addresses, peer.port) == (args["advert"], args["addresses"], args["port"])


def test_goodbye_makes_offline_and_records_bring_it_back() -> None:
    t = table()
    t.seen(name(1), peer_advert(1), ("10.0.0.1",), 0, now=0.0)
    assert kinds(t.removed(name(1).upper(), now=1.0)) == [(EventKind.OFFLINE, "peer-1")]  # names: any case
    assert t.removed(name(1), now=1.5) == []  # once
    peer = t.get("peer-1")
    assert peer is not None and not peer.online
    assert t.heard(name(1), now=2.0) is False  # offline: the shell resolves it again
    assert kinds(t.seen(name(1), peer_advert(1), ("10.0.0.1",), 0, now=2.1)) == [(EventKind.ONLINE, "peer-1")]
    assert t.removed(name(9), now=3.0) == []  # unknown


def test_not_heard_of_within_the_ttl_goes_offline() -> None:
    t = table(ttl=10.0)
    t.seen(name(1), peer_advert(1), (), 0, now=0.0)
    t.seen(name(2), peer_advert(2), (), 0, now=5.0)
    assert t.expire(now=10.0) == []  # exactly the TTL: still online
    assert t.heard(name(2), now=12.0) is True
    assert kinds(t.expire(now=10.1)) == [(EventKind.OFFLINE, "peer-1")]
    assert t.expire(now=21.9) == []
    assert kinds(t.expire(now=22.1)) == [(EventKind.OFFLINE, "peer-2")]
    assert t.expire(now=100.0) == []
    assert [p.online for p in t.peers()] == [False, False]


def test_refresh_queries_at_80_85_90_95_percent() -> None:
    t = table(ttl=10.0)
    t.seen(name(1), peer_advert(1), (), 0, now=0.0)
    asked = [now for now in (x / 10 for x in range(121)) if t.due_queries(now)]
    assert asked == [8.0, 8.5, 9.0, 9.5]
    t2 = table(ttl=10.0)
    t2.seen(name(1), peer_advert(1), (), 0, now=0.0)
    assert t2.due_queries(8.0) == [name(1)]
    assert t2.heard(name(1), now=8.01)  # the answer: the schedule starts again
    assert t2.due_queries(8.6) == []
    assert t2.due_queries(16.01) == [name(1)]


def test_peers_that_said_goodbye_are_not_asked() -> None:
    t = table(ttl=10.0)
    t.seen(name(1), peer_advert(1), (), 0, now=0.0)
    t.removed(name(1), now=1.0)
    assert t.due_queries(9.0) == []
    assert t.expire(now=50.0) == [] and t.due_queries(60.0) == []


def test_peers_lost_by_timeout_are_still_asked_at_growing_intervals() -> None:
    """A partition: the peer went quiet without a goodbye. Asking for it is what notices the heal."""
    t = table(ttl=10.0)
    t.seen(name(1), peer_advert(1), (), 0, now=0.0)
    assert kinds(t.expire(now=10.5)) == [(EventKind.OFFLINE, "peer-1")]
    asked = [now for now in (10.5 + x / 10 for x in range(50)) if t.due_queries(now)]
    assert asked == pytest.approx([11.5, 12.5, 13.5, 14.5])  # every second at first
    late = [now for now in (140.0 + x / 10 for x in range(3000)) if t.due_queries(now)]
    gaps = [b - a for a, b in itertools.pairwise(late)]
    assert gaps[:3] == pytest.approx([2.0, 4.0, 8.0], abs=0.11) and max(gaps) == pytest.approx(60.0, abs=0.11)
    # the answer brings it back (the shell resolves what `heard` refuses), and the asking stops
    assert t.heard(name(1), now=500.0) is False
    assert kinds(t.seen(name(1), peer_advert(1), (), 0, now=500.1)) == [(EventKind.ONLINE, "peer-1")]
    assert [n for n in (500.2 + x / 10 for x in range(70)) if t.due_queries(n)] == []  # online: at 80%
    # lost again, then a goodbye: no more questions
    t.expire(now=511.0)
    t.removed(name(1), now=511.5)
    assert [n for n in (511.6 + x / 10 for x in range(100)) if t.due_queries(n)] == []


def test_full_table_evicts_the_oldest_offline_peer_else_ignores() -> None:
    t = table(max_peers=2)
    t.seen(name(1), peer_advert(1), (), 0, now=0.0)
    t.seen(name(2), peer_advert(2), (), 0, now=1.0)
    assert t.seen(name(3), peer_advert(3), (), 0, now=2.0) == []  # full of online peers
    t.removed(name(2), now=3.0)
    t.removed(name(1), now=3.0)
    assert kinds(t.seen(name(3), peer_advert(3), (), 0, now=4.0)) == [(EventKind.ONLINE, "peer-3")]
    assert sorted(p.device_id for p in t.peers()) == ["peer-2", "peer-3"]  # peer-1 was heard of first
    assert t.heard(name(1), now=5.0) is False


# the feed


def test_watch_gets_the_table_then_events_and_ends_on_close() -> None:
    async def main() -> None:
        t = table()
        events = DeviceEvents(t)
        events.publish(t.seen(name(1), peer_advert(1), (), 0, now=0.0))
        watch = events.watch()
        assert [p.device_id for p in watch.peers] == ["peer-1"]
        events.publish(t.seen(name(2), peer_advert(2), (), 0, now=1.0))
        events.publish(t.removed(name(1), now=2.0))
        events.close()
        got = [(e.kind, e.peer.device_id) async for e in watch]
        assert got == [(EventKind.ONLINE, "peer-2"), (EventKind.OFFLINE, "peer-1")]
        assert not watch.overflowed
        late = events.watch()
        assert [e async for e in late] == []

    asyncio.run(main())


def test_a_watcher_that_falls_behind_is_dropped_and_watchers_are_limited() -> None:
    async def main() -> None:
        t = table(max_peers=100)
        events = DeviceEvents(t, max_watchers=2, queue_size=3)
        slow = events.watch()
        events.watch()
        with pytest.raises(ResourceExhausted):
            events.watch()
        for n in range(5):
            events.publish(t.seen(name(n), peer_advert(n), (), 0, now=float(n)))
        got = [e.peer.device_id async for e in slow]
        assert got == ["peer-0", "peer-1", "peer-2"] and slow.overflowed
        events.watch()  # the dropped one freed its place

    asyncio.run(main())


# settings


def test_discovery_settings_default_to_loopback_and_refuse_unsafe_interfaces() -> None:
    from pydantic import ValidationError

    from datamgr.config import DiscoverySettings

    d = DiscoverySettings()
    assert (d.enabled, d.interfaces, d.security_level) == (True, ["127.0.0.1"], 3)
    assert d.device_name
    assert DiscoverySettings(interfaces=["10.231.0.1", "fd00::1"]).interfaces == ["10.231.0.1", "fd00::1"]
    for bad in (["0.0.0.0"], ["::"], ["224.0.0.251"], ["eth0"], []):
        with pytest.raises(ValidationError):
            DiscoverySettings(interfaces=bad)
    for level in (0, 6):
        with pytest.raises(ValidationError):
            DiscoverySettings(security_level=level)
    with pytest.raises(ValidationError):
        DiscoverySettings(device_name="x" * 64)
