"""Whether an address can be listened on, asked before a server loads its model."""

from __future__ import annotations

import os
import socket

from ..errors import TqError


def check_port(host: str, port: int) -> None:
    """Fail, naming the address and the reason, if nothing could listen on host:port now."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise TqError(f"cannot listen on {host}:{port}: {reason}") from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's pick), for a server started next."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
