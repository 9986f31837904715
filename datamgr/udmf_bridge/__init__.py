"""UDMF across paired devices: CROSS_DEVICE data's descriptors ride KV sync (`bridge`, `records`) and its
reads go to the holder over the peer port (`peer`). udmf itself knows nothing of other devices; this
adapter, built by the daemon, connects its store to the KV stores and the device channels.

Its messages are generated from protos/datamgr/sync/v1/udmf_peer.proto (`datamgr.sync.v1`: the proto
package is on the wire, so it stays with the other peer-port protocols).
"""
