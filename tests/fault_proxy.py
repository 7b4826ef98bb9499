"""A fault-injecting HTTP proxy on 127.0.0.1, in front of the loopback model server.

``FaultProxy(upstream_port, faults)`` forwards requests to the upstream server; the n-th request
to a completions route suffers ``faults[n]`` when there is one:

* ``"429"``: HTTP 429 with ``Retry-After: <retry_after>`` (not forwarded);
* ``"500"``, ``"503"``: that status (not forwarded);
* ``"reset"``: the connection is closed with a TCP reset before any answer;
* ``("delay", s)``: forwarded after ``s`` seconds;
* ``"ok"`` or ``None``: forwarded.

Other routes (``/tokenize``) are always forwarded. Bounded: after ``max_requests`` requests it
answers 503 to everything, so a runaway client loop ends; ``close()`` (or the context manager)
stops it.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from loopback_server import LocalServer


class FaultProxy(LocalServer):
    def __init__(
        self,
        upstream_port: int,
        faults: list[Any] = (),
        *,
        retry_after: str = "1",
        max_requests: int = 2000,
        port: int = 0,
    ) -> None:
        self.upstream_port = upstream_port
        self.faults = list(faults)
        self.retry_after = retry_after
        self.max_requests = max_requests
        self.seen: list[str] = []  # what each completions request got
        self.retry_counts: list[str | None] = []  # the client's retry header of each
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fault = None
                if self.path.endswith("completions"):
                    with owner.lock:
                        n = len(owner.seen)
                        fault = owner.faults[n] if n < len(owner.faults) else None
                        if n >= owner.max_requests:
                            fault = "503"
                        owner.seen.append(str(fault or "ok"))
                        owner.retry_counts.append(self.headers.get("x-stainless-retry-count"))
                if fault == "reset":
                    # SO_LINGER 0: close() sends RST instead of FIN
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault == "429":
                    msg = b'{"error": {"message": "rate limited", "code": 429}}'
                    return self._answer(429, msg, {"Retry-After": owner.retry_after})
                if fault in ("500", "502", "503", "504"):
                    msg = b'{"error": {"message": "injected fault", "code": %s}}' % fault.encode()
                    return self._answer(int(fault), msg)
                if isinstance(fault, tuple) and fault[0] == "delay":
                    time.sleep(fault[1])
                conn = http.client.HTTPConnection("127.0.0.1", owner.upstream_port, timeout=60)
                try:
                    conn.request("POST", self.path, body, {"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    data = resp.read()
                    status = resp.status
                finally:
                    conn.close()
                try:
                    self._answer(status, data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout): nothing to answer

        self._start(Handler, port)
