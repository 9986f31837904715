"""Devices: identity, discovery on the local network, trust and pairing of peers."""
