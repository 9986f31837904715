"""The AI service over HTTP: an OpenAI-compatible API (`/v1/models`, `/v1/completions`,
`/v1/chat/completions`, streamed as server-sent events) and llama-server's `/health`, `/metrics`,
`/tokenize` and `/detokenize`, served beside gRPC on the daemon's event loop (`[http]` settings).

Apps authenticate with the same tokens (`Authorization: Bearer <app token>`) and are served by
AiService's own methods: the same permission, per-app limits, placement, revocation and metrics.
`_requests` maps OpenAI's bodies onto aicap.v1 requests, `_answers` the chunks onto OpenAI's answers,
`_errors` errors onto OpenAI's error object and HTTP statuses, `_app` holds the routes, `_server` runs
uvicorn.
"""

from __future__ import annotations

from datamgr.ai_http._server import HttpApi

__all__ = ["HttpApi"]
