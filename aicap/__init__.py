"""aicap: the on-device LLM served to every app by the DatamgrService (issue 3).

The SDK's names are exported here and loaded on first use, so that `import aicap.engine` (the daemon's
side) does not load the client, and importing the client never loads llama.cpp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aicap._conversation import AsyncSession, PinnedContext, Session
    from aicap._messages import (
        Citation,
        Completion,
        CompletionChunk,
        Context,
        EngineStats,
        Histogram,
        Model,
        Sample,
        Sampling,
        Stats,
        ToolCall,
        Usage,
        assemble,
    )
    from aicap.client import AiClient, AsyncAiClient, AsyncCompletionStream, CompletionStream
    from aicap.splitting import split_text

_MODULE_OF = {
    "AiClient": "aicap.client",
    "AsyncAiClient": "aicap.client",
    "AsyncCompletionStream": "aicap.client",
    "AsyncSession": "aicap._conversation",
    "Citation": "aicap._messages",
    "Completion": "aicap._messages",
    "CompletionChunk": "aicap._messages",
    "Context": "aicap._messages",
    "CompletionStream": "aicap.client",
    "EngineStats": "aicap._messages",
    "Histogram": "aicap._messages",
    "Model": "aicap._messages",
    "PinnedContext": "aicap._conversation",
    "Sample": "aicap._messages",
    "Sampling": "aicap._messages",
    "Session": "aicap._conversation",
    "Stats": "aicap._messages",
    "ToolCall": "aicap._messages",
    "Usage": "aicap._messages",
    "assemble": "aicap._messages",
    "split_text": "aicap.splitting",
}

__all__ = [
    "AiClient",
    "AsyncAiClient",
    "AsyncCompletionStream",
    "AsyncSession",
    "Citation",
    "Completion",
    "CompletionChunk",
    "CompletionStream",
    "Context",
    "EngineStats",
    "Histogram",
    "Model",
    "PinnedContext",
    "Sample",
    "Sampling",
    "Session",
    "Stats",
    "ToolCall",
    "Usage",
    "assemble",
    "split_text",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'aicap' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
