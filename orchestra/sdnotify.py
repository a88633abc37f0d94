"""Readiness and state for systemd (``Type=notify``): the sd_notify datagram protocol.

systemd passes the path of a datagram socket in ``NOTIFY_SOCKET``; a daemon sends
newline-separated ``KEY=VALUE`` assignments to it: ``READY=1`` once it serves,
``RELOADING=1`` (with ``MONOTONIC_USEC``) then ``READY=1`` around a reload, ``STOPPING=1``
when it begins to stop, ``STATUS=…`` for ``systemctl status``. Outside systemd the
variable is unset and every call does nothing.

The variable is taken out of the environment when first read, so nothing the daemon
starts (a player's scores) can speak for it. A failed send is logged once and never
stops the daemon: readiness is a courtesy to the supervisor, not a condition of service.
"""

from __future__ import annotations

import os
import socket
import time

from orchestra import log

logger = log.get("sdnotify")
_address: str | None = None
_taken = False
_failed = False


def _socket_address() -> str | None:
    global _address, _taken
    if not _taken:
        _taken = True
        _address = os.environ.pop("NOTIFY_SOCKET", None) or None
    return _address


def notify(**fields: str | int) -> bool:
    """Send ``KEY=VALUE`` lines (``notify(READY=1, STATUS="serving")``); True if sent."""
    global _failed
    address = _socket_address()
    if address is None or not fields:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as err:
        if not _failed:
            _failed = True
            logger.warning("sd_notify_failed", socket=address.replace("\0", "@"), error=str(err))
        return False
    return True


def ready(status: str) -> bool:
    return notify(READY=1, STATUS=status)


def reloading() -> bool:
    """Before a reload; ``ready`` again once it is done."""
    return notify(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)


def stopping() -> bool:
    return notify(STOPPING=1, STATUS="stopping")


def status(text: str) -> bool:
    return notify(STATUS=text)
