"""A network guard for a test's subprocess: every connection outside loopback is refused and recorded.

Python imports ``sitecustomize`` at start-up from ``sys.path``; ``tests/test_offline.py`` puts this
folder first on ``PYTHONPATH`` and names a log file in ``ADAPT_NETWORK_LOG``. A name lookup or a
connection to any host but this machine then fails (``OSError``) and appends one line to the log:
the host and the innermost frames outside the standard library's socket code, so a test names the
library that tried. Without ``ADAPT_NETWORK_LOG`` nothing is installed.
"""

import ipaddress
import os
import socket
import traceback

LOG = os.environ.get("ADAPT_NETWORK_LOG")
LOCAL_NAMES = {None, "", "localhost", "localhost.localdomain", "ip6-localhost"}


def _is_local(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host in LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _refuse(what: str, host) -> None:
    frames = [f for f in traceback.extract_stack()[:-2] if "socket" not in f.filename][-4:]
    where = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno}" for f in reversed(frames))
    with open(LOG, "a") as log:
        log.write(f"{what} {host!r} from {where}\n")
    raise OSError(f"network guard: {what} {host!r} refused (tests/offline_guard)")


if LOG:
    _getaddrinfo, _connect, _connect_ex = socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex

    def getaddrinfo(host, *args, **kwargs):
        if not _is_local(host):
            _refuse("lookup", host)
        return _getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            _refuse("connect", address[0])
        return _connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            _refuse("connect", address[0])
        return _connect_ex(self, address)

    socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex = getaddrinfo, connect, connect_ex
