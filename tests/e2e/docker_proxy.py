"""A Unix-socket proxy in front of the Docker Engine that can hold back one answer.

Everything passes through untouched, except that the Engine's answer to the first request
matching `hold` is kept from the client: the Engine did the work (created or started the
container), the client (an agent) never hears of it and waits. A test then knows exactly where
the agent is when it kills it, instead of sleeping and hoping.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from pathlib import Path


class HoldingDockerProxy:
    def __init__(self, path: Path, hold: bytes, upstream: str = "/var/run/docker.sock") -> None:
        """`hold`: a regular expression for the request line to hold the answer to, e.g.
        rb"POST /[^ ]*containers/create"."""
        self.path = path
        self.upstream = upstream
        self._hold = re.compile(rb"^" + hold, re.M)
        self.request_seen = threading.Event()  # the request went to the Engine
        self.answer_held = threading.Event()  # the Engine answered it; the client did not get it
        self._armed = True
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(16)
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.upstream)
            holding = threading.Event()
            with self._lock:
                self._sockets += [client, upstream]
            for pump, args in ((self._requests, (client, upstream, holding)),
                               (self._answers, (upstream, client, holding))):
                t = threading.Thread(target=pump, args=args, daemon=True)
                t.start()
                self._threads.append(t)

    def _requests(self, client: socket.socket, upstream: socket.socket, holding: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    if self._armed and self._hold.search(data):
                        # One request per exchange (no pipelining): what comes back answers this one.
                        self._armed = False
                        holding.set()
                        self.request_seen.set()
                upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    def _answers(self, upstream: socket.socket, client: socket.socket, holding: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if holding.is_set():
                    self.answer_held.set()
                    continue  # kept from the client, for good
                client.sendall(data)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
        for t in self._threads:
            t.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
