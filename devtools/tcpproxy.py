"""A TCP proxy that can be cut: a partition between one process and a server, on loopback.

``cut()`` stops forwarding in both directions without closing anything, so both ends see
what a real partition looks like (a peer that no longer answers, not a reset) until their
own timeouts fire; new connections are accepted and then left hanging too. ``heal()``
forwards again, on new connections only (as after a real partition, the old ones are
dead by then).
"""

from __future__ import annotations

import selectors
import socket
import threading

import psycopg


class Proxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.cut_off = threading.Event()
        self.stopped = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="tcpproxy", daemon=True)
        self._thread.start()

    def cut(self) -> None:
        self.cut_off.set()

    def heal(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                sock.close()
        self.cut_off.clear()

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        self.heal()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_off.is_set():
                with self._lock:  # held open, never answered: a partition, not a refusal
                    self._pairs.append((client, client))
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, server)
        selector.register(server, selectors.EVENT_READ, client)
        try:
            while not self.stopped.is_set():
                if self.cut_off.is_set():  # stop reading: what was sent stays unanswered
                    self.stopped.wait(0.05)
                    continue
                for key, _ in selector.select(timeout=0.05):
                    source = key.fileobj
                    assert isinstance(source, socket.socket)
                    data = source.recv(65536)
                    if not data:
                        return
                    if not self.cut_off.is_set():
                        key.data.sendall(data)
        except OSError:
            return
        finally:
            selector.close()


def proxied_dsn(dsn: str) -> tuple[Proxy, str]:
    """A proxy to the PostgreSQL server a libpq dsn names (TCP), and the dsn through it."""
    options = psycopg.conninfo.conninfo_to_dict(dsn)
    proxy = Proxy(str(options["host"]), int(str(options["port"])))
    return proxy, psycopg.conninfo.make_conninfo("", **{**options, "port": str(proxy.port)})
