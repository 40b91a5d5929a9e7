"""``rankguide serve``: an OpenAI-compatible HTTP server over an SRM/LRM pair.

    rankguide serve --srm DIR --lrm DIR [--policy P] [run settings] [--port 8000]
    rankguide serve --model demo                      # the embedded demo pair

Serves ``/v1/chat/completions`` (a RankGuide run; the pair is named ``--model NAME``, by default
``rankguide``, or ``demo``), ``/v1/completions`` (plain continuation by ``NAME-srm`` or
``NAME-lrm``), ``/v1/models`` and ``/health`` on 127.0.0.1 unless ``--host`` says otherwise.
Needs the ``server`` extra (``pip install 'rankguide-graph[server]'``). The port is bound before
the models load, so a busy port fails at once, naming it; the banner is printed once the
server holds the port and the models are loaded.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
from typing import Any

from rankguide_graph.cli.options import add_context_options, context_settings
from rankguide_graph.errors import ConfigError

RENAMED = {"max_answer_tokens": "max_tokens"}
"""Run settings that ``ChatRankGuide`` names differently."""
PER_REQUEST = ("answer_stop",)
"""Run settings a request sets (``stop``), not offered here."""
API_KEY_ENV = "RANKGUIDE_API_KEY"


def register(commands: Any) -> None:
    """Add the ``serve`` subcommand."""
    parser = commands.add_parser(
        "serve",
        help="serve a pair over an OpenAI-compatible HTTP API",
        description="Serve an SRM/LRM pair over an OpenAI-compatible API: /v1/chat/completions "
        "(a RankGuide run), /v1/completions (one model alone: NAME-srm, NAME-lrm), /v1/models, "
        "/health.",
    )
    parser.add_argument("--srm", default=None, help="small reasoning model: directory or hub id")
    parser.add_argument(
        "--lrm",
        default=None,
        help="large reasoning model: directory, hub id, or http://host:port/v1#model (a server)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="'demo' serves the embedded pair; with --srm/--lrm, the pair's name on the API "
        "(default: rankguide)",
    )
    parser.add_argument(
        "--policy", default=argparse.SUPPRESS, help="routing policy (default: rankguide)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require `Authorization: Bearer KEY` on /v1 routes (default: ${API_KEY_ENV})",
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=4,
        help="requests run at once, the others queue (default: 4)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (default: info)",
    )
    add_context_options(parser, skip=("srm", "lrm", "policy", *PER_REQUEST))
    parser.set_defaults(handler=serve)


def build_chat(args: argparse.Namespace) -> Any:
    """The ``ChatRankGuide`` the options describe (errors name the bad option)."""
    from pydantic import ValidationError

    from rankguide_graph.chat import ChatRankGuide

    given = context_settings(args, skip=("srm", "lrm"))
    settings = {RENAMED.get(k, k): v for k, v in given.items()}
    # Settings ChatRankGuide has no field for (device, top_p, lrm_fallback, ...) go through
    # its run_settings.
    extra = {k: settings.pop(k) for k in list(settings) if k not in ChatRankGuide.model_fields}
    if extra:
        settings["run_settings"] = extra
    if args.model == "demo":
        if args.srm or args.lrm:
            raise ConfigError(
                f"--model demo serves the embedded pair: drop --srm (={args.srm!r}) and --lrm "
                f"(={args.lrm!r}), or name your own pair with --model NAME"
            )
    elif not (args.srm and args.lrm):
        raise ConfigError(
            f"--srm (={args.srm!r}) and --lrm (={args.lrm!r}) must both name a model: pass "
            "--srm DIR --lrm DIR, or --model demo for the embedded pair"
        )
    else:
        settings.update(srm=args.srm, lrm=args.lrm)
    try:
        return ChatRankGuide(model=args.model, reasoning=True, **settings)
    except ValidationError as err:
        first = err.errors()[0]
        message = str(first.get("msg", err)).removeprefix("Value error, ")
        raise ConfigError(message) from None


def serve(args: argparse.Namespace) -> int:
    """Load the pair and serve it until interrupted."""
    from rankguide_graph.server._extra import require_server_extra

    require_server_extra()  # a missing extra fails before any model loads
    import uvicorn

    from rankguide_graph.server import create_app

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port (={args.port}) must be in [0, 65535]")
    if args.api_key is not None and not args.api_key.strip():
        raise ConfigError(
            f"--api-key (={args.api_key!r}, or ${API_KEY_ENV}) is empty, which would switch "
            f"authentication off: pass a key, or leave both out to serve without one"
        )
    chat = build_chat(args)
    sock = bind(args.host, args.port)  # a busy port fails here, before the models load
    try:
        app = create_app(chat, api_key=args.api_key, max_concurrent=args.max_concurrent)
        models = app.state.rankguide.models
        singles = ", ".join(repr(s.name) for s in models.singles.values())
        port = sock.getsockname()[1]
        print(
            f"rankguide serve: {models.name!r} (chat), {singles} (completions) on "
            f"http://{_url_host(args.host)}:{port}/v1",
            flush=True,
        )
        config = uvicorn.Config(app, log_level=args.log_level)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or a ``ConfigError`` naming both and the fix."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as err:
        raise ConfigError(f"--host (={host!r}) is not an address of this machine: {err}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"--port {port} on {host} is already in use (another server listens there): "
                "stop it, or pass another --port"
            ) from None
        raise ConfigError(
            f"cannot listen on {host}:{port} ({err.strerror}): pass another --host or --port "
            "(ports below 1024 need root)"
        ) from None
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    """``host`` as written in a URL (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host else host
