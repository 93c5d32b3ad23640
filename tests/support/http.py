"""A local HTTP server for the tests that receive webhooks: each POST is answered by a
function of its path, headers and body, on a free port while a block runs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: (path, headers, body) -> the HTTP status to answer with.
Answer = Callable[[str, dict[str, str], bytes], int]


@contextmanager
def serving_posts(answer: Answer) -> Iterator[int]:
    """Serve POSTs on 127.0.0.1 with `answer` (empty bodies back) while the block runs;
    yields the port."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = answer(self.path, dict(self.headers.items()), body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
