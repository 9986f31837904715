"""Replication of KV stores between trusted devices: the HLC, the device-level rule, the protocol
messages, the transport-agnostic sync engine (`datamgr.sync.engine`), its gRPC transport over the
peer port (`datamgr.sync.transport`, protos in `datamgr.sync.v1`) and the daemon's scheduling of
sessions (`datamgr.sync.scheduler`).

Nothing is re-exported here: `datamgr.kv.storage` imports `datamgr.sync.hlc`, and the engine imports
`datamgr.kv.storage`, so this package's `__init__` stays import-free to keep that order acyclic.
"""
