"""A local fake of the Hugging Face Hub's upload API (these machines cannot reach the Hub): enough of
it for huggingface_hub's create_repo + upload_folder. Every file is answered "regular" at preupload, so
contents arrive inline (base64) in the commit's NDJSON; the fake keeps them and every request's headers."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml


class FakeHub:
    def __init__(self, refuse: int | None = None):
        self.refuse = refuse                       # answer every request with this HTTP status
        self.requests: list[dict] = []             # method, path, headers (lower-cased), body
        self.repos: dict[str, dict] = {}           # repo id -> {"private": bool}
        self.files: dict[str, dict[str, bytes]] = {}   # repo id -> path -> content
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def _handle(self, method: str):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                hub.requests.append({"method": method, "path": self.path, "body": body,
                                     "headers": {k.lower(): v for k, v in self.headers.items()}})
                if hub.refuse:
                    return self._reply(hub.refuse, {"error": "refused by the fake hub"})
                parts = self.path.split("?")[0].strip("/").split("/")
                if self.path.startswith("/api/repos/create"):
                    info = json.loads(body)
                    repo = (f"{info.get('organization') or 'user'}/{info['name']}" if "/" not in info["name"]
                            else info["name"])
                    hub.repos[repo] = {"private": info.get("private")}
                    return self._reply(200, {"url": f"{hub.endpoint}/datasets/{repo}", "name": repo})
                if self.path.startswith("/api/validate-yaml"):  # the card's front matter must parse
                    content = json.loads(body)["content"]
                    try:
                        yaml.safe_load(content.split("---\n")[1])
                    except (IndexError, yaml.YAMLError) as exc:
                        return self._reply(400, {"error": f"bad card YAML: {exc}"})
                    return self._reply(200, {"errors": [], "warnings": []})
                if parts[:2] == ["api", "datasets"] and len(parts) >= 6 and parts[4] == "preupload":
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                        "shouldIgnore": False, "oid": None} for f in files],
                                             "commitOid": "0" * 40})
                if parts[:2] == ["api", "datasets"] and len(parts) >= 6 and parts[4] == "commit":
                    repo = f"{parts[2]}/{parts[3]}"
                    for line in body.decode().splitlines():
                        op = json.loads(line)
                        if op["key"] == "file":
                            content = base64.b64decode(op["value"]["content"])
                            hub.files.setdefault(repo, {})[op["value"]["path"]] = content
                    return self._reply(200, {"commitUrl": f"{hub.endpoint}/datasets/{repo}/commit/{'1' * 40}",
                                             "commitOid": "1" * 40, "success": True})
                return self._reply(404, {"error": f"the fake hub has no {method} {self.path}"})

            def _reply(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
