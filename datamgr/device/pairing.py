"""Pairing with a short code: the window on the device that shows it, and the proofs both sides send.

Device B's owner opens a `PairingWindow` (120 s, 3 attempts) and reads its 6-digit code to device A's
owner, who types it. A and B run SRP-6a with the code as the password (`_srp`): A sends its SRP
public value, B answers with a salt and its own; both derive a key K that only matches if both used
the same code. A proves it with HMAC-SHA256(K, transcript), B answers with its own HMAC, where the
transcript binds both certificate fingerprints (as A and B each saw them) and every SRP value: a man
in the middle with other certificates gets different transcripts on both legs and fails, and no
message lets anyone test code guesses offline. Each started exchange uses up one attempt; the window
closes when one succeeds, when the attempts are used up, when it expires or when its owner leaves.

Pure logic: the clock is injected, nothing here does I/O.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from datamgr.device import _srp
from datamgr.errors import AlreadyExists, FailedPrecondition, InvalidArgument, Unauthenticated

CODE_DIGITS = 6
GROUP = _srp.GROUP_3072
_SRP_IDENTITY = b"datamgr pairing v1"
_SALT_BYTES = 16


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def check_code(code: str) -> str:
    if len(code) != CODE_DIGITS or not code.isascii() or not code.isdigit():
        raise InvalidArgument(f"a pairing code is {CODE_DIGITS} digits, got {code!r}")
    return code


def transcript(
    initiator_fingerprint: str, responder_fingerprint: str, salt: bytes, a_public: bytes, b_public: bytes
) -> bytes:
    """What both proofs cover: both certificates and the whole SRP exchange, each part length-prefixed."""
    h = hashlib.sha256()
    for part in (
        _SRP_IDENTITY,
        bytes.fromhex(initiator_fingerprint),
        bytes.fromhex(responder_fingerprint),
        salt,
        a_public,
        b_public,
    ):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


def initiator_proof(key: bytes, transcript_hash: bytes) -> bytes:
    return hmac.new(key, b"initiator" + transcript_hash, hashlib.sha256).digest()


def responder_proof(key: bytes, transcript_hash: bytes) -> bytes:
    return hmac.new(key, b"responder" + transcript_hash, hashlib.sha256).digest()


class Initiator:
    """Device A's side of one exchange: the code typed by its owner, against one responder."""

    def __init__(self, code: str, fingerprint: str, responder_fingerprint: str) -> None:
        self._srp = _srp.Client(GROUP, _SRP_IDENTITY, check_code(code).encode())
        self._fingerprint = fingerprint
        self._responder = responder_fingerprint
        self._expected: bytes | None = None

    @property
    def public(self) -> bytes:
        return self._srp.public

    def prove(self, salt: bytes, b_public: bytes) -> bytes:
        """Our proof for the responder's challenge (InvalidArgument for a malformed challenge)."""
        try:
            key = self._srp.key(salt, b_public)
        except _srp.SrpError as exc:
            raise InvalidArgument(f"the device sent a bad pairing challenge: {exc}") from None
        t = transcript(self._fingerprint, self._responder, salt, self._srp.public, b_public)
        self._expected = responder_proof(key, t)
        return initiator_proof(key, t)

    def verify(self, proof: bytes) -> None:
        """Unauthenticated unless the responder knew the code and saw the same two certificates."""
        if self._expected is None or not hmac.compare_digest(self._expected, proof):
            raise Unauthenticated(
                "the device did not prove it knows the code: not paired (a man in the middle?)"
            )


class WindowState(enum.Enum):
    OPEN = "open"
    PAIRED = "paired"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"
    CANCELLED = "cancelled"


_CLOSED_BECAUSE = {
    WindowState.PAIRED: "another device has just paired through it",
    WindowState.EXPIRED: "it expired",
    WindowState.EXHAUSTED: "too many wrong codes",
    WindowState.CANCELLED: "its owner closed it",
}


@dataclass(slots=True)
class Attempt:
    """One started exchange in a window (device B's SRP state for it)."""

    a_public: bytes
    server: _srp.Server
    finished: bool = False

    @property
    def b_public(self) -> bytes:
        return self.server.public


@dataclass(slots=True)
class PairingWindow:
    """The owner-opened window on device B during which one device may pair with the code."""

    duration_s: float
    attempts: int = 3
    clock: Callable[[], float] = time.monotonic
    level: int = 1  # the security level the owner confirms for the device that pairs through it
    code: str = field(default_factory=new_code)
    on_close: Callable[[PairingWindow], None] | None = None
    salt: bytes = field(default_factory=lambda: secrets.token_bytes(_SALT_BYTES))
    paired_with: object = None  # what `complete` was given: the new trusted device
    attempts_left: int = field(init=False)
    expires_at: float = field(init=False)
    _state: WindowState = field(init=False, default=WindowState.OPEN)
    _verifier: int = field(init=False)

    def __post_init__(self) -> None:
        check_code(self.code)
        self.attempts_left = self.attempts
        self.expires_at = self.clock() + self.duration_s
        self._verifier = _srp.verifier(GROUP, self.salt, _SRP_IDENTITY, self.code.encode())

    @property
    def state(self) -> WindowState:
        if self._state is WindowState.OPEN and self.clock() >= self.expires_at:
            self._close(WindowState.EXPIRED)
        return self._state

    def remaining_s(self) -> float:
        return max(0.0, self.expires_at - self.clock()) if self.state is WindowState.OPEN else 0.0

    def _close(self, state: WindowState) -> None:
        if self._state is WindowState.OPEN:
            self._state = state
            if self.on_close is not None:
                self.on_close(self)

    def check_open(self) -> None:
        state = self.state
        if state is not WindowState.OPEN:
            raise FailedPrecondition(
                f"the pairing window on this device has closed ({_CLOSED_BECAUSE[state]}): "
                "its owner must open a new one (datamgr devices pair --show-code)"
            )

    def begin(self, a_public: bytes) -> Attempt:
        """Starts an exchange for the initiator's SRP value; uses up one attempt."""
        self.check_open()
        try:
            _srp.check_public(GROUP, a_public)
        except _srp.SrpError as exc:
            raise InvalidArgument(f"bad pairing request: {exc}") from None
        self.attempts_left -= 1
        return Attempt(a_public, _srp.Server(GROUP, self._verifier))

    def finish(
        self, attempt: Attempt, initiator_fingerprint: str, responder_fingerprint: str, proof: bytes
    ) -> bytes:
        """Checks the initiator's proof and returns ours; Unauthenticated for a wrong code.

        A good proof closes the window (PAIRED); call `complete` once the device is trusted."""
        if attempt.finished:
            raise InvalidArgument("this pairing exchange is already finished")
        attempt.finished = True
        self.check_open()
        try:
            key = attempt.server.key(attempt.a_public)
        except _srp.SrpError as exc:
            raise InvalidArgument(f"bad pairing request: {exc}") from None
        t = transcript(
            initiator_fingerprint, responder_fingerprint, self.salt, attempt.a_public, attempt.b_public
        )
        if not hmac.compare_digest(initiator_proof(key, t), proof):
            if self.attempts_left <= 0:
                self._close(WindowState.EXHAUSTED)
                raise Unauthenticated(
                    "wrong pairing code; that was the last attempt: the pairing window is closed"
                )
            raise Unauthenticated(f"wrong pairing code ({self.attempts_left} attempts left)")
        self._state = WindowState.PAIRED  # no other exchange may finish; the owner hears in `complete`
        return responder_proof(key, t)

    def complete(self, device: object) -> None:
        """The device that proved the code is trusted now (None: trusting it failed): tells the owner."""
        assert self._state is WindowState.PAIRED
        self.paired_with = device
        if self.on_close is not None:
            self.on_close(self)

    def cancel(self) -> None:
        self._close(WindowState.CANCELLED)


class PairingDesk:
    """Holds the one pairing window a device may have open."""

    def __init__(self, duration_s: float, attempts: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.duration_s = duration_s
        self.attempts = attempts
        self._clock = clock
        self._window: PairingWindow | None = None

    def open(self, on_close: Callable[[PairingWindow], None] | None = None, level: int = 1) -> PairingWindow:
        if self._window is not None and self._window.state is WindowState.OPEN:
            raise AlreadyExists(
                "a pairing window is already open on this device (another `datamgr devices pair "
                "--show-code` shows its code); close it first"
            )
        self._window = PairingWindow(self.duration_s, self.attempts, self._clock, level, on_close=on_close)
        return self._window

    def close(self) -> None:
        if self._window is not None:
            self._window.cancel()

    def current(self) -> PairingWindow:
        """The open window; FailedPrecondition if there is none (pairing is refused outside windows)."""
        window = self._window
        if window is None:
            raise FailedPrecondition(
                "this device is not accepting pairing: its owner must first run "
                "`datamgr devices pair --show-code` there"
            )
        window.check_open()
        return window
