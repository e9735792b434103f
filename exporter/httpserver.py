"""Serving an ASGI app with uvicorn, either inside the running event loop or on its own thread.

The exporter serves its own endpoints and, in demo mode, the simulator from the same process and
loop; tests run the simulator on a thread so synchronous test code can talk to it over loopback.
Binding the socket ourselves lets callers ask for port 0 and learn the real port before serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from exporter.config import split_listen


def bind(listen: str) -> socket.socket:
    host, port = split_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio turns on TCP_NODELAY only for sockets that say
    # they are TCP, and accepted sockets inherit it. Without it every response written in two
    # parts (headers, body) waited ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signals to its host: the exporter owns shutdown order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def make_server(app: Any, **options: Any) -> EmbeddedServer:
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", **options)
    return EmbeddedServer(config)


def on_stop_signals(callback: Callable[[], object]) -> None:
    """Run ``callback`` on SIGINT or SIGTERM in the running loop (main thread only)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, callback)


def on_reload_signal(callback: Callable[[], object]) -> None:
    """SIGHUP, as Prometheus and its exporters use it: re-read the configuration."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, callback)


class ThreadedServer:
    """A uvicorn server on a daemon thread, for synchronous callers (tests, benchmarks)."""

    def __init__(self, app: Any, listen: str = "127.0.0.1:0") -> None:
        self.sock = bind(listen)
        self.url = f"http://{address(self.sock)}"
        self.server = make_server(app)
        self.thread = threading.Thread(target=self._run, name="uvicorn", daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        while not self.server.started and self.thread.is_alive():
            threading.Event().wait(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
