"""The optional ``server`` extra: fastapi and uvicorn are imported only when the server is used."""

from __future__ import annotations

import importlib

from rankguide_graph.errors import RankGuideError

EXTRA_HINT = "pip install 'rankguide-graph[server]'"
"""How to install what the server needs."""


class ServerDependencyError(RankGuideError, ImportError):
    """fastapi or uvicorn is missing: the ``server`` extra is not installed."""


def require_server_extra() -> None:
    """Import fastapi and uvicorn, or raise a one-line error naming the extra to install."""
    for name in ("fastapi", "uvicorn"):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ServerDependencyError(
                f"`rankguide serve` needs the {name!r} package, which could not be imported "
                f"({err}): install the server extra with `{EXTRA_HINT}`"
            ) from None
