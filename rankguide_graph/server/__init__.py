"""An OpenAI-compatible HTTP server over an SRM/LRM pair (``rankguide serve``).

- ``POST /v1/chat/completions``: a RankGuide run (the pair's name, ``"rankguide"`` by default),
  streamed or not, reasoning in ``reasoning_content``, routing in the extra ``rankguide`` field.
- ``POST /v1/completions``: plain continuation by one model (``NAME-srm`` or ``NAME-lrm``) with
  a prefix-reusing KV cache, logprobs and vLLM's extensions: what a remote step-by-step client
  sends a vLLM server.
- ``GET /v1/models``, ``GET /health``.

Needs the ``server`` extra (fastapi, uvicorn): ``pip install 'rankguide-graph[server]'``;
importing this package without it raises :class:`ServerDependencyError` saying so.
"""

from rankguide_graph.server._extra import ServerDependencyError, require_server_extra

require_server_extra()

from rankguide_graph.server.app import ServerState, create_app  # noqa: E402

__all__ = ["ServerDependencyError", "ServerState", "create_app", "require_server_extra"]
