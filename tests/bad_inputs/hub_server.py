"""A fake Hub on 127.0.0.1 that misbehaves at the HTTP level (what the in-memory FakeHub cannot):
it accepts the connection and never answers, answers 500 or 429 to everything, answers 200 with
HTML where JSON is promised or with JSON of another shape, or redirects to itself forever. Each
request is counted.

`xet`: a file download that goes through Xet storage (hf_xet's own transport, not litetext's
client). The file's metadata names a Xet hash and a token route, the token route names this
server's `/cas` as the Xet endpoint, and then every other request (the Xet reconstruction query,
the plain-HTTP download, the agent registry) hangs. `paths` lists what was asked, so a test can
prove that hf_xet itself was reached."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

MODES = ("hang", "500", "429", "garbage", "shape", "redirect", "xet")
XET_HASH = "ab" * 32
CAS_PREFIX = "/cas"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:  # quiet: the test reads the command's output, not ours
        pass

    def _answer(self) -> None:
        self.server.requests += 1
        self.server.paths.append(f"{self.command} {self.path}")
        mode = self.server.mode
        if mode == "xet" and self._xet_metadata():
            return
        if mode in ("hang", "xet"):
            self.server.release.wait(60)  # holds the connection, sends nothing, until the test ends
            return
        if mode == "garbage":
            self._send(200, b"<html><body>Welcome to the captive portal</body></html>", "application/json")
        elif mode == "shape":
            self._send(200, b'[{"type": "file", "size": "big"}, 7]', "application/json")
        elif mode == "redirect":
            self.send_response(302)
            self.send_header("Location", self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(int(mode), b'{"error": "try again later"}', "application/json", retry_after=mode == "429")

    def _xet_metadata(self) -> bool:
        """The answers that send a download to Xet storage (and litetext's reachability probe); False
        for anything else."""
        if self.command == "HEAD" and self.path == "/":
            self._send(200, b"", "text/html")
            return True
        if self.command == "HEAD" and "/resolve/" in self.path:
            self._send(200, b"", "application/octet-stream", headers={
                "X-Repo-Commit": "c" * 40, "ETag": '"' + "e" * 64 + '"', "Content-Length": "1048576",
                "X-Xet-Hash": XET_HASH, "X-Xet-Refresh-Route": f"{self.server.url}/api/xet-read-token",
            })
            return True
        if self.path.startswith("/api/xet-read-token"):
            self._send(200, b"{}", "application/json", headers={
                "X-Xet-Cas-Url": self.server.url + CAS_PREFIX, "X-Xet-Access-Token": "xet-token",
                "X-Xet-Token-Expiration": str(int(time.time()) + 3600),
            })
            return True
        return False

    def _send(self, status: int, body: bytes, kind: str, retry_after: bool = False, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", (headers or {}).get("Content-Length", str(len(body))))
        if retry_after:
            self.send_header("Retry-After", "1")
        for name, value in (headers or {}).items():
            if name != "Content-Length":
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = do_PUT = _answer


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, mode: str):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode, self.requests, self.release = mode, 0, threading.Event()
        self.paths: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def fake_hub_server(mode: str) -> Iterator[_Server]:
    assert mode in MODES
    server = _Server(mode)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """An endpoint where nothing listens: what `push` sees offline (connection refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
