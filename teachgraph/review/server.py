"""The review page's local web server: the standard library's ThreadingHTTPServer (one user on one
machine needs no framework; a poll and a verdict can overlap, hence threads). Everything it serves
ships in this package (static/): no script, style or font comes from the network.

Pages: `/` (the run and its graphs), `/samples` (items, filters, lineage). JSON: `/api/run`,
`/api/graph/SKILL.svg`, `/api/nodes/SKILL/NODE`, `/api/samples`, `/api/samples/ID`, and
`POST /api/samples/ID/verdict`. It listens on the loopback by default and answers only requests whose
Host is the address it serves (a web page elsewhere cannot reach it through DNS rebinding); a verdict
must be sent as application/json, which a cross-site form cannot do without a preflight it never gets."""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from teachgraph import skills
from teachgraph.checkpoints.registry import Registry
from teachgraph.errors import UsageError
from teachgraph.review import data, diagram
from teachgraph.runner import Home

MAX_BODY = 64 * 1024
STATIC = resources.files("teachgraph.review") / "static"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
PAGES = {"/": "index.html", "/samples": "samples.html"}


class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, run_id: str, home: Home, host: str, port: int):
        self.run_id, self.home = run_id, home
        self._local = threading.local()
        self._svg: dict[str, tuple[str, bytes]] = {}      # skill -> (figures it was drawn with, svg)
        self._svg_lock = threading.Lock()
        super().__init__((host, port), Handler)
        self.host, self.port = host, self.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"
        self.hosts = {f"{shown}:{self.port}", f"localhost:{self.port}", f"127.0.0.1:{self.port}",
                      f"[::1]:{self.port}"}

    @property
    def registry(self) -> Registry:
        """One connection per server thread (sqlite connections stay on the thread that made them)."""
        if getattr(self._local, "registry", None) is None:
            self._local.registry = self.home.registry()
        return self._local.registry

    def graph_svg(self, skill: str) -> bytes:
        """Redrawn only when the run's figures changed since the last drawing (the page polls)."""
        figures = json.dumps([self.registry.node_figures(self.run_id), self.registry.edge_figures(self.run_id)])
        with self._svg_lock:
            cached = self._svg.get(skill)
            if cached and cached[0] == figures:
                return cached[1]
        svg = data.graph_svg(self.registry, self.run_id, skill)
        with self._svg_lock:
            self._svg[skill] = (figures, svg)
        return svg


class Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    server_version = "teachgraph-review"

    def log_message(self, format: str, *args: Any) -> None:   # quiet: the terminal shows the URL only
        pass

    # ---- answers ----
    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; style-src 'self'; img-src 'self' data:")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: Any, status: int = 200) -> None:
        self._send(status, json.dumps(value, ensure_ascii=False).encode(), "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def _allowed(self) -> bool:
        if self.server.host in ("0.0.0.0", "::") or self.headers.get("Host") in self.server.hosts:
            return True
        self._error(HTTPStatus.FORBIDDEN, f"Host {self.headers.get('Host')!r} is not this server's address")
        return False

    # ---- routes ----
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if not self._allowed():
            return
        url = urlsplit(self.path)
        path, query = url.path, {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            self._get(path, query)
        except Exception as exc:  # one line to the page; the server keeps serving
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")

    do_HEAD = do_GET

    def _get(self, path: str, query: dict[str, str]) -> None:
        server, run_id = self.server, self.server.run_id
        if path in PAGES:
            return self._static(PAGES[path])
        if path == "/favicon.ico":   # browsers ask for one; the page has none
            return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        if path.startswith("/static/"):
            return self._static(path[len("/static/"):])
        if path == "/api/run":
            return self._json(data.overview(server.registry, server.home, run_id))
        if path.startswith("/api/graph/") and path.endswith(".svg"):
            skill = unquote(path[len("/api/graph/"):-len(".svg")])
            if skill not in data.run_skills(server.registry, run_id):
                return self._error(HTTPStatus.NOT_FOUND, f"run {run_id} has no skill {skill!r}")
            return self._send(200, server.graph_svg(skill), TYPES[".svg"])
        if path.startswith("/api/nodes/"):
            skill, _, node = unquote(path[len("/api/nodes/"):]).partition("/")
            if skill not in data.run_skills(server.registry, run_id):
                return self._error(HTTPStatus.NOT_FOUND, f"run {run_id} has no skill {skill!r}")
            loaded = skills.load(skill)
            if node not in loaded.build_graph().nodes:
                return self._error(HTTPStatus.NOT_FOUND, f"skill {skill} has no node {node!r}")
            return self._json(diagram.node_info(loaded, node))
        if path == "/api/samples":
            keys = ("skill", "task_type", "status", "verdict", "q")
            return self._json(data.items(server.registry, run_id, **{k: query.get(k, "") for k in keys}))
        if path.startswith("/api/samples/"):
            item = data.lineage(server.registry, run_id, unquote(path[len("/api/samples/"):]))
            if item is None:
                return self._error(HTTPStatus.NOT_FOUND, f"run {run_id} has no sample {unquote(path[13:])!r}")
            return self._json(item)
        return self._error(HTTPStatus.NOT_FOUND, f"nothing at {path}")

    def _static(self, name: str) -> None:
        file = STATIC / name
        if "/" in name or name.startswith(".") or not file.is_file():
            return self._error(HTTPStatus.NOT_FOUND, f"no file {name!r}")
        self._send(200, file.read_bytes(), TYPES.get(Path(name).suffix, "application/octet-stream"))

    def do_POST(self) -> None:  # noqa: N802
        if not self._allowed():
            return
        path = urlsplit(self.path).path
        if not (path.startswith("/api/samples/") and path.endswith("/verdict")):
            return self._error(HTTPStatus.NOT_FOUND, f"nothing to POST at {path}")
        sample_id = unquote(path[len("/api/samples/"):-len("/verdict")])
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the verdict as application/json")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return self._error(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        if length > MAX_BODY:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            return self._error(HTTPStatus.BAD_REQUEST, f"the body is not JSON ({exc})")
        try:
            self._json(data.set_verdict(self.server.registry, self.server.run_id, sample_id, body))
        except data.BadVerdict as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except KeyError:
            self._error(HTTPStatus.NOT_FOUND, f"run {self.server.run_id} has no sample {sample_id!r}")


def open_server(run_id: str, *, host: str = "127.0.0.1", port: int = 0, home: Home | None = None) -> ReviewServer:
    """A review server for `run_id`, bound and ready (`serve_forever()` it; port 0: a free one).
    Raises UsageError for an unknown run or an address it cannot listen on."""
    home = home or Home.from_env()
    registry = home.registry()
    if registry.run(run_id) is None:
        raise UsageError(f"no run {run_id!r} (see: python cli.py runs list)")
    try:
        import pygraphviz  # noqa: F401  (the graphs are drawn with Graphviz)
    except ImportError:
        raise UsageError("review needs Graphviz: apt-get install graphviz libgraphviz-dev && "
                         "pip install 'teachgraph[review]'") from None
    try:
        return ReviewServer(run_id, home, host, port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
