"""HOST:PORT addresses, with nothing heavy imported: the settings check their TCP listener with it at
start, before `datamgr.launch` starts probing mDNS (`datamgr.connection`, where the SDKs' TLS needs it
too, imports grpc)."""

from __future__ import annotations

import ipaddress


def is_loopback(address: str) -> bool:
    """Whether a HOST:PORT (or [v6]:PORT) address is on this machine's loopback interface."""
    host = address.rpartition(":")[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
