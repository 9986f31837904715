from aicap.v1 import aicap_pb2 as _aicap_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PeerPrefillRequest(_message.Message):
    __slots__ = ("app", "model_digest", "tokens")
    APP_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    app: str
    model_digest: str
    tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, app: _Optional[str] = ..., model_digest: _Optional[str] = ..., tokens: _Optional[_Iterable[int]] = ...) -> None: ...

class KvChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class PeerGenerateRequest(_message.Message):
    __slots__ = ("app", "model_digest", "tokens", "params", "skip_draws", "replayed")
    APP_FIELD_NUMBER: _ClassVar[int]
    MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SKIP_DRAWS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    app: str
    model_digest: str
    tokens: _containers.RepeatedScalarFieldContainer[int]
    params: _aicap_pb2.SamplingParams
    skip_draws: int
    replayed: int
    def __init__(self, app: _Optional[str] = ..., model_digest: _Optional[str] = ..., tokens: _Optional[_Iterable[int]] = ..., params: _Optional[_Union[_aicap_pb2.SamplingParams, _Mapping]] = ..., skip_draws: _Optional[int] = ..., replayed: _Optional[int] = ...) -> None: ...

class PeerTokens(_message.Message):
    __slots__ = ("tokens", "kv_state")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    KV_STATE_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[PeerToken]
    kv_state: bytes
    def __init__(self, tokens: _Optional[_Iterable[_Union[PeerToken, _Mapping]]] = ..., kv_state: _Optional[bytes] = ...) -> None: ...

class PeerToken(_message.Message):
    __slots__ = ("index", "token", "logprob", "finish_reason", "cached_tokens")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    index: int
    token: int
    logprob: float
    finish_reason: _aicap_pb2.FinishReason
    cached_tokens: int
    def __init__(self, index: _Optional[int] = ..., token: _Optional[int] = ..., logprob: _Optional[float] = ..., finish_reason: _Optional[_Union[_aicap_pb2.FinishReason, str]] = ..., cached_tokens: _Optional[int] = ...) -> None: ...

class GetLoadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PeerModel(_message.Message):
    __slots__ = ("name", "digest", "n_ctx", "loaded")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    N_CTX_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    name: str
    digest: str
    n_ctx: int
    loaded: bool
    def __init__(self, name: _Optional[str] = ..., digest: _Optional[str] = ..., n_ctx: _Optional[int] = ..., loaded: _Optional[bool] = ...) -> None: ...

class PeerLoad(_message.Message):
    __slots__ = ("serves", "models", "requests_waiting", "requests_running", "max_running", "tokens_waiting", "kv_free", "prefill_tokens_per_s", "decode_step_s", "recent_tokens_per_s", "peer_running", "peer_max_concurrent", "cache_type", "kv_keep_free")
    SERVES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_WAITING_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_FIELD_NUMBER: _ClassVar[int]
    TOKENS_WAITING_FIELD_NUMBER: _ClassVar[int]
    KV_FREE_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    DECODE_STEP_S_FIELD_NUMBER: _ClassVar[int]
    RECENT_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    PEER_RUNNING_FIELD_NUMBER: _ClassVar[int]
    PEER_MAX_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    CACHE_TYPE_FIELD_NUMBER: _ClassVar[int]
    KV_KEEP_FREE_FIELD_NUMBER: _ClassVar[int]
    serves: bool
    models: _containers.RepeatedCompositeFieldContainer[PeerModel]
    requests_waiting: int
    requests_running: int
    max_running: int
    tokens_waiting: int
    kv_free: float
    prefill_tokens_per_s: float
    decode_step_s: float
    recent_tokens_per_s: float
    peer_running: int
    peer_max_concurrent: int
    cache_type: str
    kv_keep_free: int
    def __init__(self, serves: _Optional[bool] = ..., models: _Optional[_Iterable[_Union[PeerModel, _Mapping]]] = ..., requests_waiting: _Optional[int] = ..., requests_running: _Optional[int] = ..., max_running: _Optional[int] = ..., tokens_waiting: _Optional[int] = ..., kv_free: _Optional[float] = ..., prefill_tokens_per_s: _Optional[float] = ..., decode_step_s: _Optional[float] = ..., recent_tokens_per_s: _Optional[float] = ..., peer_running: _Optional[int] = ..., peer_max_concurrent: _Optional[int] = ..., cache_type: _Optional[str] = ..., kv_keep_free: _Optional[int] = ...) -> None: ...

class KeepKvResponse(_message.Message):
    __slots__ = ("handle",)
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    handle: str
    def __init__(self, handle: _Optional[str] = ...) -> None: ...

class ReturnKvRequest(_message.Message):
    __slots__ = ("handle",)
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    handle: str
    def __init__(self, handle: _Optional[str] = ...) -> None: ...

class DropKvRequest(_message.Message):
    __slots__ = ("handle",)
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    handle: str
    def __init__(self, handle: _Optional[str] = ...) -> None: ...

class DropKvResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
