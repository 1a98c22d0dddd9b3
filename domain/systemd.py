"""The systemd notify protocol (sd_notify): state lines sent as datagrams to $NOTIFY_SOCKET.

Outside systemd (no NOTIFY_SOCKET) every call does nothing, so the server runs the same way
from a terminal, a container or a unit.
"""
import logging
import os
import socket

log = logging.getLogger("systemd")


def socket_address(text):
    """The address in NOTIFY_SOCKET: a path, or '@name' for Linux's abstract namespace."""
    if text.startswith("@"):
        return "\0" + text[1:]
    return text


def watchdog_interval(environ):
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC, as sd_watchdog_enabled advises),
    or None when systemd expects none from this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):  # the watchdog is meant for another process of the unit
        return None
    return int(usec) / 2 / 1_000_000


class SystemdNotifier:
    """Tells the service manager how the service is doing: ready, stopping, alive, status text."""

    def __init__(self, address=None):
        self._address = address
        self._socket = None
        if address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # A full receive queue must not stall the event loop; a lost ping is the lesser harm.
            self._socket.setblocking(False)

    @classmethod
    def from_environment(cls, environ=None):
        environ = os.environ if environ is None else environ
        text = environ.get("NOTIFY_SOCKET", "")
        return cls(socket_address(text) if text else None)

    @property
    def enabled(self):
        return self._socket is not None

    def notify(self, *fields):
        """Sends 'KEY=value' fields in one datagram; returns whether it was sent."""
        if self._socket is None:
            return False
        try:
            self._socket.sendto("\n".join(fields).encode(), self._address)
            return True
        except OSError as e:
            log.warning("systemd notify socket refused %s: %s", fields[0].split("=")[0], e)
            return False

    def ready(self, status):
        return self.notify("READY=1", f"STATUS={status}")

    def stopping(self, status):
        return self.notify("STOPPING=1", f"STATUS={status}")

    def watchdog(self):
        return self.notify("WATCHDOG=1")

    def close(self):
        if self._socket is not None:
            self._socket.close()
            self._socket = None
