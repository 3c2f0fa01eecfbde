"""Why the server could not listen on its address, said in one line a newcomer can act on.

A port already taken is the most common first-run mistake (a second `tidings serve`, or
another Pusher-compatible server on 6001). It is a configuration error, so it ends start-up
the way every other one does: one line on stderr and exit status 2, no traceback.
"""

from __future__ import annotations

import errno
import socket

from tidings.config import ConfigError

_HINTS = {
    errno.EADDRINUSE: "address already in use (another process is listening there)",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
    errno.EADDRNOTAVAIL: "no network interface has this address (see --host or TIDINGS_HOST)",
}


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_error(host: str, port: int, exc: OSError) -> ConfigError:
    """The ConfigError for a failed bind of ``host:port``."""
    reason = _HINTS.get(exc.errno or 0, exc.strerror or str(exc))
    return ConfigError(
        f"cannot listen on {address(host, port)}: {reason}; "
        "choose another port with --port or TIDINGS_PORT"
    )


def check_can_listen(host: str, port: int) -> None:
    """Raise the ConfigError `listen_error` describes if ``host:port`` cannot be bound now.

    Binds the way asyncio's server does (SO_REUSEADDR, so connections in TIME_WAIT from a
    previous run do not count) but without SO_REUSEPORT, so that a listener already there
    is found, whoever owns it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise listen_error(host, port, exc) from None
