"""SRP-6a (RFC 5054), the password-authenticated key exchange behind pairing.

A six-digit code has 20 bits: anything sent that an eavesdropper or a man in the middle could check a
guess against (a hash or HMAC of the code) gives the code away in a second of offline search. With
SRP, each run of the protocol lets an active attacker test one guess, and a passive one none; both
sides end with the same key only if they used the same code. Nothing here does I/O.

The 3072-bit group is RFC 5054's (RFC 3526 group 15, generator 5), hashed with SHA-256; the 1024-bit
group with SHA-1 exists for RFC 5054's Appendix B test vectors only.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

_N3072 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864D87602733EC86A64521F2B18177B200C"
    "BBE117577A615D6C770988C0BAD946E208E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF",
    16,
)
_N1024 = int(
    "EEAF0AB9ADB38DD69C33F80AFA8FC5E86072618775FF3C0B9EA2314C9C256576D674DF7496EA81D3383B4813D692C6E0"
    "E0D5D8E250B98BE48E495C1D6089DAD15DC7D7B46154D6B6CE8EF4AD69B15D4982559B297BCF1885C529F566660E57EC"
    "68EDBC3C05726CC02FD4CBF4976EAA9AFD5138FE8376435B9FC61D2FC0EB06E3",
    16,
)


@dataclass(frozen=True, slots=True)
class Group:
    N: int
    g: int
    hash_name: str

    @property
    def size(self) -> int:
        return (self.N.bit_length() + 7) // 8

    def pad(self, value: int) -> bytes:
        return value.to_bytes(self.size, "big")

    def H(self, *parts: bytes) -> bytes:
        h = hashlib.new(self.hash_name)
        for part in parts:
            h.update(part)
        return h.digest()

    def Hint(self, *parts: bytes) -> int:
        return int.from_bytes(self.H(*parts), "big")

    @property
    def k(self) -> int:
        return self.Hint(self.pad(self.N), self.pad(self.g))


GROUP_3072 = Group(_N3072, 5, "sha256")
GROUP_1024_SHA1 = Group(_N1024, 2, "sha1")  # RFC 5054 Appendix B test vectors only


class SrpError(ValueError):
    """The other side sent a value that would break the exchange (e.g. A = 0 mod N)."""


def private_key(group: Group, salt: bytes, identity: bytes, password: bytes) -> int:
    """x = H(s | H(I | ":" | P))."""
    return group.Hint(salt, group.H(identity, b":", password))


def verifier(group: Group, salt: bytes, identity: bytes, password: bytes) -> int:
    """v = g^x: what the side that shows the code keeps, instead of the code, during the exchange."""
    return pow(group.g, private_key(group, salt, identity, password), group.N)


def check_public(group: Group, data: bytes) -> int:
    """A peer's SRP public value (A or B) as a number; SrpError unless it is in 1..N-1."""
    if len(data) != group.size:
        raise SrpError(f"SRP public value must be {group.size} bytes, got {len(data)}")
    value = int.from_bytes(data, "big")
    if value % group.N == 0 or value >= group.N:
        raise SrpError("SRP public value out of range")
    return value


def _secret() -> int:
    return secrets.randbits(256) | 1


class Server:
    """The side that shows the code (B in RFC 5054)."""

    def __init__(self, group: Group, v: int, b: int | None = None) -> None:
        self.group = group
        self._v = v
        self._b = b if b is not None else _secret()
        self.B = (group.k * v + pow(group.g, self._b, group.N)) % group.N

    @property
    def public(self) -> bytes:
        return self.group.pad(self.B)

    def premaster(self, client_public: bytes) -> int:
        g = self.group
        A = check_public(g, client_public)
        u = g.Hint(g.pad(A), g.pad(self.B))
        if u == 0:
            raise SrpError("SRP scrambling parameter u is 0")
        return pow(A * pow(self._v, u, g.N), self._b, g.N)

    def key(self, client_public: bytes) -> bytes:
        """The session key K = H(PAD(S)); raises SrpError for a bad client value."""
        return self.group.H(self.group.pad(self.premaster(client_public)))


class Client:
    """The side the code is typed into (A in RFC 5054)."""

    def __init__(self, group: Group, identity: bytes, password: bytes, a: int | None = None) -> None:
        self.group = group
        self._identity = identity
        self._password = password
        self._a = a if a is not None else _secret()
        self.A = pow(group.g, self._a, group.N)

    @property
    def public(self) -> bytes:
        return self.group.pad(self.A)

    def premaster(self, salt: bytes, server_public: bytes) -> int:
        g = self.group
        B = check_public(g, server_public)
        u = g.Hint(g.pad(self.A), g.pad(B))
        if u == 0:
            raise SrpError("SRP scrambling parameter u is 0")
        x = private_key(g, salt, self._identity, self._password)
        return pow((B - g.k * pow(g.g, x, g.N)) % g.N, self._a + u * x, g.N)

    def key(self, salt: bytes, server_public: bytes) -> bytes:
        return self.group.H(self.group.pad(self.premaster(salt, server_public)))
