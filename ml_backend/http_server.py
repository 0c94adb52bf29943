"""The backend's HTTP server: waitress, so that slow clients cannot tie up request threads.

waitress reads every request completely in one I/O thread (asynchronous sockets) and only then
hands it to one of `Settings.http_threads` worker threads; a client that sends its headers or
body one byte at a time costs an open socket, not a thread, so `/health` and clicks keep being
answered. Bodies above `Settings.max_request_bytes` are refused (413) while being read, bodies
above `_INBUF_OVERFLOW` are buffered in a temporary file rather than memory, connections idle
for `_CHANNEL_TIMEOUT_S` are closed, and at most `_CONNECTION_LIMIT` are open at once.

In production, put a reverse proxy (TLS, request buffering, per-client limits) in front.
"""

from __future__ import annotations

import logging
from typing import Any

from ml_backend.settings import Settings

logger = logging.getLogger(__name__)

_CHANNEL_TIMEOUT_S = 30  # close a connection that sent nothing for this long
_CONNECTION_LIMIT = 200  # open sockets at once; more wait in the listen backlog
_INBUF_OVERFLOW = 1 << 20  # request bodies above 1 MiB are buffered in a temporary file
_CLEANUP_INTERVAL_S = 5


def create_http_server(app: Any, settings: Settings, host: str, port: int) -> Any:
    """Bind a waitress server for a WSGI app (not yet serving; call ``run()``).

    Args:
        app: The WSGI application.
        settings: Request threads and the request size limit.
        host: Interface to listen on.
        port: Port (0: any free port; see the server's ``effective_port``).

    Returns:
        The waitress server: ``run()`` serves until ``close()``.
    """
    from waitress.server import create_server

    return create_server(
        app,
        host=host,
        port=port,
        threads=settings.http_threads,
        channel_timeout=_CHANNEL_TIMEOUT_S,
        connection_limit=_CONNECTION_LIMIT,
        cleanup_interval=_CLEANUP_INTERVAL_S,
        max_request_body_size=settings.max_request_bytes,
        inbuf_overflow=_INBUF_OVERFLOW,
        asyncore_use_poll=True,  # no FD_SETSIZE limit on open sockets
        ident="unsamv2",
        expose_tracebacks=False,
    )
