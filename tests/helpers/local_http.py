"""A file server on 127.0.0.1 for download tests: a real `http.server` whose replies a test crafts.

It serves the files under a folder with HTTP Range and If-Range (a strong ETag from the file's bytes and a
Last-Modified from its time), and a test can make it misbehave the ways real servers and networks do: drop the
connection mid-file, ignore Range, answer 416 to anything, report another file length in Content-Range, send no or a
garbage Content-Length, trickle the body, go silent, or hold the first request until the test lets it go (so
another process can be started meanwhile). Each request is recorded with the headers that matter.

It runs in daemon threads for the duration of a ``with`` block and stops at its end; a held or silent handler waits
on an event the block's end sets, so no test ends with a thread still sending.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Request:
    path: str
    range: str | None
    if_range: str | None


@dataclass
class ServerState:
    root: Path
    drop_after: int | None = None  # bytes of body to send before closing the connection (first request only)
    ignore_range: bool = False  # answer every request with the whole file (200)
    always_416: bool = False  # answer every Range request with 416 (Content-Range: bytes */<real length>)
    range_total: int | None = None  # the length a 206's Content-Range claims, instead of the real one
    length_header: str = "exact"  # "exact", "none" (the body ends when the connection closes) or a literal value
    validators: bool = True  # send ETag and Last-Modified (and honour If-Range)
    trickle: tuple[int, float] | None = None  # (bytes, seconds): send that many bytes, wait, ... until the end
    stall_after: int | None = None  # bytes of body to send, then nothing until the server stops (first request only)
    hold_first: bool = False  # the first request waits for `release` before it is answered
    requests: list[Request] = field(default_factory=list)
    first_arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)


def etag_of(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:16] + '"'


def _handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 30  # a stuck client cannot keep a handler alive for ever
        wbufsize = 1 << 16  # buffered: the headers leave with the first piece of body, in one write, at a flush

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            number = len(state.requests)
            state.requests.append(Request(self.path, self.headers.get("Range"), self.headers.get("If-Range")))
            if number == 0:
                state.first_arrived.set()
                if state.hold_first:
                    state.release.wait(60)
            path = state.root / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            etag, modified = etag_of(data), formatdate(path.stat().st_mtime, usegmt=True)
            start = self._range_start(len(data), etag, modified)
            if start is None:
                return  # answered 416
            self.send_response(206 if start else 200)
            if start:
                total = state.range_total if state.range_total is not None else len(data)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{total}")
            if state.validators:
                self.send_header("ETag", etag)
                self.send_header("Last-Modified", modified)
            body = data[start:]
            if state.length_header == "exact":
                self.send_header("Content-Length", str(len(body)))
            elif state.length_header != "none":
                self.send_header("Content-Length", state.length_header)
            self.end_headers()
            try:
                self._send(body, first=number == 0)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up: that is what some tests want
                pass

        def _range_start(self, size: int, etag: str, modified: str) -> int | None:
            """Where the body starts (0: the whole file); None after answering 416."""
            rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
            if not rng or state.ignore_range:
                return 0
            if if_range is not None and (not state.validators or if_range not in (etag, modified)):
                return 0  # the file changed since (or cannot be checked): the whole file, as RFC 9110 says
            start = int(rng.split("=")[1].split("-")[0])
            if state.always_416 or start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            return start

        def _send(self, body: bytes, *, first: bool) -> None:
            if first and state.drop_after is not None:
                self.wfile.write(body[: state.drop_after])
                self.wfile.flush()
                self.close_connection = True
                return
            if first and state.stall_after is not None:
                self.wfile.write(body[: state.stall_after])
                self.wfile.flush()
                state.stopping.wait(60)  # silent until the test ends (the client gives up long before)
                return
            if state.trickle is not None:
                step, pause = state.trickle
                for i in range(0, len(body), step):
                    if state.stopping.is_set():
                        return
                    self.wfile.write(body[i : i + step])
                    self.wfile.flush()
                    time.sleep(pause)
                return
            self.wfile.write(body)

    return Handler


@contextmanager
def serve(root: Path, **options: object) -> Iterator[tuple[str, ServerState]]:
    """Serve the files under `root`; yields (base URL, state)."""
    state = ServerState(root, **options)  # type: ignore[arg-type]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", state
    finally:
        state.stopping.set()
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
