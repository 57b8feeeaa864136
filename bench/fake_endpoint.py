"""A minimal, fast OpenAI-compatible chat endpoint for the throughput benchmark.

Raw asyncio HTTP/1.1 with keep-alive, no framework: it must never be the bottleneck (the bench
measures its ceiling with a raw client and prints it). Replies are valid instances of the request's
JSON schema, computed once per distinct schema and then served from memory, so a request costs one
JSON parse and one write. Generated strings carry the request's number ("fake text r17 1"), so no two
replies are alike and no request repeats by accident.
Run as a script; it prints `listening on http://127.0.0.1:PORT/v1`.

GET /stats returns {"requests", "first", "last", "bytes", "completion_tokens"} since the last
POST /stats: the bench reads calls/s as the endpoint saw them (first to last request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from teachgraph.testing.fake_openai import instance_from_schema  # noqa: E402  (the one schema-instance generator)

COMPLETION_TOKENS = 20
PROMPT_TOKENS = 400


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.first = 0.0
        self.last = 0.0
        self.bytes = 0

    def hit(self, size: int) -> None:
        now = time.monotonic()
        if not self.requests:
            self.first = now
        self.last = now
        self.requests += 1
        self.bytes += size

    def to_json(self) -> bytes:
        return orjson.dumps({"requests": self.requests, "first": self.first, "last": self.last,
                             "bytes": self.bytes, "completion_tokens": self.requests * COMPLETION_TOKENS})


STATS = Stats()
_REPLIES: dict[bytes, bytes] = {}   # response_format (as sent) -> ready JSON body


def _content_for(body: dict) -> str:
    fmt = body.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else fmt.get("schema")
    if isinstance(schema, dict):
        return json.dumps(instance_from_schema(schema))
    return "fake reply"


def completion(raw: bytes) -> bytes:
    body = orjson.loads(raw)
    key = orjson.dumps(body.get("response_format"), option=orjson.OPT_SORT_KEYS) + body.get("model", "").encode()
    reply = _REPLIES.get(key)
    if reply is None:
        reply = orjson.dumps({
            "id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": _content_for(body)}}],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                      "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}})
        _REPLIES[key] = reply
    return reply.replace(b"fake text", b"fake text r%d" % STATS.requests)


def _response(status: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: keep-alive\r\n\r\n").encode() + body


MODELS = _response("200 OK", orjson.dumps({"object": "list", "data": [{"id": "fake-model", "object": "model"}]}))


class Connection(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4:end + 4 + length])
            del self.buffer[:end + 4 + length]
            self.transport.write(self.handle(head.split(" ", 2), body))

    def handle(self, request_line: list[str], body: bytes) -> bytes:
        method, path = request_line[0], request_line[1].split("?")[0]
        if method == "POST" and path.endswith("/chat/completions"):
            STATS.hit(len(body))
            try:
                return _response("200 OK", completion(body))
            except Exception as exc:  # a bench bug must show, not hang the client
                return _response("500 Internal Server Error", orjson.dumps({"error": {"message": repr(exc)}}))
        if method == "GET" and path.endswith("/models"):
            return MODELS
        if path == "/stats":
            if method == "POST":
                STATS.reset()
            return _response("200 OK", STATS.to_json())
        return _response("404 Not Found", b'{"error": {"message": "not found"}}')


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Connection, "127.0.0.1", port, backlog=1024)
    print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args().port))
