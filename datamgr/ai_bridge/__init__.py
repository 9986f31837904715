"""The on-device LLM across paired devices: a device runs generations for a paired device's apps
(`servicer`: AiPeerService on the mutual-TLS peer port, within per-device limits, `limits`), and this
device offloads its apps' generations to paired devices (`peers`: their loads for placement, and the
streamed generation). aicap knows nothing of devices; it declares what it needs (`aicap._host.Peers`)
and decides placement itself (`aicap.placement`).

Its messages are generated from protos/datamgr/sync/v1/ai_peer.proto (`datamgr.sync.v1`, with the other
peer-port protocols).
"""
