"""A local fake OpenAI-compatible chat-completions server for tests and benchmarks.

Stdlib only.  Use it as a context manager::

    from teachgraph.testing.fake_openai import FakeOpenAI

    with FakeOpenAI(delay=0.01, faults={"429": 0.1}) as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="x")
        ...
        assert fake.request_count == 3

or run it as a script (prints ``listening on http://127.0.0.1:PORT/v1`` first)::

    python -m teachgraph.testing.fake_openai --port 0 --delay 0.05 --faults 429=0.1,500=0.05

Faults (each at its own rate, drawn from one seeded RNG): ``timeout`` (stall ``timeout_sleep``
seconds), ``429`` (with ``Retry-After: retry_after``), ``429-bare`` (no Retry-After), ``500``,
``503``, ``reset`` (the connection is dropped with no reply), ``garbled`` (200 with a body that
is not JSON), ``malformed`` (a completion whose content is cut, invalid JSON), ``truncated``
(cut content with ``finish_reason="length"``), and broken envelopes, 200s that are no usable
completion: ``choices-empty`` (``choices: []``), ``choices-null``, ``no-message`` (a choice without
``message``) and ``error-200`` (``{"error": ...}`` with status 200).

Endpoints: ``GET /v1/models`` and ``POST /v1/chat/completions`` (non-streaming,
plus a simple SSE stream when ``"stream": true``).  Structured-output requests
(``response_format`` with a JSON schema) get a minimal valid instance of the
schema; a ``tool_choice`` that forces a function gets a tool call whose
arguments are generated from the function's parameter schema.
"""

from __future__ import annotations

import argparse
import collections
import copy
import itertools
import json
import math
import random
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

__all__ = ["FakeOpenAI", "instance_from_schema", "parse_faults", "FAULT_KINDS"]

# New kinds go at the end: the order maps the seeded RNG's draws to faults.
FAULT_KINDS = ("timeout", "429", "500", "malformed", "truncated", "429-bare", "503", "reset", "garbled",
               "choices-empty", "choices-null", "no-message", "error-200")
# 200 replies whose JSON is not a usable completion, as some servers and proxies send
BROKEN_ENVELOPES = {
    "choices-empty": {"id": "chatcmpl-broken", "object": "chat.completion", "choices": []},
    "choices-null": {"id": "chatcmpl-broken", "object": "chat.completion", "choices": None},
    "no-message": {"id": "chatcmpl-broken", "object": "chat.completion",
                   "choices": [{"index": 0, "finish_reason": "stop"}]},
    "error-200": {"error": {"message": "upstream model crashed", "type": "server_error"}},
}
MODEL_ID = "fake-model"
_MAX_DEPTH = 8  # beyond this nesting depth, generate only what is required


# --------------------------------------------------------------------------
# JSON-schema -> minimal valid instance
# --------------------------------------------------------------------------

def _resolve_ref(ref: str, root: dict) -> dict:
    if not ref.startswith("#"):
        raise ValueError(f"only local $ref is supported, got {ref!r}")
    node: Any = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _merge_all_of(schema: dict, root: dict) -> dict:
    merged: dict = {k: v for k, v in schema.items() if k != "allOf"}
    for sub in schema["allOf"]:
        if isinstance(sub, dict) and "$ref" in sub:
            sub = {**_resolve_ref(sub["$ref"], root), **{k: v for k, v in sub.items() if k != "$ref"}}
        if not isinstance(sub, dict):
            continue
        if "allOf" in sub:
            sub = _merge_all_of(sub, root)
        for key, value in sub.items():
            if key == "properties":
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required":
                merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
            else:
                merged.setdefault(key, value)
    return merged


def _number(schema: dict, integer: bool) -> int | float:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    lo_ex, hi_ex = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    # draft-4 boolean form
    lo_strict = hi_strict = False
    if lo_ex is True:
        lo_strict = True
    elif isinstance(lo_ex, (int, float)) and not isinstance(lo_ex, bool):
        if lo is None or lo_ex >= lo:
            lo, lo_strict = lo_ex, True
    if hi_ex is True:
        hi_strict = True
    elif isinstance(hi_ex, (int, float)) and not isinstance(hi_ex, bool):
        if hi is None or hi_ex <= hi:
            hi, hi_strict = hi_ex, True

    if integer:
        if lo is not None:
            lo = math.floor(lo) + 1 if lo_strict else math.ceil(lo)
        if hi is not None:
            hi = math.ceil(hi) - 1 if hi_strict else math.floor(hi)
        v = 1
        if lo is not None and v < lo:
            v = lo
        if hi is not None and v > hi:
            v = hi
        m = schema.get("multipleOf")
        if isinstance(m, int) and m > 0 and v % m:
            up = (v // m + 1) * m
            v = up if hi is None or up <= hi else (v // m) * m
        return int(v)

    v = 1.0
    if lo is not None and (v < lo or (lo_strict and v <= lo)):
        v = float(lo) if not lo_strict else (lo + 1.0 if hi is None else (lo + hi) / 2.0)
    if hi is not None and (v > hi or (hi_strict and v >= hi)):
        v = float(hi) if not hi_strict else (hi - 1.0 if lo is None else (lo + hi) / 2.0)
    return float(v)


_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "fake{n}@example.com",
    "uri": "https://example.com/fake/{n}",
    "url": "https://example.com/fake/{n}",
    "uuid": "00000000-0000-4000-8000-{n:012d}",
    "ipv4": "127.0.0.1",
    "duration": "P1D",
}


def _string(schema: dict, state: dict) -> str:
    state["n"] += 1
    n = state["n"]
    fmt = schema.get("format")
    text = _FORMATS[fmt].format(n=n) if fmt in _FORMATS else f"fake text {n}"
    min_len, max_len = schema.get("minLength"), schema.get("maxLength")
    if isinstance(min_len, int) and len(text) < min_len:
        text = text + "x" * (min_len - len(text))
    if isinstance(max_len, int) and len(text) > max_len:
        text = text[:max_len] if fmt not in _FORMATS else str(n)[:max_len]
    return text


def _infer_type(schema: dict) -> str | None:
    t = schema.get("type")
    if isinstance(t, list):
        non_null = [x for x in t if x != "null"]
        return non_null[0] if non_null else "null"
    if t:
        return t
    if "properties" in schema or "additionalProperties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema or "minItems" in schema:
        return "array"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
        return "number"
    if any(k in schema for k in ("minLength", "maxLength", "pattern", "format")):
        return "string"
    return None


def instance_from_schema(schema: Any, root: Any = None, *, _state: dict | None = None, _depth: int = 0) -> Any:
    """Return a small, deterministic instance that validates against ``schema``.

    Handles ``$ref`` (local, e.g. ``#/$defs/X``), ``allOf`` (merged),
    ``anyOf``/``oneOf`` (first non-null option), ``const``, ``enum`` (first value),
    objects (every listed property is filled), strings (``"fake text N"``,
    ``minLength``/``maxLength``, common ``format``s), integers/numbers (default 1
    clamped into ``minimum``/``maximum``/exclusive bounds), booleans (False),
    arrays (``minItems``, default one item, ``maxItems``, ``prefixItems``) and
    ``default`` as a fallback for untyped schemas.  ``pattern`` is not honoured.
    """
    if root is None:
        root = schema
    state = _state if _state is not None else {"n": 0}
    deep = _depth >= _MAX_DEPTH

    def recurse(sub: Any, depth: int = _depth) -> Any:
        return instance_from_schema(sub, root, _state=state, _depth=depth)

    if schema is True or schema is None or schema == {}:
        return recurse({"type": "string"})
    if not isinstance(schema, dict):
        raise ValueError(f"unsupported schema: {schema!r}")

    if "const" in schema:
        return copy.deepcopy(schema["const"])
    if "enum" in schema and schema["enum"]:
        values = schema["enum"]
        non_null = [v for v in values if v is not None]
        return copy.deepcopy(non_null[0] if non_null else values[0])
    if "$ref" in schema:
        target = _resolve_ref(schema["$ref"], root)
        siblings = {k: v for k, v in schema.items() if k not in ("$ref", "default")}
        return recurse({**target, **siblings})
    if "allOf" in schema:
        return recurse(_merge_all_of(schema, root))
    for key in ("anyOf", "oneOf"):
        if key in schema and schema[key]:
            options = schema[key]
            is_null = [isinstance(o, dict) and o.get("type") == "null" for o in options]
            if deep and any(is_null):
                return None
            chosen = next((o for o, n in zip(options, is_null) if not n), options[0])
            rest = {k: v for k, v in schema.items() if k not in (key, "default", "title", "description")}
            if isinstance(chosen, dict):
                return recurse({**rest, **chosen})
            return recurse(chosen)

    t = _infer_type(schema)
    if t is None:
        if schema.get("default") is not None:
            return copy.deepcopy(schema["default"])
        return recurse({"type": "string"})
    if t == "null":
        return None
    if t == "boolean":
        return False
    if t in ("integer", "number"):
        return _number(schema, integer=(t == "integer"))
    if t == "string":
        return _string(schema, state)
    if t == "object":
        props: dict = schema.get("properties") or {}
        required = schema.get("required") or []
        out: dict = {}
        for name, sub in props.items():
            if deep and name not in required:
                continue
            out[name] = recurse(sub, _depth + 1)
        for name in required:  # required but not described
            if name not in out:
                out[name] = recurse(schema.get("additionalProperties") or {}, _depth + 1)
        min_props = schema.get("minProperties") or 0
        extra = schema.get("additionalProperties")
        i = 0
        while len(out) < min_props:
            i += 1
            out[f"key{i}"] = recurse(extra if isinstance(extra, dict) else {}, _depth + 1)
        return out
    if t == "array":
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        if isinstance(items, list):  # draft-4/7 tuple form
            prefix, items = items, schema.get("additionalItems", {})
        min_items = schema.get("minItems") or 0
        max_items = schema.get("maxItems")
        want = max(min_items, len(prefix), 0 if deep else 1)
        if items is False:
            want = len(prefix)
        if isinstance(max_items, int):
            want = min(want, max_items)
        out_list: list = []
        for i in range(want):
            sub = prefix[i] if i < len(prefix) else items
            value = recurse(sub, _depth + 1)
            if schema.get("uniqueItems") and value in out_list and isinstance(sub, dict):
                target = _resolve_ref(sub["$ref"], root) if "$ref" in sub else sub
                enum = target.get("enum") or []
                if i < len(enum):
                    value = copy.deepcopy(enum[i])
            out_list.append(value)
        return out_list
    raise ValueError(f"unsupported schema type: {t!r}")


# --------------------------------------------------------------------------
# Request helpers
# --------------------------------------------------------------------------

def _schema_from_response_format(rf: Any) -> tuple[bool, dict | None]:
    """Return (wants_json, schema_or_None)."""
    if not isinstance(rf, dict):
        return False, None
    kind = rf.get("type")
    if kind == "json_schema":
        js = rf.get("json_schema") or {}
        schema = js.get("schema") if isinstance(js, dict) else None
        return True, schema if isinstance(schema, dict) else None
    if kind == "json_object":
        schema = rf.get("schema")
        return True, schema if isinstance(schema, dict) else None
    return False, None


def _message_text(messages: Any) -> str:
    parts: list[str] = []
    for m in messages or []:
        if not isinstance(m, dict):
            continue
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            for p in c:
                if isinstance(p, dict) and isinstance(p.get("text"), str):
                    parts.append(p["text"])
        for tc in m.get("tool_calls") or []:
            fn = (tc or {}).get("function") or {}
            parts.append(str(fn.get("arguments", "")))
    return "".join(parts)


def _forced_tool(body: dict) -> dict | None:
    """The function tool the request forces (tool_choice), if any."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type", "function") == "function"]
    choice = body.get("tool_choice")
    if not tools or choice in (None, "none", "auto"):
        return None
    if choice == "required":
        return tools[0].get("function")
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        for t in tools:
            if (t.get("function") or {}).get("name") == name:
                return t.get("function")
    return None


def parse_faults(spec: str | None) -> dict[str, float]:
    """Parse ``"429=0.1,500=0.05"`` into ``{"429": 0.1, "500": 0.05}``."""
    out: dict[str, float] = {}
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, _, rate = item.partition("=")
        out[key.strip()] = float(rate)
    return out


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------

Responder = Callable[[dict], "str | dict | None"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: "FakeOpenAI"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout) or a "reset" fault drops the connection: not news.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # avoid 40 ms Nagle/delayed-ACK stalls on keep-alive
    server_version = "FakeOpenAI/1.0"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep tests quiet
        pass

    # -- I/O helpers -------------------------------------------------------
    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: Any, headers: dict | None = None,
              content_type: str = "application/json") -> None:
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
        elif isinstance(body, bytes):
            data = body
        else:
            data = str(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(str(k), str(v))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # client gave up (e.g. timeout)
            self.close_connection = True

    def _error(self, status: int, message: str, type_: str, headers: dict | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": type_, "code": None}}, headers)

    @staticmethod
    def _path(raw: str) -> str:
        path = raw.split("?", 1)[0].rstrip("/")
        return path if path.startswith("/v1") else "/v1" + path

    # -- verbs -------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        if self._path(self.path) == "/v1/models":
            self._send(200, {"object": "list",
                             "data": [{"id": MODEL_ID, "object": "model", "owned_by": "test"}]})
        else:
            self._error(404, f"unknown path {self.path}", "not_found")

    def do_POST(self) -> None:  # noqa: N802
        raw = self._read_body()
        if self._path(self.path) != "/v1/chat/completions":
            self._error(404, f"unknown path {self.path}", "not_found")
            return
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError):
            self._error(400, "request body is not valid JSON", "invalid_request_error")
            return
        if not isinstance(body, dict):
            self._error(400, "request body must be a JSON object", "invalid_request_error")
            return
        self.server.fake._handle_chat(self, body)

    def do_DELETE(self) -> None:  # noqa: N802
        self._read_body()
        self._error(404, f"unknown path {self.path}", "not_found")

    do_PUT = do_PATCH = do_DELETE


class FakeOpenAI:
    """Fake OpenAI chat-completions server on 127.0.0.1 (see module docstring)."""

    timeout_sleep = 30.0  # seconds the "timeout" fault stalls before replying

    def __init__(self, responder: Responder | None = None, delay: float = 0.0,
                 faults: dict | None = None, seed: int = 0, *, host: str = "127.0.0.1", port: int = 0,
                 retry_after: str = "1", timeout_sleep: float | None = None):
        faults = {str(k): float(v) for k, v in (faults or {}).items()}
        unknown = set(faults) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; expected {FAULT_KINDS}")
        if any(not 0.0 <= r <= 1.0 for r in faults.values()) or sum(faults.values()) > 1.0 + 1e-9:
            raise ValueError(f"fault rates must be in [0,1] and sum to <= 1: {faults}")
        self.responder = responder
        self.delay = float(delay)
        self.retry_after = retry_after
        if timeout_sleep is not None:
            self.timeout_sleep = timeout_sleep
        self.faults = faults
        self.seed = seed
        self.host, self.port = host, port
        self.requests: list[dict] = []
        self.request_lines: list[tuple[str, dict[str, str]]] = []   # (path with query, headers), per request
        self.injected: collections.Counter = collections.Counter()
        self.base_url = ""
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._answers = itertools.count(1)
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> "FakeOpenAI":
        self._stop.clear()
        self._server = _Server((self.host, self.port), _Handler)
        self._server.fake = self
        self.port = self._server.server_address[1]
        self.base_url = f"http://{self.host}:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"FakeOpenAI:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes handlers sleeping in delay / timeout faults
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- bookkeeping -------------------------------------------------------
    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.request_lines.clear()

    def _pick_fault(self) -> str | None:
        if not self.faults:
            return None
        with self._lock:
            r = self._rng.random()
            acc = 0.0
            for kind in FAULT_KINDS:
                acc += self.faults.get(kind, 0.0)
                if r < acc:
                    self.injected[kind] += 1
                    return kind
        return None

    # -- content -----------------------------------------------------------
    def default_content(self, body: dict) -> str:
        wants_json, schema = _schema_from_response_format(body.get("response_format"))
        if schema is not None:
            return json.dumps(instance_from_schema(schema))
        if wants_json:
            return "{}"
        with self._lock:
            n = next(self._answers)
        return f"fake answer {n}"

    def _handle_chat(self, h: _Handler, body: dict) -> None:
        with self._lock:
            self.requests.append(body)
            self.request_lines.append((h.path, {k.lower(): v for k, v in h.headers.items()}))
        if self.delay > 0 and self._stop.wait(self.delay):
            return
        fault = self._pick_fault()
        if fault == "timeout":
            if self._stop.wait(self.timeout_sleep):
                return
        elif fault == "429":
            h._error(429, "rate limited", "rate_limit", {"Retry-After": self.retry_after})
            return
        elif fault == "429-bare":
            h._error(429, "rate limited", "rate_limit")
            return
        elif fault in ("500", "503"):
            h._error(int(fault), "internal server error" if fault == "500" else "overloaded", "server_error")
            return
        elif fault == "reset":
            # SO_LINGER 0: close() sends a TCP RST, as a crashed server or a proxy dropping the line does.
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
            h.close_connection = True
            return
        elif fault == "garbled":
            h._send(200, b"<html>502 Bad Gateway</html>")
            return
        elif fault in BROKEN_ENVELOPES:
            h._send(200, BROKEN_ENVELOPES[fault])
            return

        reply: Any = self.responder(body) if self.responder is not None else None
        status, headers, finish, tool_calls = 200, {}, "stop", None
        content: str | None = None
        if isinstance(reply, dict):
            status = int(reply.get("status", 200))
            headers = dict(reply.get("headers") or {})
            finish = reply.get("finish_reason", "stop")
            tool_calls = reply.get("tool_calls")
            if "body" in reply:  # raw reply, bypasses the completion envelope
                h._send(status, reply["body"], headers)
                return
            if status >= 400:
                h._error(status, str(reply.get("content") or f"error {status}"), "fake_error", headers)
                return
            content = reply.get("content")
        elif reply is not None:
            content = str(reply)

        if content is None and tool_calls is None:
            fn = _forced_tool(body)
            if fn is not None:
                args = instance_from_schema(fn.get("parameters") or {"type": "object"})
                with self._lock:
                    call_id = f"call_fake_{next(self._ids)}"
                tool_calls = [{"id": call_id, "type": "function",
                               "function": {"name": fn.get("name", "fn"), "arguments": json.dumps(args)}}]
                finish = "tool_calls" if finish == "stop" else finish
            else:
                content = self.default_content(body)

        if fault in ("malformed", "truncated") and content is not None:
            content = content[: len(content) // 2]
            if fault == "malformed" and content.strip():
                try:  # make sure it really is invalid JSON
                    json.loads(content)
                    content += '{"'
                except ValueError:
                    pass
            if fault == "truncated":
                finish = "length"

        self._send_completion(h, body, content, finish, tool_calls, status, headers)

    def _send_completion(self, h: _Handler, body: dict, content: str | None, finish: str,
                         tool_calls: list | None, status: int, headers: dict) -> None:
        with self._lock:
            cid = f"chatcmpl-fake-{next(self._ids)}"
        model = body.get("model") or MODEL_ID
        created = int(time.time())
        prompt_tokens = len(_message_text(body.get("messages"))) // 4
        completion_text = content if content is not None else json.dumps(tool_calls)
        completion_tokens = len(completion_text) // 4 + 1
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        message: dict = {"role": "assistant", "content": content}
        if tool_calls:
            message["tool_calls"] = tool_calls

        if body.get("stream"):
            base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
            delta: dict = {"role": "assistant", "content": content if content is not None else None}
            if tool_calls:
                delta["tool_calls"] = [{"index": i, **tc} for i, tc in enumerate(tool_calls)]
            chunks = [
                {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
                {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
            ]
            if (body.get("stream_options") or {}).get("include_usage"):
                chunks.append({**base, "choices": [], "usage": usage})
            sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            h._send(status, sse.encode(), headers, content_type="text/event-stream")
            return

        h._send(status, {
            "id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage,
        }, headers)


# --------------------------------------------------------------------------
# Script entry point
# --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fake OpenAI-compatible chat-completions server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--faults", default="", help="e.g. 429=0.1,500=0.05,timeout=0.01,malformed=0.02")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    fake = FakeOpenAI(delay=args.delay, faults=parse_faults(args.faults), seed=args.seed,
                      host=args.host, port=args.port)
    fake.start()
    print(f"listening on {fake.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
