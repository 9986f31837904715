"""Replication of KV stores between trusted devices: the HLC, the device-level rule, the protocol
messages and the transport-agnostic sync engine (`datamgr.sync.engine`).

Nothing is re-exported here: `datamgr.kv.storage` imports `datamgr.sync.hlc`, and the engine imports
`datamgr.kv.storage`, so this package's `__init__` stays import-free to keep that order acyclic.
"""
