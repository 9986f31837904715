"""Pairing's pure logic: SRP against RFC 5054, the code proof bound to both certificates, attempts,
and window expiry on a fake clock."""

from __future__ import annotations

import pytest

from datamgr.device import _srp
from datamgr.device.pairing import (
    GROUP,
    Initiator,
    PairingDesk,
    PairingWindow,
    WindowState,
    check_code,
    new_code,
)
from datamgr.errors import AlreadyExists, FailedPrecondition, InvalidArgument, Unauthenticated

A_FP = "aa" * 32  # the initiator's certificate fingerprint
B_FP = "bb" * 32  # the responder's
M_FP = "cc" * 32  # a man in the middle's


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _h(text: str) -> int:
    return int("".join(text.split()), 16)


def test_srp_matches_rfc5054_appendix_b() -> None:
    g = _srp.GROUP_1024_SHA1
    salt = bytes.fromhex("BEB25379D1A8581EB5A727673A2441EE")
    assert g.k == _h("7556AA045AEF2CDD07ABAF0F665C3E818913186F")
    assert _srp.private_key(g, salt, b"alice", b"password123") == _h(
        "94B7555AABE9127CC58CCF4993DB6CF84D16C124"
    )
    v = _srp.verifier(g, salt, b"alice", b"password123")
    assert v == _h(
        "7E273DE8696FFC4F4E337D05B4B375BEB0DDE1569E8FA00A9886D8129BADA1F1822223CA1A605B530E379BA4729FDC59"
        "F105B4787E5186F5C671085A1447B52A48CF1970B4FB6F8400BBF4CEBFBB168152E08AB5EA53D15C1AFF87B2B9DA6E04"
        "E058AD51CC72BFC9033B564E26480D78E955A5E29E7AB245DB2BE315E2099AFB"
    )
    client = _srp.Client(
        g, b"alice", b"password123", a=_h("60975527035CF2AD1989806F0407210BC81EDC04E2762A56AFD529DDDA2D4393")
    )
    server = _srp.Server(g, v, b=_h("E487CB59D31AC550471E81F00F6928E01DDA08E974A004F49E61F5D105284D20"))
    expected_a = _h(
        "61D5E490F6F1B79547B0704C436F523DD0E560F0C64115BB72557EC44352E8903211C04692272D8B2D1A5358A2CF1B6E"
        "0BFCF99F921530EC8E39356179EAE45E42BA92AEACED825171E1E8B9AF6D9C03E1327F44BE087EF06530E69F66615261"
        "EEF54073CA11CF5858F0EDFDFE15EFEAB349EF5D76988A3672FAC47B0769447B"
    )
    expected_b = _h(
        "BD0C61512C692C0CB6D041FA01BB152D4916A1E77AF46AE105393011BAF38964DC46A0670DD125B95A981652236F99D9"
        "B681CBF87837EC996C6DA04453728610D0C6DDB58B318885D7D82C7F8DEB75CE7BD4FBAA37089E6F9C6059F388838E7A"
        "00030B331EB76840910440B1B27AAEAEEB4012B7D7665238A8E3FB004B117B58"
    )
    assert client.public == g.pad(expected_a)
    assert server.public == g.pad(expected_b)
    premaster = _h(
        "B0DC82BABCF30674AE450C0287745E7990A3381F63B387AAF271A10D233861E359B48220F7C4693C9AE12B0A6F67809F"
        "0876E2D013800D6C41BB59B6D5979B5C00A172B4A2A5903A0BDCAF8A709585EB2AFAFA8F3499B200210DCC1F10EB3394"
        "3CD67FC88A2F39A4BE5BEC4EC0A3212DC346D7E474B29EDE8A469FFECA686E5A"
    )
    assert client.premaster(salt, server.public) == premaster
    assert server.premaster(client.public) == premaster


@pytest.mark.parametrize("value", ["0", "N", "N+1"])
def test_srp_refuses_public_values_out_of_range(value: str) -> None:
    # A = 0 or N makes the server's key 0 whatever the code: the classic SRP bypass
    g = GROUP
    number = {"0": 0, "N": g.N, "N+1": g.N + 1}[value]
    server = _srp.Server(g, _srp.verifier(g, b"salt", b"id", b"123456"))
    client = _srp.Client(g, b"id", b"123456")
    with pytest.raises(_srp.SrpError, match="out of range"):
        server.key(number.to_bytes(g.size, "big"))
    with pytest.raises(_srp.SrpError, match="out of range"):
        client.key(b"salt", number.to_bytes(g.size, "big"))
    with pytest.raises(_srp.SrpError, match="bytes"):
        server.key(b"\x01")


def test_srp_keys_match_only_for_the_same_code() -> None:
    g = GROUP
    server = _srp.Server(g, _srp.verifier(g, b"salt", b"id", b"123456"))
    right, wrong = _srp.Client(g, b"id", b"123456"), _srp.Client(g, b"id", b"123457")
    assert right.key(b"salt", server.public) == server.key(right.public)
    assert wrong.key(b"salt", server.public) != server.key(wrong.public)


def _pair(
    window: PairingWindow, code: str, a_fp: str = A_FP, b_seen_by_a: str = B_FP
) -> tuple[Initiator, bytes]:
    initiator = Initiator(code, a_fp, b_seen_by_a)
    attempt = window.begin(initiator.public)
    proof = initiator.prove(window.salt, attempt.b_public)
    return initiator, window.finish(attempt, a_fp, B_FP, proof)


def test_the_right_code_pairs_and_both_proofs_check() -> None:
    closed: list[PairingWindow] = []
    window = PairingWindow(120, 3, Clock(), on_close=closed.append)
    initiator, responder_proof = _pair(window, window.code)
    initiator.verify(responder_proof)
    assert window.state is WindowState.PAIRED
    assert closed == []  # the owner hears once the device is trusted
    window.complete("device")
    assert closed == [window] and window.paired_with == "device"
    with pytest.raises(FailedPrecondition, match="another device has just paired"):
        window.begin(Initiator(window.code, A_FP, B_FP).public)


def test_a_forged_responder_proof_is_refused() -> None:
    window = PairingWindow(120, 3, Clock())
    initiator, responder_proof = _pair(window, window.code)
    with pytest.raises(Unauthenticated, match="did not prove"):
        initiator.verify(bytes(32))
    with pytest.raises(Unauthenticated):
        Initiator(window.code, A_FP, B_FP).verify(responder_proof)  # never ran the exchange


def test_wrong_codes_use_up_the_attempts_then_the_window_closes() -> None:
    closed: list[PairingWindow] = []
    window = PairingWindow(120, 3, Clock(), code="111111", on_close=closed.append)
    with pytest.raises(Unauthenticated, match=r"wrong pairing code \(2 attempts left\)"):
        _pair(window, "222222")
    with pytest.raises(Unauthenticated, match=r"\(1 attempts left\)"):
        _pair(window, "333333")
    assert window.state is WindowState.OPEN
    with pytest.raises(Unauthenticated, match="last attempt: the pairing window is closed"):
        _pair(window, "444444")
    assert window.state is WindowState.EXHAUSTED and closed == [window]
    with pytest.raises(FailedPrecondition, match="too many wrong codes"):
        _pair(window, "111111")  # even the right code, now


def test_an_abandoned_exchange_uses_up_an_attempt() -> None:
    window = PairingWindow(120, 2, Clock())
    window.begin(Initiator(window.code, A_FP, B_FP).public)  # never finished
    _pair(window, window.code)  # the second attempt still works
    assert window.attempts_left == 0 and window.state is WindowState.PAIRED


def test_a_man_in_the_middle_fails_even_with_the_right_code() -> None:
    # A pinned M's certificate (M relays to B, presenting its own): the transcripts differ
    window = PairingWindow(120, 3, Clock())
    with pytest.raises(Unauthenticated, match="wrong pairing code"):
        _pair(window, window.code, b_seen_by_a=M_FP)
    # M, having relayed A's messages, claims A's exchange as its own: B binds M's certificate
    window = PairingWindow(120, 3, Clock())
    initiator = Initiator(window.code, A_FP, B_FP)
    attempt = window.begin(initiator.public)
    proof = initiator.prove(window.salt, attempt.b_public)
    with pytest.raises(Unauthenticated):
        window.finish(attempt, M_FP, B_FP, proof)


def test_a_window_expires_on_its_clock() -> None:
    clock = Clock()
    closed: list[PairingWindow] = []
    window = PairingWindow(120, 3, clock, on_close=closed.append)
    clock.now += 119.9
    assert window.state is WindowState.OPEN and window.remaining_s() == pytest.approx(0.1)
    attempt = window.begin(Initiator(window.code, A_FP, B_FP).public)
    clock.now += 0.1
    assert window.state is WindowState.EXPIRED and window.remaining_s() == 0
    assert closed == [window]
    with pytest.raises(FailedPrecondition, match="expired"):
        window.finish(attempt, A_FP, B_FP, bytes(32))  # an exchange begun in time ends with the window
    with pytest.raises(FailedPrecondition, match="expired"):
        window.begin(Initiator(window.code, A_FP, B_FP).public)
    assert closed == [window]  # told once


def test_an_exchange_finishes_once() -> None:
    window = PairingWindow(120, 3, Clock(), code="123456")
    initiator = Initiator("654321", A_FP, B_FP)
    attempt = window.begin(initiator.public)
    proof = initiator.prove(window.salt, attempt.b_public)
    with pytest.raises(Unauthenticated):
        window.finish(attempt, A_FP, B_FP, proof)
    with pytest.raises(InvalidArgument, match="already finished"):
        window.finish(attempt, A_FP, B_FP, proof)


def test_bad_srp_values_are_refused_before_using_an_attempt() -> None:
    window = PairingWindow(120, 3, Clock())
    with pytest.raises(InvalidArgument, match="bad pairing request"):
        window.begin(bytes(GROUP.size))  # A = 0
    assert window.attempts_left == 3
    initiator = Initiator(window.code, A_FP, B_FP)
    with pytest.raises(InvalidArgument, match="bad pairing challenge"):
        initiator.prove(window.salt, GROUP.pad(GROUP.N - 1)[:-1])  # wrong length


def test_a_cancelled_window_refuses() -> None:
    window = PairingWindow(120, 3, Clock())
    window.cancel()
    with pytest.raises(FailedPrecondition, match="owner closed it"):
        window.begin(Initiator(window.code, A_FP, B_FP).public)


def test_the_desk_holds_one_window_at_a_time() -> None:
    clock = Clock()
    desk = PairingDesk(60, 3, clock)
    with pytest.raises(FailedPrecondition, match="not accepting pairing"):
        desk.current()
    window = desk.open()
    assert desk.current() is window and window.duration_s == 60
    with pytest.raises(AlreadyExists):
        desk.open()
    clock.now += 61
    with pytest.raises(FailedPrecondition, match="expired"):
        desk.current()
    second = desk.open()  # an expired window makes room for a new one, with a new code and salt
    assert second.salt != window.salt
    desk.close()
    assert second.state is WindowState.CANCELLED


def test_codes_are_six_ascii_digits() -> None:
    for _ in range(50):
        code = new_code()
        assert check_code(code) == code and len(code) == 6
    for bad in ("12345", "1234567", "abcdef", "12 456", "١٢٣٤٥٦"):
        with pytest.raises(InvalidArgument):
            check_code(bad)
