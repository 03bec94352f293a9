"""One local HTTP server for the download tests (127.0.0.1 only, bounded in time and size).

``RangeServer().files[name] = bytes`` serves ``server.url + name`` with HTTP Range support
(206 with ``Content-Range``, 416 past the end) and records ``requests`` as (name, Range header).
Misbehaviours for the hostile cases: ``mode[name]`` = ``endless`` (a body without end, capped
at ``ENDLESS_CAP``), ``trickle`` (one byte per 50 ms for 3 s), ``ignore-range`` (200 with the
whole body), ``range-from-zero`` / ``range-whole-body`` / ``range-earlier`` (a 206 whose
Content-Range or body is not the span asked for), ``range-total`` (a declared total one byte
too long); ``drop[name] = k``: the next answer stops after k bytes.
"""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RangeServer:
    """Serves ``files`` on 127.0.0.1; ``mode[name]`` makes it lie about that file:

    ``endless``: 200 without a length, bytes until ``ENDLESS_CAP``; ``trickle``: one byte
    every 50 ms for at most 3 s; ``range-from-zero``: a 206 whose Content-Range and body start
    at 0 whatever was asked; ``range-earlier``: one that starts 1000 bytes before the offset
    asked (and says so); ``range-whole-body``: a 206 claiming the asked offset but sending
    the whole file; ``ignore-range``: 200 with the whole file; ``range-total``: a 206 with
    the asked span of a file declared 1 byte longer. ``drop[name] = k``: the next answer stops
    after k bytes."""

    ENDLESS_CAP = 4 << 20

    def __init__(self, files: dict[str, bytes] | None = None):
        self.files: dict[str, bytes] = dict(files or {})
        self.mode: dict[str, str] = {}
        self.drop: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 - http.server's API
                name = self.path.rsplit("/", 1)[-1]
                rng = self.headers.get("Range")
                outer.requests.append((name, rng))
                data, mode = outer.files.get(name), outer.mode.get(name)
                if data is None:
                    self.send_error(404)
                    return
                if mode == "endless":
                    return self._endless()
                if mode == "trickle":
                    return self._trickle(data)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if rng and start >= len(data) and mode is None:
                    self.send_response(416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if rng and mode == "range-from-zero":
                    self._send(206, data, f"bytes 0-{len(data) - 1}/{len(data)}")
                elif rng and mode == "range-whole-body":
                    self._send(206, data, f"bytes {start}-{len(data) - 1}/{len(data)}")
                elif rng and mode == "range-earlier":
                    self._send(206, data[start - 1000:],
                               f"bytes {start - 1000}-{len(data) - 1}/{len(data)}")
                elif rng and mode == "range-total":
                    self._send(206, data[start:], f"bytes {start}-{len(data) - 1}/{len(data) + 1}")
                elif rng and mode != "ignore-range":
                    self._send(206, data[start:], f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self._send(200, data)

            def _send(self, code, body, content_range=None):
                self.send_response(code)
                if content_range:
                    self.send_header("Content-Range", content_range)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = outer.drop.pop(self.path.rsplit("/", 1)[-1], None)
                self.wfile.write(body if cut is None else body[:cut])
                if cut is not None:
                    self.close_connection = True

            def _endless(self):
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                block, sent = b"\0" * 65536, 0
                try:
                    while sent < outer.ENDLESS_CAP:
                        self.wfile.write(block)
                        sent += len(block)
                except OSError:
                    pass
                self.close_connection = True

            def _trickle(self, data):
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                stop = time.monotonic() + 3.0
                try:
                    for byte in data:
                        if time.monotonic() > stop:
                            break
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.05)
                except OSError:
                    pass
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mirror/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
