"""One listening socket per worker on the service's one port (SO_REUSEPORT), so the kernel
spreads new connections evenly over the workers.

uvicorn's supervisor binds one socket and every worker accepts from it; whichever worker's event
loop is idle at that moment takes the next connection, so a burst of keep-alive connections can
land nearly all on one worker (45/19 at 64 connections was common in the benchmark, 64/0 seen)
and the other core idles. With a socket each in one SO_REUSEPORT group, the kernel hashes every
connection to one of them.

The supervisor hands its workers the sockets it was given; `PerWorkerSocket` is a stand-in that
turns, when a worker unpickles it, into a fresh socket of the group bound in that worker. The
supervisor itself holds a bound but not listening member (`reserve_port`): it keeps the port for
the workers and reports a port already in use at once, and a socket that is not listening is
never given a connection.
"""

from __future__ import annotations

import socket
from typing import Any

BACKLOG = 2048


def _bound(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def reserve_port(host: str, port: int) -> socket.socket:
    """A member of the port's group that never listens (raises OSError if the port is taken)."""
    return _bound(host, port)


def listening_socket(host: str, port: int) -> socket.socket:
    sock = _bound(host, port)
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


class PerWorkerSocket:
    """Pickled to each worker process in place of a socket; unpickled, it is that worker's own
    listening socket on (host, port)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        return listening_socket, (self.host, self.port)


def supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")
