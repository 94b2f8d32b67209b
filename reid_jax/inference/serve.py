"""`reid-jax serve`: the search page and its JSON API over one index (standard library only).

    reid-jax serve --index INDEX [--host 127.0.0.1] [--port 8000] [--bundle BUNDLE]

The index and its bundle are loaded once (`search.Searcher`) and shared by the request
threads. Routes:

    GET  /              the page (`search_page.render_page`)
    GET  /search.js     its script
    GET  /api/info      the index, bundle and query kinds as JSON (`search_api.info`)
    POST /api/search    a query as JSON -> the top k as JSON (`search_api`, which documents both)
    GET  /image/<row>   the gallery image of index row <row>, 0 <= row < N

Nothing else of the file system is reachable: /image/ takes a row number, never a path.
Errors come back as JSON {"error": message}: 400 for a bad query, 404, 413 for a body over
MAX_BODY_BYTES, 415 for a POST that is not JSON, 500 for a bug (logged with its traceback).
Bound to 127.0.0.1 by default; on a loopback address, requests must name that address (or
localhost) in their Host header, so a web page elsewhere cannot reach the server through a
re-bound DNS name.
"""

from __future__ import annotations

import json
import re
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from absl import logging

from reid_jax.inference import search_api, search_page
from reid_jax.inference.search import Searcher

MAX_BODY_BYTES = 16 << 20  # a photo as base64, with room to spare
IMAGE_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".bmp": "image/bmp",
}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_IMAGE_ROUTE = re.compile(r"/image/([0-9]{1,12})")


class SearchServer(ThreadingHTTPServer):
    """An HTTP server answering the routes of the module docstring for one `Searcher`.

    Attributes:
      searcher: the loaded index and bundle.
      page: the rendered page, UTF-8.
      url: http://host:port/ it listens on (the real port when asked for port 0).
    """

    daemon_threads = True  # a slow client never keeps Ctrl-C from stopping the server

    def __init__(self, searcher: Searcher, host: str = "127.0.0.1", port: int = 8000):
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.searcher = searcher
        self.page = search_page.render_page(search_api.info(searcher)).encode()
        super().__init__((host, port), SearchHandler)
        self.port = self.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"
        self.allowed_hosts = (
            {f"{name}:{self.port}" for name in ("127.0.0.1", "localhost", "[::1]")}
            if host in LOOPBACK
            else None
        )


class SearchHandler(BaseHTTPRequestHandler):
    """One request to a `SearchServer`."""

    server: SearchServer
    server_version = "reid-jax"

    def log_message(self, format: str, *args: Any) -> None:
        """One line per request in the absl log (http.server writes to stderr)."""
        logging.info("serve: %s " + format, self.address_string(), *args)

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self._send(status, body, "application/json; charset=utf-8", Cache_Control="no-store")

    def _error(self, status: int, message: str) -> None:
        self._send_json(status, {"error": message})

    def _host_allowed(self) -> bool:
        allowed = self.server.allowed_hosts
        if allowed is None or self.headers.get("Host", "").lower() in allowed:
            return True
        self._error(HTTPStatus.FORBIDDEN, f"Host {self.headers.get('Host')!r} is not served here")
        return False

    def do_GET(self) -> None:
        """The page, its script, /api/info and /image/<row>; JSON 404 for anything else."""
        if not self._host_allowed():
            return
        path = urlsplit(self.path).path
        if path == "/":
            csp = search_page.CONTENT_SECURITY_POLICY
            self._send(
                HTTPStatus.OK,
                self.server.page,
                "text/html; charset=utf-8",
                Content_Security_Policy=csp,
            )
        elif path == search_page.SCRIPT_PATH:
            self._send(HTTPStatus.OK, search_page.script(), "text/javascript; charset=utf-8")
        elif path == "/api/info":
            self._send_json(HTTPStatus.OK, search_api.info(self.server.searcher))
        elif match := _IMAGE_ROUTE.fullmatch(path):
            self._send_image(int(match.group(1)))
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    def _send_image(self, row: int) -> None:
        paths = self.server.searcher.index.paths
        if row >= len(paths):
            self._error(HTTPStatus.NOT_FOUND, f"no row {row}: the index has {len(paths)} images")
            return
        file = Path(paths[row])
        try:
            data = file.read_bytes()
        except OSError as error:
            self._error(HTTPStatus.NOT_FOUND, f"row {row}: {file}: {error.strerror}")
            return
        content_type = IMAGE_TYPES.get(file.suffix.lower(), "application/octet-stream")
        self._send(HTTPStatus.OK, data, content_type, Cache_Control="max-age=3600")

    def do_POST(self) -> None:
        """POST /api/search: a JSON query -> the top k as JSON, or {"error": ...}."""
        if not self._host_allowed():
            return
        if urlsplit(self.path).path != "/api/search":
            self._error(HTTPStatus.NOT_FOUND, f"no such API: POST {self.path}")
            return
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the query as application/json")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
            return
        if length < 0:
            self._error(HTTPStatus.BAD_REQUEST, f"a negative Content-Length ({length})")
            return
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body must not be taken for a request
            self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY_BYTES} bytes"
            )
            return
        body = self.rfile.read(length)
        try:
            answer = search_api.answer_search(self.server.searcher, body)
        except ValueError as error:  # a bad query: the message names the field or term
            self._error(HTTPStatus.BAD_REQUEST, str(error))
        except Exception as error:
            logging.exception("serve: search failed")
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {error}")
        else:
            self._send_json(HTTPStatus.OK, answer)


def serve_until_interrupted(server: SearchServer) -> None:
    """Serves until Ctrl-C (KeyboardInterrupt), then closes the socket."""
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
