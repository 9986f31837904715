"""Replication of KV stores between trusted devices: the protocol messages, the transport-agnostic sync
engine (`datamgr.sync.engine`), its gRPC transport over the peer port (`datamgr.sync.transport`, protos
in `datamgr.sync.v1`) and the daemon's scheduling of sessions (`datamgr.sync.scheduler`).

It stands on `datamgr.kv` (the stores it replicates, and the Sync call's types in `datamgr.kv.sync_api`)
and `datamgr.device` (trusted peers and their channels); neither imports it. The clock and the
device-level rule it applies are shared: `datamgr.hlc`, `datamgr.security_levels`.
"""
